"""Verifying a version's gate records from the documents alone (the pure half of
`rlsd lineage`): every digest recomputed, every signature checked, the decision and the outcome
re-derived from the evidence. Each forgery an insider with MLflow write access could try."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rlsd.gate import ApprovalRecord, evaluate_gate
from rlsd.gate.policy import PromotionPolicy
from rlsd.gate.signing import sign_record
from rlsd.gate.verification import GateRecords, verify_records
from tests.gate.factory import BASE, NOW, arm, evidence, policy

KEY = Ed25519PrivateKey.generate()
INVENTORY = b'{"verifiers": []}'
SNAPSHOT = "sha256:" + "ab" * 32


def _records(
    passed: bool = True, pol: PromotionPolicy | None = None, key=KEY, **fields
) -> tuple[GateRecords, PromotionPolicy]:
    pol = pol or policy()
    ev = evidence(
        snapshot_digest=SNAPSHOT, inventory_digest=hashlib.sha256(INVENTORY).hexdigest(),
        triggered_by="carol@example.com",
        **({} if passed else {"candidate": arm("c", BASE), "champion": None}),
    )  # fmt: skip
    if not passed:
        pol = pol.model_copy(update={"min_gain_over_control": 0.5})
    decision = evaluate_gate(pol, ev, now=NOW)
    assert decision.passed is passed
    rec = {
        "decision_json": decision.to_json(),
        "decision_sig": sign_record(
            "gate-decision", decision.model_dump(mode="json"), key
        ).model_dump_json(),
        "evidence_json": ev.model_dump_json(),
        "inventory_json": INVENTORY,
        "manifest_digest": SNAPSHOT,
        "dataset_digests": [SNAPSHOT.removeprefix("sha256:")[:20]],
        "decision_tag": "passed" if passed else "failed",
        "decision_digest_tag": decision.digest(),
        "dataset_digest_tag": SNAPSHOT,
        "outcome_tag": "promote" if passed else "reject",
        "aliases": ["champion"] if passed else [],
    }
    if passed:
        approval = ApprovalRecord(
            decision="approve", approver="alice@example.com", reason="reviewed", mode="human",
            at=NOW + timedelta(hours=1), gate_decision_digest=decision.digest(),
        )  # fmt: skip
        rec["approval_json"] = approval.model_dump_json()
        rec["approval_sig"] = sign_record(
            "gate-approval", approval.model_dump(mode="json"), key
        ).model_dump_json()
        rec["approval_tags"] = {"decision": "approve", "approver": "alice@example.com",
                                "mode": "human"}  # fmt: skip
    return GateRecords(**{**rec, **fields}), pol


def _failing(rec: GateRecords, pol: PromotionPolicy, key=KEY.public_key()) -> dict[str, str]:
    v = verify_records(rec, pol, key)
    return {c.item: c.detail for c in v.failing} | {"status": v.status}


def test_honest_records_verify() -> None:
    for passed in (True, False):
        rec, pol = _records(passed)
        assert _failing(rec, pol) == {"status": "VERIFIED"}


def test_the_red_teams_forgery_is_tampered() -> None:
    """Champion moved to a failed-gate version, tags rewritten, approval re-logged."""
    rec, pol = _records(passed=False)
    decision = json.loads(rec.decision_json)
    forged_approval = {"decision": "approve", "approver": "alice@example.com", "reason": "ok",
                       "at": "2099-01-01T00:00:00+00:00", "mode": "human",
                       "gate_decision_digest": rec.decision_digest_tag}  # fmt: skip
    forged = rec.model_copy(update={
        "aliases": ["champion"], "decision_tag": "passed", "outcome_tag": "promote",
        "approval_json": json.dumps(forged_approval),
        "approval_tags": {"decision": "approve", "approver": "alice@example.com"},
    })  # fmt: skip
    failing = _failing(forged, pol)
    assert failing["status"] == "TAMPERED" and decision["passed"] is False
    assert set(failing) >= {"decision tag", "approval signature", "outcome tag", "champion alias"}


def test_a_rewritten_decision_document_is_tampered() -> None:
    rec, pol = _records(passed=False)
    doc = json.loads(rec.decision_json)
    doc["passed"] = True
    failing = _failing(rec.model_copy(update={"decision_json": json.dumps(doc)}), pol)
    assert failing["status"] == "TAMPERED"
    assert "document's sha256" in failing["decision signature"]
    assert "passed=False" in failing["decision re-derived"]


def test_records_re_signed_with_another_key_are_tampered() -> None:
    rec, pol = _records(key=Ed25519PrivateKey.generate())
    failing = _failing(rec, pol)
    assert (
        failing["status"] == "TAMPERED"
        and "not by the policy's key" in failing["decision signature"]
    )


def test_evidence_edited_after_the_decision_is_tampered() -> None:
    rec, pol = _records()
    ev = json.loads(rec.evidence_json)
    ev["sandbox"] = "docker-but-not-really"
    failing = _failing(rec.model_copy(update={"evidence_json": json.dumps(ev)}), pol)
    assert "evidence digest" in failing


@pytest.mark.parametrize(
    ("field", "value", "item"),
    [
        ("manifest_digest", "sha256:" + "cd" * 32, "snapshot digest"),
        ("dataset_digests", ["sha256:" + "cd" * 32], "snapshot digest"),
        ("inventory_json", b'{"verifiers": ["edited"]}', "inventory digest"),
        ("decision_digest_tag", "0" * 64, "decision digest tag"),
        ("approval_tags", {"approver": "mallory@example.com"}, "approval tag approver"),
    ],
)
def test_each_record_the_decision_names_is_recomputed(field: str, value, item: str) -> None:
    rec, pol = _records()
    failing = _failing(rec.model_copy(update={field: value}), pol)
    assert failing["status"] == "TAMPERED" and item in failing


def test_a_decision_under_a_loosened_policy_is_tampered_against_the_trusted_one() -> None:
    loose = policy(min_gain_over_control=-0.5)
    rec, _ = _records(pol=loose)
    failing = _failing(rec, policy())
    assert "min_gain_over_control" in failing["policy as trusted"]


def test_an_approval_from_someone_the_policy_does_not_name_is_tampered() -> None:
    rec, pol = _records()
    approval = json.loads(rec.approval_json) | {"approver": "mallory@evil.example.org"}
    sig = sign_record("gate-approval", ApprovalRecord.model_validate(approval)
                      .model_dump(mode="json"), KEY).model_dump_json()  # fmt: skip
    failing = _failing(rec.model_copy(update={"approval_json": json.dumps(approval),
                                              "approval_sig": sig, "approval_tags": {}}), pol)  # fmt: skip
    assert "may not decide this gate" in failing["approval accepted by policy"]


def test_records_without_signatures_are_unsigned_not_verified() -> None:
    rec, pol = _records()
    failing = _failing(rec.model_copy(update={"decision_sig": None, "approval_sig": None}), pol)
    assert failing["status"] == "UNSIGNED"
    assert _failing(rec, pol, key=None)["status"] == "UNSIGNED"
