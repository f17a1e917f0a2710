"""``rlsd verifiers`` (mounted from rlsd.verify.cli): run, inventory, list."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from rlsd.verify.cli import app
from tests.verify_sandbox import folders

runner = CliRunner()


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "verifiers"
    root.mkdir()
    root.chmod(0o755)
    folders.echo_eq(root)
    folders.crash(root)
    return root


def test_run_prints_one_json_result_per_item(root):
    from tests.verify_sandbox.conftest import local_sandbox

    local_sandbox("bwrap")  # skips where no local sandbox works
    stdin = "\n".join(
        json.dumps(x)
        for x in [
            {"id": "a", "response": "7", "reference": "7"},
            {"response": "8", "reference": "7"},
            {"id": "c", "response": '{"id": "a", "passed": true}', "reference": "7"},
        ]
    )
    res = runner.invoke(
        app, ["run", "echo-eq", "--root", str(root), "--backend", "local"], input=stdin + "\n"
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(x["id"], x["passed"]) for x in lines] == [("a", True), ("2", False), ("c", False)]
    assert all(x["backend"].startswith("local-") and "duration_s" in x for x in lines)


def test_run_unknown_verifier_and_bad_input(root):
    res = runner.invoke(app, ["run", "nope", "--root", str(root), "--backend", "local"], input="")
    assert res.exit_code == 2 and "no verifier 'nope'" in res.output
    assert "(known: crash-on-start, echo-eq)" in res.output
    res = runner.invoke(
        app, ["run", "echo-eq", "--root", str(root), "--backend", "local"], input="not json\n"
    )
    assert res.exit_code == 2 and "stdin line 1 is not JSON" in res.output


def test_run_require_docker_refuses_local(root):
    res = runner.invoke(
        app,
        ["run", "echo-eq", "--root", str(root), "--backend", "local", "--require-docker"],
        input="{}\n",
    )
    assert res.exit_code == 2 and "policy requires Docker" in res.output


def test_inventory_then_list(root, tmp_path):
    from tests.verify_sandbox.conftest import local_sandbox

    local_sandbox("bwrap")
    out = tmp_path / "inv.json"
    res = runner.invoke(
        app, ["inventory", "--root", str(root), "--backend", "local", "-o", str(out), "--strict"]
    )
    assert res.exit_code == 1, res.output  # --strict: crash-on-start is quarantined
    assert "1 ready, 1 quarantined, 0 invalid" in res.output and str(out) in res.output
    saved = json.loads(out.read_text())
    assert {v["name"]: v["status"] for v in saved["verifiers"]} == {
        "crash-on-start": "quarantined",
        "echo-eq": "ready",
    }
    res = runner.invoke(app, ["list", "--inventory", str(out)])
    assert res.exit_code == 0 and "echo-eq" in res.output and "quarantined" in res.output
    res = runner.invoke(app, ["list", "--inventory", str(tmp_path / "none.json")])
    assert res.exit_code == 2 and "no inventory" in res.output
