"""The built-in verifiers in the real sandboxes: inventory all ready (red team included), hostile
candidates through ``python-tests`` in every backend (HumanEval: ``test_python_tests.py``)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rlsd.verify.inventory import run_inventory
from rlsd.verify.spec import load_spec
from tests.conftest import REPO

BUILTIN = ["json-schema", "math-answer", "policy-rules", "python-tests", "sql-result"]
PYTHON_TESTS = REPO / "verifiers" / "python-tests"
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
REF = {"test": TEST, "entry_point": "add"}
GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a - b\n"


def test_builtin_inventory_is_all_ready(sandbox, tmp_path):
    inv = run_inventory(REPO / "verifiers", sandbox=sandbox, out=tmp_path / "inventory.json")
    status = {r.name: (r.status, r.reason) for r in inv.verifiers}
    assert sorted(status) == BUILTIN
    assert all(s == "ready" for s, _ in status.values()), status
    assert {r.backend for r in inv.verifiers} == {sandbox.backend}
    assert all(len(r.spec_sha256) == 64 for r in inv.verifiers)
    assert all(r.redteam is not None and r.redteam.held and r.redteam.size >= 10
               for r in inv.verifiers)  # fmt: skip


@pytest.fixture
def host_port():
    """A listener on the host's loopback: a sandboxed candidate must not reach it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def _item(ident: str, response: str) -> dict:
    return {"id": ident, "response": response, "reference": REF}


def test_hostile_candidates_through_python_tests(sandbox, host_port, monkeypatch, tmp_path):
    monkeypatch.setenv("TOP_SECRET", "hunter2")  # must never reach a candidate
    marker = tmp_path / "escaped"
    spec = load_spec(PYTHON_TESTS)
    spec = spec.model_copy(update={"limits": spec.limits.model_copy(update={"item_timeout_s": 3})})
    hostile = {
        "infinite-loop": "def add(a, b):\n    while True:\n        pass\n",
        "fork-bomb": "import os\ndef add(a, b):\n    while True:\n        os.fork()\n",
        "memory": "def add(a, b):\n    x = bytearray(8 * 1024**3)\n    return a + b\n",
        "network": f"import socket\ndef add(a, b):\n    socket.create_connection(('127.0.0.1', {host_port}), timeout=2)\n    return a + b\n",
        "write-outside-tmp": f"def add(a, b):\n    open({str(marker)!r}, 'w').write('x')\n    open('/etc/rlsd-pwned', 'w').write('x')\n    return a + b\n",
        "read-shadow": "def add(a, b):\n    open('/etc/shadow').read()\n    return a + b\n",
        "read-env": "import os\ndef add(a, b):\n    assert 'TOP_SECRET' not in os.environ and 'RLSD_RESULT_NONCE' not in os.environ\n    return a - b\n",
        "kill-parent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n" + GOOD,
        "spoofed-json": 'print(\'{"id": "good", "passed": false, "score": 0.0, "detail": "x"}\')\n'
        'print(\'{"id": "spoofed-json", "passed": true, "score": 1.0, "detail": "forged", "nonce": "guess"}\')\n'
        'print("{not json")\n' + WRONG,
    }
    items = [_item("good", GOOD)] + [_item(k, v) for k, v in hostile.items()]
    items += [_item("megabytes", "print('x' * 5_000_000)\n" + GOOD), _item("wrong", WRONG)]
    results = {r.id: r for r in sandbox.run_batch(spec, PYTHON_TESTS, items)}
    assert results["good"].passed and results["good"].accepted, results["good"]
    assert results["megabytes"].passed, "printing is not failing: the real verdict stands"
    assert not results["wrong"].passed and results["wrong"].detail.startswith("failed"), results[
        "wrong"
    ]
    for name in hostile:
        r = results[name]
        assert not r.passed and r.score == 0.0, (name, r)
        assert r.detail, name
        assert r.backend == sandbox.backend
    assert results["infinite-loop"].detail.startswith("timeout")
    assert "forged" not in results["spoofed-json"].detail
    assert not marker.exists() and not Path("/etc/rlsd-pwned").exists(), "the host is untouched"


def test_sleep_past_the_batch_timeout_spares_the_other_items(sandbox):
    spec = load_spec(PYTHON_TESTS)
    limits = spec.limits.model_copy(update={"item_timeout_s": 60, "batch_timeout_s": 6})
    spec = spec.model_copy(update={"limits": limits})
    items = [
        _item("good", GOOD),
        _item("sleeper", "import time\ntime.sleep(120)\n" + GOOD),
        _item("wrong", WRONG),
    ]
    results = {r.id: r for r in sandbox.run_batch(spec, PYTHON_TESTS, items)}
    assert results["good"].passed
    assert not results["sleeper"].passed and "timeout" in results["sleeper"].detail
    assert not results["wrong"].passed and results["wrong"].accepted, results["wrong"]
