"""The package's import graph: no module imports itself round a circle, and the lower layers
never reach up (``algo`` imports nothing else of rlsd; ``models`` and ``rollout`` never import
``train`` or the stages above it). Function-local imports count as much as top-level ones."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package -> packages it must never import
FORBIDDEN = {
    "algo": {"*"},
    "models": {"rollout", "train", "context", "gate", "tracking", "pipeline", "verify"},
    "rollout": {"train", "context", "gate", "tracking", "pipeline", "verify"},
    "tasks": {"train", "context", "gate", "tracking", "pipeline", "verify", "demo"},
    "verify": {"train", "context", "gate", "tracking", "pipeline"},
    "context": {"train", "gate", "tracking", "pipeline"},
    "train": {"gate", "tracking", "pipeline"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in (ROOT / "rlsd").rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            graph[mod] |= {t for t in targets if t in mods and t != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and module in _PACKAGES) else ""


_PACKAGES = {m for m, p in _modules().items() if p.name == "__init__.py"}


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_upward_imports() -> None:
    upward = []
    for mod, targets in _graph().items():
        banned = FORBIDDEN.get(_package(mod), set())
        for t in targets:
            pkg = _package(t)
            if pkg and pkg != _package(mod) and ("*" in banned or pkg in banned):
                upward.append(f"{mod} -> {t}")
    assert upward == []
