"""The red-team gate: every built-in's battery holds on both backends, a weak verifier of a
built-in kind is quarantined by name, and the battery files are checked like specs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlsd.verify.cli import app
from rlsd.verify.redteam import (
    BatteryError,
    battery_entries,
    generic_hacks,
    known_kinds,
    load_battery,
    run_redteam,
)
from rlsd.verify.spec import load_spec
from tests.verify_sandbox import folders

REPO = Path(__file__).resolve().parents[2]
BUILTINS = ["math-answer", "python-tests", "sql-result", "json-schema", "policy-rules"]


def test_every_builtin_kind_has_a_battery_with_controls():
    assert set(BUILTINS) <= set(known_kinds())
    for kind in BUILTINS:
        battery = load_battery(kind)
        assert battery is not None and len(battery.hacks) >= 8, kind
        assert battery.controls, kind
        assert len({h.hack for h in battery.hacks}) >= 4, kind


@pytest.mark.parametrize("name", BUILTINS)
def test_the_battery_holds(sandbox, name):
    """Every hack of the verifier's kind, its own and the generic ones fail in ONE batch, and
    every honest item between them keeps its verdict."""
    folder = REPO / "verifiers" / name
    spec = load_spec(folder)
    record = run_redteam(spec, folder, sandbox)
    assert record.size >= 10 and record.controls >= record.size
    assert record.breaches == [], [o for o in record.outcomes if not o.ok]
    assert record.failed_controls == []
    assert record.held and record.summary().startswith("held")
    print(f"{name} on {sandbox.backend}: {record.summary()} in {record.duration_s:.1f} s")


@pytest.mark.docker
@pytest.mark.parametrize("name", BUILTINS)
def test_one_battery_gets_the_same_verdicts_on_docker_and_local(docker_sandbox, name):
    """The whole battery (hacks and honest controls) through both backends: every item's verdict
    is the same, so a reward cannot depend on where the verifier ran."""
    from tests.verify_sandbox.conftest import local_sandbox

    folder = REPO / "verifiers" / name
    spec = load_spec(folder)
    docker = run_redteam(spec, folder, docker_sandbox)
    local = run_redteam(spec, folder, local_sandbox("bwrap"))
    verdicts = {o.id: [o.passed] for o in docker.outcomes}
    for o in local.outcomes:
        verdicts[o.id].append(o.passed)
    differ = {i: v for i, v in verdicts.items() if len(set(v)) != 1}
    assert len(docker.outcomes) == len(local.outcomes) == len(verdicts)
    assert differ == {}, differ
    assert any(v == [True, True] for v in verdicts.values())  # honest controls passed on both


def test_a_naive_verifier_of_a_builtin_kind_is_quarantined_by_name(sandbox, tmp_path):
    """A user's python-tests-kind verifier that runs candidate and check in one process passes
    its own self-tests, and the inventory still quarantines it, naming the hacks that passed."""
    from rlsd.verify.inventory import run_inventory

    root = tmp_path / "verifiers"
    root.mkdir()
    root.chmod(0o755)
    folders.naive_pytests(root)
    inv = run_inventory(root, out=tmp_path / "inv.json", sandbox=sandbox)
    rec = inv.get("naive-pytests")
    assert all(t.ok for t in rec.self_tests)  # honest self-tests alone would call it ready
    assert rec.status == "quarantined"
    assert rec.redteam is not None and not rec.redteam.held
    assert "python-tests:eq-always-true (eq-override)" in rec.redteam.breaches
    assert "red team: hack python-tests:eq-always-true (eq-override) PASSED" in rec.reason
    saved = json.loads((tmp_path / "inv.json").read_text())
    assert saved["verifiers"][0]["redteam"]["size"] == rec.redteam.size


def test_redteam_cli_prints_the_table_and_fails_on_a_breach(tmp_path):
    root = tmp_path / "verifiers"
    root.mkdir()
    root.chmod(0o755)
    folders.naive_pytests(root)
    from tests.verify_sandbox.conftest import local_sandbox

    local_sandbox("bwrap")  # skips where no local sandbox works
    done = CliRunner().invoke(app, ["redteam", "naive-pytests", "--root", str(root), "-b", "local"])
    assert done.exit_code == 1, done.output
    assert "BREACH" in done.output and "eq-override" in done.output
    assert "BREACHED" in done.output


def test_redteam_cli_holds_for_a_builtin():
    from tests.verify_sandbox.conftest import local_sandbox

    local_sandbox("bwrap")
    args = ["redteam", "math-answer", "--root", str(REPO / "verifiers"), "-b", "local", "--json"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    record = json.loads(done.stdout)
    assert record["held"] and record["size"] >= 10 and not record["breaches"]


def test_battery_entries_combine_own_kind_and_generic_hacks():
    spec = load_spec(REPO / "verifiers" / "python-tests")
    entries = battery_entries(spec)
    sources = {e.source for e in entries}
    assert sources == {"self-test", "battery", "generic"}
    assert {e.id for e in entries if e.source == "self-test"} == {
        "prints-a-fake-pass",
        "exits-early",
    }
    generic = generic_hacks(spec)
    assert all(e.item["reference"] == spec.self_tests[0].item["reference"] for e in generic)


def test_a_broken_battery_file_names_the_file_and_field(tmp_path):
    (tmp_path / "x.yaml").write_text("kind: x\ndescription: d\nhacks:\n  - id: a\n    hack: B!\n"
                                     "    note: n\n    item: {response: r}\n")  # fmt: skip
    with pytest.raises(BatteryError, match=r"x.yaml: hacks\[0\].hack = 'B!'"):
        load_battery("x", tmp_path)
    (tmp_path / "y.yaml").write_text("kind: z\ndescription: d\nhacks:\n  - id: a\n    hack: b\n"
                                     "    note: n\n    item: {response: r}\n")  # fmt: skip
    with pytest.raises(BatteryError, match="must equal the file name 'y'"):
        load_battery("y", tmp_path)
    assert load_battery("missing", tmp_path) is None
