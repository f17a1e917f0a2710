"""The approval that follows a passing gate, and the outcome of gate + approval together.

Who asks (a Prefect pause, the CLI) lives elsewhere; this module only says what a valid record
is and what it means. Rules of :func:`final_outcome`:

* a failed gate is ``reject`` whatever the approval says: there is no human override of a rule;
* a passed gate needs a record: ``promote`` only when it approves, in time (``approval.timeout_s``
  after the decision; later counts as the policy's ``on_timeout``, i.e. ``reject``);
* ``auto`` approvals count only where the policy does not require a human
  (``approval.required: false``), and stay visible as such;
* a human decision counts only from an approver the policy names (``approval.approvers``),
  and not from whoever triggered the run unless ``approval.allow_self_approval``;
* a record bound to another decision (``gate_decision_digest``) or dated before it is an error,
  not a rejection: it means the caller paired the wrong documents.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from rlsd.gate.decision import GateDecision

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Outcome = Literal["promote", "reject"]


class ApprovalError(ValueError):
    """An approval record that does not belong to the gate decision it is paired with."""


class ApprovalRecord(BaseModel):
    """One approve/reject decision on a gate decision, with who, why, when and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Literal["approve", "reject"]
    approver: NonEmpty = Field(description="Who decided (a user, or the automation's name).")
    reason: NonEmpty = Field(description="Why, in the approver's words.")
    at: AwareDatetime
    # refused: an answer the policy does not accept (an approver it does not name, the run's
    # own trigger); the request then ends as a rejection that names who answered and why
    mode: Literal["human", "auto", "timeout", "refused"] = "human"
    gate_decision_digest: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="GateDecision.digest() of the document approved; binds the two together.",
    )

    @model_validator(mode="after")
    def _timeout_rejects(self) -> ApprovalRecord:
        if self.mode in ("timeout", "refused") and self.decision != "reject":
            what = "timed-out" if self.mode == "timeout" else "refused"
            raise ValueError(f"a {what} approval request can only reject")
        return self


def approval_problems(decision: GateDecision, approval: ApprovalRecord) -> list[str]:
    """Why the policy does not accept ``approval`` as the decision on this gate (empty: it does).
    Timeouts are always accepted: they can only reject."""
    rules = decision.policy.approval
    if approval.mode in ("timeout", "refused"):
        return []
    if approval.mode == "auto":
        if rules.required:
            return [
                "the promotion policy requires a human approval (approval.required: true); an "
                "automatic approval cannot promote"
            ]
        return []
    problems = []
    if not rules.allows_approver(approval.approver):
        allowed = ", ".join(rules.approvers) or "nobody"
        problems.append(
            f"{approval.approver!r} may not decide this gate (approval.approvers: {allowed})"
        )
    if (
        not rules.allow_self_approval
        and decision.triggered_by is not None
        and approval.approver == decision.triggered_by
    ):
        problems.append(
            f"{approval.approver!r} triggered this run and may not approve it "
            "(approval.allow_self_approval: false)"
        )
    return problems


def final_outcome(decision: GateDecision, approval: ApprovalRecord | None) -> Outcome:
    """``promote`` only if the gate passed and a timely approval the policy accepts approves it."""
    if approval is not None:
        problems = approval_problems(decision, approval)
        if problems:
            raise ApprovalError("; ".join(problems))
        digest = approval.gate_decision_digest
        if digest is not None and digest != decision.digest():
            raise ApprovalError(
                f"the approval names gate decision {digest[:12]}…, not this one "
                f"({decision.digest()[:12]}…)"
            )
        if approval.at < decision.decided_at:
            raise ApprovalError(
                f"the approval ({approval.at.isoformat()}) predates the gate decision "
                f"({decision.decided_at.isoformat()})"
            )
    if not decision.passed:
        return "reject"
    if approval is None:
        raise ApprovalError(
            "the gate passed; promotion needs an approval record (human, auto or timeout)"
        )
    if approval.decision != "approve":
        return "reject"
    waited = (approval.at - decision.decided_at).total_seconds()
    if waited > decision.policy.approval.timeout_s:
        return decision.policy.approval.on_timeout
    return "promote"
