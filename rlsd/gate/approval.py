"""The approval that follows a passing gate, and the outcome of gate + approval together.

Who asks (a Prefect pause, the CLI) lives elsewhere; this module only says what a valid record
is and what it means. Rules of :func:`final_outcome`:

* a failed gate is ``reject`` whatever the approval says: there is no human override of a rule;
* a passed gate needs a record: ``promote`` only when it approves, in time (``approval.timeout_s``
  after the decision; later counts as the policy's ``on_timeout``, i.e. ``reject``);
* ``auto`` approvals (policy without a human step, or a CI run) count, and stay visible as such;
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
    mode: Literal["human", "auto", "timeout"] = "human"
    gate_decision_digest: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="GateDecision.digest() of the document approved; binds the two together.",
    )

    @model_validator(mode="after")
    def _timeout_rejects(self) -> ApprovalRecord:
        if self.mode == "timeout" and self.decision != "reject":
            raise ValueError("a timed-out approval request can only reject")
        return self


def final_outcome(decision: GateDecision, approval: ApprovalRecord | None) -> Outcome:
    """``promote`` only if the gate passed and a timely approval approves it."""
    if approval is not None:
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
