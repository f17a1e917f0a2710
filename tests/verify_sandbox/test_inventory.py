"""Inventory: ready / quarantined / invalid, the registry hook, and the require-Docker policy."""

from __future__ import annotations

import json

import pytest

from rlsd.tasks.record import ChatMessage, Task
from rlsd.verify import VERIFIERS, Verifier, get_verifier
from rlsd.verify.backends import make_sandbox
from rlsd.verify.inventory import (
    ContainerVerifier,
    Inventory,
    VerifierUnavailableError,
    register_inventory,
    run_inventory,
)
from rlsd.verify.sandbox import SandboxUnavailable
from rlsd.verify.spec import load_spec, spec_digest
from tests.verify_sandbox import folders


def _task(answer: str, i: int = 0) -> Task:
    return Task(
        id=f"t{i}",
        prompt=[ChatMessage(role="user", content="say the number")],
        answer=answer,
        privileged_context="the secret worked solution, never sent",
        verifier="echo-eq",
        split="train",
        source="test",
        metadata={"k": i},
    )


def _root(tmp_path, *, with_bad_build: bool):
    root = tmp_path / "verifiers"
    root.mkdir()
    root.chmod(0o755)
    folders.echo_eq(root)
    folders.crash(root)
    wrong = folders.spec(
        "wrong-selftest",
        self_tests=[
            {"id": "should-pass", "expect": "pass", "item": {"response": "1", "reference": "2"}},
            {"id": "should-fail", "expect": "fail", "item": {"response": "1", "reference": "3"}},
        ],
        prepare="python3 prepare.py",
    )
    folders.write_folder(
        root,
        "wrong-selftest",
        folders.ECHO_EQ,
        wrong,
        dockerfile=folders.DOCKERFILE_WITH_BUILD,
        extra={"prepare.py": folders.PREPARE},
    )
    broken = root / "broken-spec"
    broken.mkdir()
    (broken / "verifier.yaml").write_text(
        "name: broken-spec\nversion: 1.0.0\nlimits: {pids: many}\n"
    )
    if with_bad_build:
        folders.bad_build(root)
    return root


def _check(inv: Inventory, backend: str) -> None:
    by = {r.name: r for r in inv.verifiers}
    assert by["echo-eq"].status == "ready", by["echo-eq"]
    assert [s.ok for s in by["echo-eq"].self_tests] == [True, True]
    assert by["echo-eq"].spec_sha256 == spec_digest(by["echo-eq"].folder)
    crash = by["crash-on-start"]
    assert crash.status == "quarantined"
    assert "boom: cannot load the rule set" in crash.reason
    assert "self-test 'ok' expected pass, got no verdict" in crash.reason
    assert "self-test 'bad' expected fail, got no verdict" in crash.reason
    wrong = by["wrong-selftest"]
    assert wrong.status == "quarantined" and "'should-pass' expected pass" in wrong.reason
    assert "'should-fail'" not in wrong.reason
    broken = by["broken-spec"]
    assert broken.status == "invalid"
    assert "verifier.yaml" in broken.reason and "limits.pids = 'many'" in broken.reason
    assert {r.backend for r in inv.verifiers} == {backend}


def test_inventory_local(tmp_path):
    from tests.verify_sandbox.conftest import local_sandbox

    sb = local_sandbox("bwrap")
    root = _root(tmp_path, with_bad_build=False)
    out = tmp_path / "inv.json"
    inv = run_inventory(root, "local", out=out, sandbox=sb)
    _check(inv, "local-bwrap")
    assert inv.get("echo-eq").image_id is None  # nothing is built locally
    saved = json.loads(out.read_text())
    assert [v["name"] for v in saved["verifiers"]] == [
        "broken-spec",
        "crash-on-start",
        "echo-eq",
        "wrong-selftest",
    ]
    assert Inventory.load(out) == inv


@pytest.mark.docker
def test_inventory_docker_with_a_spec_that_does_not_build(tmp_path, docker_sandbox):
    root = _root(tmp_path, with_bad_build=True)
    inv = run_inventory(root, "docker", out=tmp_path / "inv.json", sandbox=docker_sandbox)
    _check(inv, "docker")
    echo = inv.get("echo-eq")
    assert echo.image.startswith("rlsd-verifier/echo-eq:1.0.0-") and echo.image_id.startswith(
        "sha256:"
    )
    bad = inv.get("bad-build")
    assert bad.status == "invalid"
    assert "docker build failed" in bad.reason, bad.reason
    assert "returned a non-zero code: 3" in bad.reason, bad.reason


def test_register_inventory_gives_sandboxed_rewards_only_when_ready(tmp_path):
    from tests.verify_sandbox.conftest import local_sandbox

    sb = local_sandbox("bwrap")
    root = _root(tmp_path, with_bad_build=False)
    inv = run_inventory(root, "local", out=None, sandbox=sb)
    names = [r.name for r in inv.verifiers]
    try:
        registered = register_inventory(inv, sandbox=sb)
        assert registered == {
            "broken-spec": "invalid",
            "crash-on-start": "quarantined",
            "echo-eq": "ready",
            "wrong-selftest": "quarantined",
        }
        v = get_verifier("echo-eq")
        assert isinstance(v, ContainerVerifier) and isinstance(v, Verifier)
        res = v.verify(["7", " 8 ", "7"], [_task("7", 0), _task("7", 1), _task("9", 2)])
        assert [r.passed for r in res] == [True, False, False]
        assert all(r.detail.startswith("[local-bwrap] echo-tag:") for r in res)
        with pytest.raises(
            VerifierUnavailableError, match=r"'crash-on-start' is quarantined .*boom"
        ):
            get_verifier("crash-on-start")
        with pytest.raises(VerifierUnavailableError, match=r"'broken-spec' is invalid"):
            get_verifier("broken-spec")
        # an edited folder is stale until the next inventory
        verify_py = root / "echo-eq" / "verify.py"
        verify_py.write_text(verify_py.read_text() + "# edited\n")
        register_inventory(inv, sandbox=sb)
        with pytest.raises(VerifierUnavailableError, match="changed since the inventory"):
            get_verifier("echo-eq")
    finally:
        for n in names:
            VERIFIERS.pop(n, None)


def test_container_verifier_sends_no_privileged_context(tmp_path):
    from tests.verify_sandbox.conftest import local_sandbox

    seen = []

    class Recorder:
        backend = "fake"

        def run_many(self, spec, folder, batches):
            seen.extend(x for b in batches for x in b)
            return [
                [
                    type(
                        "R", (), {"passed": False, "score": 0.0, "detail": "d", "backend": "fake"}
                    )()
                    for _ in b
                ]
                for b in batches
            ]

    folder = folders.echo_eq(tmp_path)
    v = ContainerVerifier(load_spec(folder), folder, Recorder(), max_batch_items=2)
    res = v.verify(["a", "b", "c"], [_task("1", i) for i in range(3)])
    assert len(res) == 3 and res[0].detail == "[fake] d"
    assert seen[0] == {
        "id": "0",
        "response": "a",
        "reference": "1",
        "task_id": "t0",
        "metadata": {"k": 0},
    }
    assert "privileged" not in json.dumps(seen)
    assert local_sandbox  # imported for symmetry with the other tests


def test_require_docker_forbids_the_local_fallback(monkeypatch, tmp_path):
    import rlsd.verify.engine as engine

    monkeypatch.setattr(engine, "docker_available", lambda timeout=3.0: "engine down (test)")
    with pytest.raises(SandboxUnavailable, match="policy requires Docker"):
        make_sandbox("auto", require_docker=True)
    with pytest.raises(SandboxUnavailable, match="policy requires Docker"):
        make_sandbox("local", require_docker=True)
    with pytest.raises(SandboxUnavailable, match="no Docker engine answers"):
        make_sandbox("docker")
    with pytest.raises(SandboxUnavailable, match="policy requires Docker"):
        run_inventory(tmp_path, "auto", require_docker=True, out=None)
    monkeypatch.setenv("RLSD_REQUIRE_DOCKER", "1")
    with pytest.raises(SandboxUnavailable, match="engine down"):
        make_sandbox("auto")
    monkeypatch.delenv("RLSD_REQUIRE_DOCKER")
    assert make_sandbox("auto").backend.startswith("local-")
