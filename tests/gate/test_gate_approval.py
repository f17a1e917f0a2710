from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from rlsd.gate import ApprovalError, ApprovalRecord, GateDecision, evaluate_gate, final_outcome
from tests.gate.factory import NOW, evidence, policy

PASSED = evaluate_gate(policy(), evidence(), now=NOW)
FAILED = evaluate_gate(policy(), evidence(sandbox="local-bwrap"), now=NOW)
# a policy without a human step: the only one under which an automatic approval counts
UNATTENDED = policy(approval={"required": False})
PASSED_AUTO = evaluate_gate(UNATTENDED, evidence(), now=NOW)
FAILED_AUTO = evaluate_gate(UNATTENDED, evidence(sandbox="local-bwrap"), now=NOW)


def _approval(**fields: object) -> ApprovalRecord:
    base: dict[str, object] = {
        "decision": "approve",
        "approver": "alice@example.com",
        "reason": "gains hold on every domain",
        "at": NOW + timedelta(hours=1),
        "mode": "human",
    }
    return ApprovalRecord.model_validate({**base, **fields})


def test_fixtures() -> None:
    assert PASSED.passed and not FAILED.passed


@pytest.mark.parametrize(
    ("gate", "record", "outcome"),
    [
        (PASSED, {"decision": "approve", "mode": "human"}, "promote"),
        (PASSED_AUTO, {"decision": "approve", "mode": "auto", "approver": "rlsd-ci"}, "promote"),
        (PASSED, {"decision": "reject", "mode": "human"}, "reject"),
        (PASSED, {"decision": "reject", "mode": "timeout", "approver": "prefect"}, "reject"),
        (FAILED, {"decision": "approve", "mode": "human"}, "reject"),  # no override of a rule
        (FAILED_AUTO, {"decision": "reject", "mode": "auto"}, "reject"),
    ],
)
def test_outcome_of_gate_and_approval(
    gate: GateDecision, record: dict[str, object], outcome: str
) -> None:
    assert final_outcome(gate, _approval(**record)) == outcome


def test_auto_approvals_stay_visible_as_auto() -> None:
    rec = _approval(mode="auto", approver="rlsd-ci", reason="approval.required is false")
    assert final_outcome(PASSED_AUTO, rec) == "promote" and rec.mode == "auto"


def test_an_automatic_approval_cannot_promote_where_the_policy_requires_a_human() -> None:
    rec = _approval(mode="auto", approver="auto-approve", reason="--auto-approve")
    with pytest.raises(ApprovalError, match=r"requires a human approval \(approval.required"):
        final_outcome(PASSED, rec)


@pytest.mark.parametrize(
    "approver",
    ["mallory@evil.example.org", "alice@example.com.evil.org", "ALICE@EXAMPLE.COM", "auto-approve"],
)
def test_only_an_approver_the_policy_names_can_decide(approver: str) -> None:
    with pytest.raises(ApprovalError, match="may not decide this gate"):
        final_outcome(PASSED, _approval(approver=approver))
    with pytest.raises(ApprovalError, match="may not decide this gate"):
        final_outcome(PASSED, _approval(approver=approver, decision="reject"))


def test_the_runs_trigger_may_not_approve_it_unless_the_policy_allows() -> None:
    four_eyes = evaluate_gate(policy(), evidence(triggered_by="alice@example.com"), now=NOW)
    with pytest.raises(ApprovalError, match="triggered this run"):
        final_outcome(four_eyes, _approval())
    assert final_outcome(four_eyes, _approval(approver="bob@example.com")) == "promote"
    own = policy(approval={"approvers": ["*@example.com"], "allow_self_approval": True})
    allowed = evaluate_gate(own, evidence(triggered_by="alice@example.com"), now=NOW)
    assert final_outcome(allowed, _approval()) == "promote"


def test_a_refused_answer_is_a_rejection_that_names_who_answered() -> None:
    rec = _approval(
        approver="mallory@evil.example.org",
        mode="refused",
        decision="reject",
        reason="refused by the promotion policy: not an approver",
    )
    assert final_outcome(PASSED, rec) == "reject"
    with pytest.raises(ValidationError, match="refused approval request can only reject"):
        _approval(mode="refused", decision="approve")


def test_a_failed_gate_needs_no_approval_but_a_passed_one_does() -> None:
    assert final_outcome(FAILED, None) == "reject"
    with pytest.raises(ApprovalError, match="needs an approval record"):
        final_outcome(PASSED, None)


def test_an_approval_after_the_timeout_is_the_timeout_outcome() -> None:
    limit = PASSED.policy.approval.timeout_s
    in_time = _approval(at=NOW + timedelta(seconds=limit))
    late = _approval(at=NOW + timedelta(seconds=limit + 1))
    assert final_outcome(PASSED, in_time) == "promote"
    assert final_outcome(PASSED, late) == "reject"


def test_an_approval_bound_to_another_decision_is_an_error() -> None:
    assert final_outcome(PASSED, _approval(gate_decision_digest=PASSED.digest())) == "promote"
    with pytest.raises(ApprovalError, match="names gate decision"):
        final_outcome(PASSED, _approval(gate_decision_digest=FAILED.digest()))


def test_an_approval_older_than_the_decision_is_an_error() -> None:
    with pytest.raises(ApprovalError, match="predates the gate decision"):
        final_outcome(PASSED, _approval(at=NOW - timedelta(seconds=1)))


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"approver": ""}, "approver"),
        ({"approver": "   "}, "approver"),
        ({"reason": ""}, "reason"),
        ({"reason": "\n\t"}, "reason"),
        ({"decision": "maybe"}, "decision"),
        ({"mode": "robot"}, "mode"),
        ({"at": datetime(2025, 6, 1, 13, 0)}, "at"),  # naive: ambiguous for an audit trail
        ({"gate_decision_digest": "abc"}, "gate_decision_digest"),
        ({"extra": 1}, "extra"),
    ],
)
def test_invalid_records_are_refused(fields: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as exc:
        _approval(**fields)
    assert where in str(exc.value)


def test_a_timeout_can_only_reject() -> None:
    with pytest.raises(ValidationError, match="timed-out approval request can only reject"):
        _approval(mode="timeout", decision="approve")


def test_approver_and_reason_are_stripped() -> None:
    rec = _approval(approver="  bob ", reason=" ok\n")
    assert (rec.approver, rec.reason) == ("bob", "ok")


@given(
    gate_passed=st.booleans(),
    decision=st.sampled_from(["approve", "reject"]),
    mode=st.sampled_from(["human", "auto", "timeout"]),
    delay_s=st.integers(0, 2 * 86400),
)
def test_promote_only_when_gate_passed_and_approved_in_time(
    gate_passed: bool, decision: str, mode: str, delay_s: int
) -> None:
    if mode == "timeout" and decision == "approve":
        return  # not a valid record (tested above)
    if mode == "auto":
        gate = PASSED_AUTO if gate_passed else FAILED_AUTO
    else:
        gate = PASSED if gate_passed else FAILED
    rec = _approval(decision=decision, mode=mode, at=NOW + timedelta(seconds=delay_s))
    expected = gate_passed and decision == "approve" and delay_s <= 86400
    assert (final_outcome(gate, rec) == "promote") == expected
