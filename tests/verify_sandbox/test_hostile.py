"""Hostile candidate responses, run as code by a python-tests-like verifier, in every backend.

Each batch is [a response that passes, the hostile response, a response that fails]: the hostile
item must end with a per-item verdict (failed / timeout / error with a reason) while the other two
get their real results, and the host is untouched.
"""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import pytest

from rlsd.verify.spec import load_spec

BEFORE = {"id": "before", "response": "assert 2 + 2 == 4"}
AFTER = {"id": "after", "response": "assert 2 + 2 == 5, 'real verdict'"}


def run_hostile(sandbox, verifier_root: Path, response: str, **extra):
    folder = verifier_root / "run-code"
    spec = load_spec(folder)
    items = [BEFORE, {"id": "hostile", "response": textwrap.dedent(response), **extra}, AFTER]
    before, hostile, after = sandbox.run_batch(spec, folder, items)
    assert before.passed and before.score == 1.0, before
    assert not after.passed and after.score == 0.0, after
    assert before.accepted and after.accepted  # the verifier's own verdicts, not errors
    assert "real verdict" in after.detail, after
    assert {before.backend, hostile.backend, after.backend} == {sandbox.backend}
    assert not hostile.passed and hostile.score == 0.0, hostile
    return hostile


def test_infinite_loop(sandbox, verifier_root):
    r = run_hostile(sandbox, verifier_root, "while True:\n    pass\n")
    assert "timeout after 2 s" in r.detail


def test_fork_bomb(sandbox, verifier_root):
    r = run_hostile(sandbox, verifier_root, "import os\nwhile True:\n    os.fork()\n")
    # the pids limit makes fork fail (BlockingIOError), or the item timeout kills the group
    assert "BlockingIOError" in r.detail or "timeout" in r.detail or "exit" in r.detail, r


def test_memory_far_past_the_limit(sandbox, verifier_root):
    r = run_hostile(sandbox, verifier_root, "x = bytearray(2 * 1024 ** 3)\nprint(len(x))\n")
    # local: RLIMIT_AS -> MemoryError; docker: the cgroup OOM killer -> SIGKILL
    assert "MemoryError" in r.detail or "exit -9" in r.detail, r


@pytest.fixture
def host_listener():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    yield srv.getsockname()[1]
    srv.close()


def test_network_connection(sandbox, verifier_root, host_listener):
    code = f"""
    import socket
    names = [n for _, n in socket.if_nameindex()]
    if names != ["lo"]:
        raise SystemExit(f"interfaces: {{names}}")
    socket.create_connection(("127.0.0.1", {host_listener}), timeout=2)
    print("connected to the host")
    """
    r = run_hostile(sandbox, verifier_root, code)
    assert "interfaces:" not in r.detail, r
    assert "ConnectionRefusedError" in r.detail, r  # a loopback of its own, nothing else


def test_writes_outside_the_tmpfs(sandbox, verifier_root, tmp_path):
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    host_dir.chmod(0o777)
    targets = [
        "/etc/rlsd-pwned",
        "/verifier/pwned",
        "/usr/pwned",
        "/pwned",
        "/var/tmp/pwned",
        str(host_dir / "pwned"),
        str(verifier_root / "pwned"),
    ]
    code = f"""
    open("/tmp/scratch", "w").write("the tmpfs is writable")
    wrote = []
    for path in {targets!r}:
        try:
            with open(path, "w") as fh:
                fh.write("pwned")
            wrote.append(path)
        except OSError:
            pass
    if wrote:
        print("wrote", wrote)
    else:
        raise SystemExit("wrote nothing outside /tmp")
    """
    r = run_hostile(sandbox, verifier_root, code)
    assert "wrote nothing outside /tmp" in r.detail, r
    for t in targets:
        assert not Path(t).exists(), t


def test_reads_host_secrets(sandbox, verifier_root, monkeypatch):
    monkeypatch.setenv("RLSD_TEST_SECRET", "hunter2-host-secret")
    code = """
    import glob, os
    found = []
    try:
        found.append(open("/etc/shadow").read()[:20])
    except OSError:
        pass
    for key in ("RLSD_TEST_SECRET", "RLSD_RESULT_NONCE"):
        if key in os.environ:
            found.append(key)
    for path in glob.glob("/proc/*/environ"):
        try:
            data = open(path, "rb").read()
        except OSError:
            continue
        if b"hunter2" in data or b"RLSD_RESULT_NONCE" in data:
            found.append(path)
    if found:
        print("found", found)
    else:
        raise SystemExit("no secrets reachable")
    """
    r = run_hostile(sandbox, verifier_root, code)
    assert "no secrets reachable" in r.detail, r


def test_prints_megabytes_to_stdout(sandbox, verifier_root):
    r = run_hostile(sandbox, verifier_root, "import sys\nsys.stdout.write('x' * (8 << 20))\n")
    assert "output exceeded" in r.detail, r


def test_kills_its_own_parent(sandbox, verifier_root):
    r = run_hostile(sandbox, verifier_root, "import os, signal\nos.kill(os.getppid(), 9)\n")
    assert "error: no result" in r.detail, r


def test_emits_malformed_and_spoofed_results(sandbox, verifier_root):
    code = """
    import json
    print('{"id": "after", "passed": tru')
    print(json.dumps({"id": "after", "passed": "yes", "score": 7, "nonce": "0" * 32}))
    for i in ("before", "hostile", "after"):
        print(json.dumps({"id": i, "passed": True, "score": 1.0, "detail": "spoofed",
                          "nonce": "0" * 32}))
    raise SystemExit(1)
    """
    r = run_hostile(sandbox, verifier_root, code)
    assert "spoofed" not in r.detail and "exit 1" in r.detail, r


def test_steals_the_nonce_through_proc(sandbox, verifier_root):
    """Same uid as the verifier: /proc/<ppid>/environ and fd/1 are closed by PR_SET_DUMPABLE."""
    code = """
    import json, os
    ppid = os.getppid()
    try:
        env = open(f"/proc/{ppid}/environ", "rb").read().split(b"\\0")
        nonce = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RLSD_RESULT_NONCE=")][0]
        with open(f"/proc/{ppid}/fd/1", "w") as out:
            for i in ("hostile", "after"):
                out.write(json.dumps({"id": i, "passed": True, "score": 1.0,
                                      "detail": "spoofed", "nonce": nonce.decode()}) + "\\n")
    except (OSError, IndexError) as exc:
        raise SystemExit(f"could not spoof: {type(exc).__name__}")
    raise SystemExit(1)
    """
    r = run_hostile(sandbox, verifier_root, code)
    assert "could not spoof" in r.detail, r


def test_sleeps_past_the_batch_timeout(sandbox, verifier_root):
    r = run_hostile(sandbox, verifier_root, "import time\ntime.sleep(60)\n", timeout=60)
    assert r.detail.startswith("timeout: batch exceeded 8 s"), r


def test_a_neighbours_processes_do_not_count_against_a_local_batch(verifier_root):
    """RLIMIT_NPROC counts per uid across the host. Host processes of uid 65534 (Docker
    containers, other jails) past the batch's pids limit must not stop an honest local batch
    from starting: root-started jails run under a uid drawn for the batch, and a fork bomb in
    the batch is still held by its own limit."""
    import os
    import subprocess

    from tests.verify_sandbox.conftest import local_sandbox

    if os.geteuid() != 0:
        pytest.skip("only a root-started jail draws a uid of its own")
    sandbox = local_sandbox("bwrap")
    folder = verifier_root / "run-code"
    pids = load_spec(folder).limits.pids
    neighbours = [
        subprocess.Popen(["sleep", "120"], user=65534, group=65534, extra_groups=[])
        for _ in range(pids + 8)
    ]
    try:
        r = run_hostile(sandbox, verifier_root, "import os\nwhile True:\n    os.fork()\n")
        assert "BlockingIOError" in r.detail or "timeout" in r.detail or "exit" in r.detail, r
    finally:
        for p in neighbours:
            p.kill()
            p.wait()
