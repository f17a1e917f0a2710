"""The README's Layout section is the product's map: every module it names exists, and every
module of ``rlsd/`` and ``flows/`` is named there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _layout_block() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1].splitlines()


def _named_paths() -> tuple[set[str], set[str]]:
    """Paths the Layout block names, and the subfolders it names as one entry. A folder line
    (``rlsd/algo/``) opens a folder; indented lines name files in it (``a.py`` or
    ``a.yaml, b.yaml``) or a subfolder (``guest/``)."""
    named: set[str] = set()
    subfolders: set[str] = set()
    folder = ""
    for line in _layout_block():
        if not line.strip():
            continue
        entry = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        if not line.startswith(" "):
            folder = entry
            named.add(entry.rstrip("/"))
            continue
        for name in (n.strip() for n in entry.split(",")):
            named.add(f"{folder}{name}".rstrip("/"))
            if name.endswith("/"):
                subfolders.add(f"{folder}{name}")
    return named, subfolders


def test_every_named_module_exists() -> None:
    named, _ = _named_paths()
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README Layout names what does not exist: {missing}"


def test_every_module_is_named() -> None:
    named, subfolders = _named_paths()
    modules = [
        p.relative_to(ROOT).as_posix()
        for p in [*(ROOT / "rlsd").rglob("*.py"), *(ROOT / "flows").glob("*.py")]
        if p.name not in {"__init__.py", "__main__.py"}
    ]
    unnamed = sorted(
        m for m in modules if m not in named and not any(m.startswith(f) for f in subfolders)
    )
    assert not unnamed, f"README Layout misses these modules: {unnamed}"
