"""Helpers for the built-in verifier tests: run a verifiers/<name>/verify.py on a batch directly."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
VERIFIERS = REPO / "verifiers"
NAMES = ["math-answer", "python-tests", "sql-result", "json-schema", "policy-rules"]
DEBIAN_PYTHON = "/usr/bin/python3"
RESULT_KEYS = {"id", "passed", "score", "detail", "nonce"}


def _has_module(python: str, module: str) -> bool:
    probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60)
    return probe.returncode == 0


@functools.cache
def pythons(name: str) -> tuple[str, ...]:
    """The interpreters to run ``name`` with: this venv's, plus Debian's python3 (the image's)."""
    found = [sys.executable]
    if os.path.exists(DEBIAN_PYTHON) and os.path.realpath(DEBIAN_PYTHON) != os.path.realpath(
        sys.executable
    ):
        found.append(DEBIAN_PYTHON)
    if name == "python-tests":
        # it starts as root (to hand each candidate a uid of its own) and drops to uid 65534,
        # so it needs an interpreter that uid can read: Debian's, the image's own
        found = [DEBIAN_PYTHON] if os.geteuid() == 0 and os.path.exists(DEBIAN_PYTHON) else []
    return tuple(found)


def python_ids(name: str) -> list[str]:
    return ["venv" if p == sys.executable else "debian" for p in pythons(name)]


@functools.cache
def prepare(name: str) -> None:
    """Copy the folder's shared modules and run its prepare step (once per session), as both
    sandboxes do before running it."""
    from rlsd.verify.images import run_prepare
    from rlsd.verify.spec import load_spec

    folder = VERIFIERS / name
    run_prepare(load_spec(folder), folder)


def spec(name: str) -> dict:
    return yaml.safe_load((VERIFIERS / name / "verifier.yaml").read_text())


def self_test_items(name: str) -> tuple[list[dict], list[bool]]:
    tests = spec(name)["self_tests"]
    items = [{"id": t["id"], **t["item"]} for t in tests]
    return items, [t["expect"] == "pass" for t in tests]


def run_raw(
    name: str,
    stdin: str | bytes,
    *,
    python: str | None = None,
    env: dict | None = None,
    timeout: float = 300,
    prefix: list[str] | None = None,
    program_dir: Path | None = None,
) -> subprocess.CompletedProcess:
    """Run verifier ``name``'s verify.py (from ``program_dir`` when given, e.g. a copy that
    another uid can read) on ``stdin``."""
    prepare(name)
    if python is None:
        if not pythons(name):
            import pytest

            pytest.skip(f"no interpreter here can run {name} (json-schema needs jsonschema)")
        python = pythons(name)[0]
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    full_env.update(env or {})
    return subprocess.run(
        [*(prefix or []), python, str((program_dir or VERIFIERS / name) / "verify.py")],
        input=stdin.encode() if isinstance(stdin, str) else stdin,
        capture_output=True,
        env=full_env,
        cwd="/tmp",
        timeout=timeout,
    )


def parse_results(stdout: bytes) -> list[dict]:
    """Every stdout line must be a start marker or one protocol result, and nothing else; the
    result of a well-formed item follows its own start marker."""
    results = []
    started = None
    for line in stdout.decode("ascii").splitlines():
        record = json.loads(line)
        if "start" in record:
            assert set(record) == {"start", "nonce"}, record
            started = record["start"]
            continue
        assert set(record) == RESULT_KEYS, record
        assert started in (None, record["id"]), (started, record)
        started = None
        assert isinstance(record["passed"], bool) and isinstance(record["detail"], str)
        assert 0.0 <= record["score"] <= 1.0
        results.append(record)
    return results


def run_batch(
    name: str,
    items: list[dict],
    *,
    python: str | None = None,
    env: dict | None = None,
    timeout: float = 300,
    nonce: str = "test-nonce",
) -> list[dict]:
    """Run one batch; assert a clean exit and exactly one result per item, in order."""
    stdin = "".join(json.dumps(item) + "\n" for item in items)
    done = run_raw(
        name, stdin, python=python, env={"RLSD_RESULT_NONCE": nonce, **(env or {})}, timeout=timeout
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    results = parse_results(done.stdout)
    assert [r["id"] for r in results] == [item["id"] for item in items]
    assert all(r["nonce"] == nonce for r in results)
    return results


def load_module(name: str):
    """Import ``verifiers/<name>/verify.py`` in this process (for table tests of its functions)."""
    prepare(name)
    # build/ may have been looked at (and found empty or missing) before prepare filled it: the
    # import system caches that, so forget it or the shared modules stay invisible
    importlib.invalidate_caches()
    module_name = "vb_verify_" + name.replace("-", "_")
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec_ = importlib.util.spec_from_file_location(module_name, VERIFIERS / name / "verify.py")
    module = importlib.util.module_from_spec(spec_)
    sys.modules[module_name] = module
    saved, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in verifiers/
    try:
        spec_.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = saved
    return module


def battery_verdicts_wrong(name: str, *, python: str | None = None) -> tuple[object, list]:
    """Run the kind's battery through verify.py in one batch (what the sandboxed red-team gate
    runs); return the battery and every entry whose verdict is not the expected one: a hack
    must fail, a control must meet its ``expect``."""
    from rlsd.verify.redteam import load_battery

    battery = load_battery(name)
    entries = [(h.id, h.item, False) for h in battery.hacks]
    entries += [(c.id, c.item, c.expect == "pass") for c in battery.controls]
    results = run_batch(name, [{**item, "id": ident} for ident, item, _ in entries], python=python)
    wrong = [
        (ident, r["passed"], r["detail"])
        for (ident, _, want), r in zip(entries, results, strict=True)
        if r["passed"] is not want
    ]
    return battery, wrong
