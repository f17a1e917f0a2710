"""Moving the champion alias: only after approval, never on stale information."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import pytest

from rlsd.gate import ApprovalRecord, evaluate_gate
from rlsd.gate.evidence import GateOutcome
from rlsd.tracking.registry import StaleChampionError, promote
from tests.gate import factory


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import mlflow
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    client.create_registered_model("m")
    versions = []
    for _ in range(3):
        run = client.create_run(exp)
        (tmp_path / "w").mkdir(exist_ok=True)
        (tmp_path / "w" / "config.json").write_text("{}")
        client.log_artifacts(run.info.run_id, str(tmp_path / "w"), "model")
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version("m", f"runs:/{run.info.run_id}/model", run.info.run_id)
        versions.append((str(mv.version), run.info.run_id))
    yield client, versions
    mlflow.set_tracking_uri(previous)


def _gate(version: str, run_id: str, champion: str | None, passed: bool = True) -> GateOutcome:
    ev = (
        factory.evidence() if passed else factory.evidence(candidate=factory.arm("c", factory.BASE))
    )
    pol = factory.policy() if passed else factory.policy(min_gain_over_control=0.5)
    decision = evaluate_gate(pol, ev, now=factory.NOW)
    assert decision.passed is passed
    return GateOutcome(
        decision_json=decision.to_json(), passed=passed, markdown="", run_id=run_id,
        version=version, champion_version=champion,
    )  # fmt: skip


def _approval(gate: GateOutcome, decision: str = "approve") -> ApprovalRecord:
    from rlsd.gate import GateDecision

    d = GateDecision.model_validate_json(gate.decision_json)
    return ApprovalRecord(decision=decision, approver="ada@example.com", reason="reviewed the gate",
                          at=d.decided_at + _dt.timedelta(minutes=5), mode="human",
                          gate_decision_digest=d.digest())  # fmt: skip


def test_two_gates_decided_on_the_same_champion_cannot_both_move_the_alias(registry) -> None:
    client, versions = registry
    (v1, r1), (v2, r2), _ = versions
    # both gates compared their candidate with "no champion yet"
    g1, g2 = _gate(v1, r1, None), _gate(v2, r2, None)
    assert promote("m", g1, _approval(g1)) == "promote"
    assert str(client.get_model_version_by_alias("m", "champion").version) == v1
    with pytest.raises(StaleChampionError, match="run the gate again"):
        promote("m", g2, _approval(g2))
    assert str(client.get_model_version_by_alias("m", "champion").version) == v1
    assert client.get_model_version("m", v2).tags["rlsd.gate.outcome"] == "stale"


def test_promotion_keeps_the_previous_champion_and_records_the_approval(registry) -> None:
    client, versions = registry
    (v1, r1), (v2, r2), (v3, r3) = versions
    g = _gate(v1, r1, None)
    promote("m", g, _approval(g))
    g = _gate(v2, r2, v1)
    assert promote("m", g, _approval(g)) == "promote"
    assert str(client.get_model_version_by_alias("m", "champion").version) == v2
    assert str(client.get_model_version_by_alias("m", "previous-champion").version) == v1
    tags = client.get_model_version("m", v2).tags
    assert (
        tags["rlsd.approval.approver"] == "ada@example.com"
        and tags["rlsd.approval.mode"] == "human"
    )
    assert tags["rlsd.approval.reason"] == "reviewed the gate"
    # a rejection, and a failed gate even with an approval, leave the alias where it is
    g = _gate(v3, r3, v2)
    assert promote("m", g, _approval(g, "reject")) == "reject"
    g = _gate(v3, r3, v2, passed=False)
    assert promote("m", g, _approval(g)) == "reject"
    assert str(client.get_model_version_by_alias("m", "champion").version) == v2
