"""The gate stage's inputs and outcome: evidence collected from the other stages' results, the
policy decision, and which arm is the candidate. Pure: no MLflow, no Prefect (the record is
:func:`rlsd.tracking.records.record_gate`, the alias move :func:`rlsd.tracking.registry.promote`).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rlsd.gate.decision import (
    ArmEval,
    GateDecision,
    GateEvidence,
    SourceCheck,
    TaskScore,
    ValidationSummary,
)
from rlsd.gate.policy import PromotionPolicy, load_policy

if TYPE_CHECKING:
    from rlsd.context.snapshot import Snapshot
    from rlsd.train.heldout import EvalOutcome


class PromotionRefused(PermissionError):
    """The run is set up so that it could not promote under its policy: refused before training."""


class GateOutcome(BaseModel):
    decision_json: str
    decision_sig_json: str | None = None  # the decision's SignedRecord
    passed: bool
    markdown: str
    run_id: str  # the gate's MLflow run
    version: str  # the registered model version
    champion_version: str | None  # the champion the gate compared against

    @property
    def decision(self) -> GateDecision:
        return GateDecision.model_validate_json(self.decision_json)


def load_promotion_policy(
    path: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> tuple[PromotionPolicy, str]:
    """The policy and the file it came from (``policies/promotion.yaml`` unless given)."""
    from rlsd.paths import policies_dir

    where = Path(path) if path else policies_dir() / "promotion.yaml"
    if not where.is_absolute() and not where.exists() and (policies_dir() / where.name).exists():
        where = policies_dir() / where.name  # a policy named by file name: the bundled one
    return load_policy(where, dict(overrides) if overrides else None), str(where)


def check_promotion_setup(
    policy: PromotionPolicy, policy_path: str, auto_approve: bool, signing_key_id: str | None
) -> None:
    """Refuse, before any training, a run that its policy would not let promote: an automatic
    approval where the policy requires a human, a signing key that is not the policy's."""
    from rlsd.gate.signing import key_id, read_public_key

    if auto_approve and policy.approval.required:
        raise PromotionRefused(
            f"{policy_path}: approval.required is true, so --auto-approve is refused: a human "
            "named in approval.approvers must approve (`rlsd approve`). The embedded demo runs "
            "under policies/promotion-demo.yaml, which allows automatic approval."
        )
    if policy.signing.public_key is not None and signing_key_id is not None:
        expected = key_id(read_public_key(policy.signing.public_key))
        if expected != signing_key_id:
            raise PromotionRefused(
                f"{policy_path}: the pipeline's signing key is {signing_key_id}, but "
                f"signing.public_key is key {expected}: its records would not verify"
            )


def pick_candidate(evals: Mapping[str, EvalOutcome], candidate: str, control: str) -> str:
    """The arm under evaluation is the better of the two on held-out accuracy (ties: the
    candidate method); the control stays the control either way."""
    return max((candidate, control), key=lambda a: (evals[a].accuracy, a == candidate))


def verifiers_used(snapshot: Snapshot, domains: Iterable[str] | None) -> list[str]:
    """The verifiers of the tasks the arms trained and were evaluated on (the chosen domains)."""
    wanted = set(domains) if domains else None
    return sorted(
        {t.verifier for t in snapshot.tasks if wanted is None or t.metadata.get("domain") in wanted}
    )


def _arm(e: EvalOutcome) -> ArmEval:
    return ArmEval(
        version=e.version,
        tasks={k: TaskScore(score=v.score, domain=v.domain) for k, v in e.tasks.items()},
    )


def collect_evidence(
    policy: PromotionPolicy,
    candidate: EvalOutcome,
    control: EvalOutcome,
    champion: EvalOutcome | None,
    verifier_statuses: Mapping[str, str],
    sandbox_kind: str,
    snapshot: Snapshot,
    domains: Iterable[str] | None,
    now: _dt.datetime,
    *,
    inventory_digest: str | None = None,
    triggered_by: str | None = None,
) -> GateEvidence:
    m = snapshot.manifest
    return GateEvidence(
        metric=policy.primary_metric,
        candidate=_arm(candidate),
        control=_arm(control),
        champion=_arm(champion) if champion else None,
        verifiers={
            v: verifier_statuses.get(v, "missing") for v in verifiers_used(snapshot, domains)
        },
        validation=ValidationSummary(
            passed=bool(m.validation.passed),
            sources={
                s.name: SourceCheck(
                    passed=s.bad_fraction <= s.max_bad_fraction,
                    n_rows=s.rows,
                    n_quarantined=s.quarantined,
                )
                for s in m.sources
            },
        ),
        sandbox=sandbox_kind,
        collected_at=now,
        snapshot_digest=snapshot.digest,
        inventory_digest=inventory_digest,
        triggered_by=triggered_by,
    )
