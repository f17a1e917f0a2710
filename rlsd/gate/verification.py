"""Verify a model version's gate records: recompute every digest, check every signature, and
re-derive the decision and the outcome from the evidence, trusting nothing the records claim.

Pure: the caller (``rlsd lineage``) fetches the documents from MLflow and hands them in as text,
with the trusted promotion policy (a local file, never the copy in MLflow) and its public key.
The result is ``VERIFIED`` only when every check holds; ``UNSIGNED`` when the only failures are
missing signatures (records from before signing, or a pipeline without a key); else
``TAMPERED``, with each failing item named.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, ValidationError

from rlsd.gate.approval import ApprovalError, ApprovalRecord, final_outcome
from rlsd.gate.decision import GateDecision, GateEvidence, GateInputError, evaluate_gate
from rlsd.gate.policy import PromotionPolicy, loosened_fields, policy_digest
from rlsd.gate.signing import RecordKind, SignedRecord, key_id, signature_problems

Status = Literal["VERIFIED", "TAMPERED", "UNSIGNED"]


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    item: str
    ok: bool
    detail: str
    #: a missing signature (rather than a wrong one): the record is unsigned, not forged
    unsigned: bool = False


class Verification(BaseModel):
    status: Status
    checks: list[Check]

    @property
    def failing(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


class GateRecords(BaseModel):
    """The documents of one model version as logged (None where missing)."""

    decision_json: str | None = None
    decision_sig: str | None = None
    evidence_json: str | None = None
    approval_json: str | None = None
    approval_sig: str | None = None
    inventory_json: bytes | None = None
    manifest_digest: str | None = None
    dataset_digests: list[str] = []
    aliases: list[str] = []
    # what the model version's tags say (rlsd.tracking.conventions names them)
    decision_tag: str | None = None
    decision_digest_tag: str | None = None
    outcome_tag: str | None = None
    dataset_digest_tag: str | None = None
    approval_tags: dict[str, str] = {}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _signature(
    checks: list[Check],
    item: str,
    kind: RecordKind,
    sig_text: str | None,
    document: Mapping[str, object],
    public_key: Ed25519PublicKey | None,
) -> None:
    if public_key is None:
        checks.append(Check(item=item, ok=False, unsigned=True,
                            detail="the trusted policy names no public key (signing.public_key)"))  # fmt: skip
        return
    if sig_text is None:
        checks.append(Check(item=item, ok=False, unsigned=True, detail="no signature logged"))
        return
    try:
        record = SignedRecord.model_validate_json(sig_text)
    except ValidationError as exc:
        checks.append(Check(item=item, ok=False, detail=f"unreadable signature: {exc.errors()[0]['msg']}"))  # fmt: skip
        return
    problems = signature_problems(record, kind, document, public_key)
    checks.append(Check(item=item, ok=not problems,
                        detail="; ".join(problems) or f"valid, key {key_id(public_key)}"))  # fmt: skip


def verify_records(
    records: GateRecords,
    trusted_policy: PromotionPolicy | None,
    public_key: Ed25519PublicKey | None,
) -> Verification:
    """Every check of one model version's records against the trusted policy and key."""
    checks: list[Check] = []

    def check(item: str, ok: bool, detail: str) -> None:
        checks.append(Check(item=item, ok=ok, detail=detail))

    if records.decision_json is None:
        check("gate decision", False, "no gate/decision.json logged")
        return _result(checks)
    try:
        decision_doc = json.loads(records.decision_json)
        decision = GateDecision.model_validate(decision_doc)
    except (ValueError, ValidationError) as exc:
        check("gate decision", False, f"not a gate decision document ({type(exc).__name__})")
        return _result(checks)
    digest = decision.digest()
    _signature(checks, "decision signature", "gate-decision",
               records.decision_sig, decision.model_dump(mode="json"), public_key)  # fmt: skip

    # the policy: the document's digest of itself, and the trusted policy it must be (or tighten)
    check("decision policy digest", policy_digest(decision.policy) == decision.policy_digest,
          f"recomputed {policy_digest(decision.policy)[:12]}…, recorded "
          f"{decision.policy_digest[:12]}…")  # fmt: skip
    if trusted_policy is not None:
        trusted = policy_digest(trusted_policy)
        loosened = loosened_fields(trusted_policy, decision.policy)
        check("policy as trusted", not loosened,
              f"judged under the trusted policy {trusted[:12]}…"
              + ("" if decision.policy_digest == trusted else " (tightened per run)")
              if not loosened else "the policy applied loosens the trusted one: "
              + "; ".join(loosened))  # fmt: skip

    # the evidence, and the decision re-derived from it
    evidence: GateEvidence | None = None
    if records.evidence_json is None:
        check("evidence", False, "no gate/evidence.json logged")
    else:
        try:
            evidence = GateEvidence.model_validate_json(records.evidence_json)
        except ValidationError:
            check("evidence", False, "gate/evidence.json is not a gate evidence document")
    if evidence is not None:
        from rlsd.gate.decision import evidence_digest

        got = evidence_digest(evidence)
        check("evidence digest", got == decision.evidence_digest,
              f"recomputed {got[:12]}…, decision names {decision.evidence_digest[:12]}…")  # fmt: skip
        try:
            again = evaluate_gate(
                decision.policy, evidence, now=decision.decided_at,
                base_policy=None, pinned_policy_digest=decision.pinned_policy_digest,
            )  # fmt: skip
            # the base policy is only known by digest: the rule that compares them is re-read
            same = _same_verdicts(again, decision)
            check("decision re-derived", same,
                  "the evidence gives the same rules and verdict" if same
                  else f"the evidence gives passed={again.passed} "
                  f"(failed: {', '.join(again.failed_rules) or 'none'}), the document says "
                  f"passed={decision.passed}")  # fmt: skip
        except (GateInputError, ValueError) as exc:
            check("decision re-derived", False, f"the evidence cannot be judged: {exc}")
        check("snapshot digest", _same_snapshot(decision.snapshot_digest, [
                  evidence.snapshot_digest, records.manifest_digest, records.dataset_digest_tag],
                  records.dataset_digests),
              f"decision {_short(decision.snapshot_digest)}, manifest "
              f"{_short(records.manifest_digest)}, version tag "
              f"{_short(records.dataset_digest_tag)}, dataset inputs "
              f"{', '.join(sorted({_short(d) for d in records.dataset_digests})) or '—'}")  # fmt: skip
    if decision.inventory_digest is not None or records.inventory_json is not None:
        got = _sha256(records.inventory_json) if records.inventory_json is not None else None
        check("inventory digest", got is not None and got == decision.inventory_digest,
              f"recomputed {_short(got)}, decision names {_short(decision.inventory_digest)}")  # fmt: skip

    # the version's tags say what the documents say
    check("decision tag", records.decision_tag == ("passed" if decision.passed else "failed"),
          f"tag {records.decision_tag!r}, document passed={decision.passed}")  # fmt: skip
    check("decision digest tag", records.decision_digest_tag == digest,
          f"tag {_short(records.decision_digest_tag)}, document {digest[:12]}…")  # fmt: skip

    # the approval and the outcome
    outcome = "reject"
    approval: ApprovalRecord | None = None
    if records.approval_json is not None:
        try:
            approval_doc = json.loads(records.approval_json)
            approval = ApprovalRecord.model_validate(approval_doc)
        except (ValueError, ValidationError):
            check("approval", False, "gate/approval.json is not an approval record")
    if approval is not None:
        _signature(checks, "approval signature", "gate-approval",
                   records.approval_sig, approval.model_dump(mode="json"), public_key)  # fmt: skip
        check("approval bound to decision", approval.gate_decision_digest == digest,
              f"approval names {_short(approval.gate_decision_digest)}, decision is "
              f"{digest[:12]}…")  # fmt: skip
        try:
            outcome = final_outcome(decision, approval)
            check(
                "approval accepted by policy",
                True,
                f"{approval.mode} {approval.decision} by {approval.approver}",
            )
        except ApprovalError as exc:
            check("approval accepted by policy", False, str(exc))
        for field in ("decision", "approver", "mode"):
            tag = records.approval_tags.get(field)
            if tag is not None:
                check(f"approval tag {field}", tag == getattr(approval, field),
                      f"tag {tag!r}, record {getattr(approval, field)!r}")  # fmt: skip
    elif decision.passed:
        check("approval", False, "the gate passed but no approval record is logged")
    if records.outcome_tag is not None:
        check("outcome tag", records.outcome_tag in (outcome, "stale"),
              f"tag {records.outcome_tag!r}, the records give {outcome!r}")  # fmt: skip
    if "champion" in records.aliases:
        check("champion alias", outcome == "promote",
              "the records promote this version" if outcome == "promote"
              else f"@champion points here but the records give {outcome!r}")  # fmt: skip
    return _result(checks)


def _same_verdicts(a: GateDecision, b: GateDecision) -> bool:
    """Same verdict on every rule but ``policy_as_deployed`` (its base policy is recorded only by
    digest, so it is compared through the digest)."""
    ra = {r.name: r.passed for r in a.rules if r.name != "policy_as_deployed"}
    rb = {r.name: r.passed for r in b.rules if r.name != "policy_as_deployed"}
    policy_rule = next((r for r in b.rules if r.name == "policy_as_deployed"), None)
    policy_ok = policy_rule.passed if policy_rule is not None else True
    return ra == rb and b.passed == (all(ra.values()) and policy_ok)


def _same_snapshot(decided: str | None, full: list[str | None], short: list[str]) -> bool:
    """The decision's snapshot digest, and every record of it: full digests equal, and MLflow's
    dataset-input digests (it keeps a prefix of the hex) its prefixes."""
    if not decided:
        return False
    hexdigest = decided.removeprefix("sha256:")
    return all(d == decided for d in full if d) and all(
        d and hexdigest.startswith(d.removeprefix("sha256:")) for d in short
    )


def _short(value: str | None) -> str:
    return f"{value[:12]}…" if value else "—"


def _result(checks: Sequence[Check]) -> Verification:
    failing = [c for c in checks if not c.ok]
    if not failing:
        status: Status = "VERIFIED"
    elif all(c.unsigned for c in failing):
        status = "UNSIGNED"
    else:
        status = "TAMPERED"
    return Verification(status=status, checks=list(checks))
