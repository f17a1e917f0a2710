"""Stage tasks: the promotion gate (policy decision, candidate registered), the approval (a
human's through a paused flow run, or an automatic one recorded as such), and the alias move
under a registry-wide lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
from typing import Annotated, Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from pydantic import Field

from rlsd.context.stage import IngestOutcome
from rlsd.gate import ApprovalRecord, evaluate_gate
from rlsd.gate.evidence import GateOutcome, collect_evidence, load_promotion_policy
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import record_gate
from rlsd.tracking.registry import promote
from rlsd.train.arms import ArmOutcome
from rlsd.train.heldout import EvalOutcome
from rlsd.verify.stage import InventoryOutcome


class ApprovalInput(RunInput):
    """What a reviewer gives to resume the paused flow (Prefect UI form or `rlsd approve`)."""

    decision: Literal["approve", "reject"]
    # the server validates the answer against this schema: blank names or reasons are refused
    approver: Annotated[str, Field(min_length=1, pattern=r"\S")]
    reason: Annotated[str, Field(min_length=1, pattern=r"\S")]


@task(name="promotion-gate", retries=0)
def gate_task(
    cfg: PipelineConfig, parent: str, candidate: ArmOutcome, evals: dict[str, EvalOutcome],
    champion: EvalOutcome | None, champion_version: str | None,
    inventory: InventoryOutcome, ingest: IngestOutcome,
) -> GateOutcome:  # fmt: skip
    now = _dt.datetime.now(_dt.UTC)
    policy, policy_path = load_promotion_policy(cfg.promotion_policy, cfg.promotion_overrides)
    evidence = collect_evidence(
        policy, evals[candidate.arm], evals[cfg.control], champion, inventory.statuses,
        inventory.sandbox_kind, ingest.snapshot, cfg.domains, now,
    )  # fmt: skip
    out = record_gate(
        parent, cfg.registered_model, candidate, ingest.snapshot.manifest.digest, evidence,
        evaluate_gate(policy, evidence, now=now), policy_path, cfg.promotion_overrides,
        champion_version,
    )  # fmt: skip
    create_markdown_artifact(out.markdown, key="promotion-gate", description=f"MLflow {parent}")
    return out


def registry_lock(name: str) -> Any:
    """A Prefect global concurrency slot (limit 1) per registered model: alias moves serialise
    across flow runs and machines."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    slot = f"rlsd-registry-{name}"
    with get_client(sync_client=True) as client:
        try:
            # Look first: creating an existing limit makes the server log an IntegrityError
            # traceback (it answers 409), which reads like a failure in the demo's output.
            client.read_global_concurrency_limit_by_name(slot)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # another run created it meanwhile
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=slot, limit=1)
                )
    return concurrency(slot, occupy=1, timeout_seconds=600, strict=True)


def wait_for_approval(gate: GateOutcome, timeout_s: int, auto_approve: bool) -> ApprovalRecord:
    """The approval record: automatic (demo / unattended tests, recorded as such), a human's
    (given in the Prefect UI or with `rlsd approve`), or a timeout that rejects."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    digest = gate.decision.digest()
    now = _dt.datetime.now(_dt.UTC)
    if auto_approve:
        return ApprovalRecord(
            decision="approve", approver="auto-approve", mode="auto", at=now,
            reason="--auto-approve: unattended demo or test run, no human reviewed this",
            gate_decision_digest=digest,
        )  # fmt: skip
    get_run_logger().info(
        "waiting up to %d s for approval of model version %s: approve in the Prefect UI, or "
        "`rlsd approve <flow-run-id> --approver NAME --reason TEXT`",
        timeout_s,
        gate.version,
    )
    try:
        given = pause_flow_run(wait_for_input=ApprovalInput, timeout=timeout_s, poll_interval=2)
    except FlowPauseTimeout:
        return ApprovalRecord(
            decision="reject", approver="timeout", mode="timeout",
            at=_dt.datetime.now(_dt.UTC), gate_decision_digest=digest,
            reason=f"no approval within {timeout_s} s",
        )  # fmt: skip
    return ApprovalRecord(
        decision=given.decision, approver=given.approver, reason=given.reason, mode="human",
        at=_dt.datetime.now(_dt.UTC), gate_decision_digest=digest,
    )  # fmt: skip


def approve_and_promote(
    cfg: PipelineConfig, gate: GateOutcome, auto_approve: bool
) -> tuple[str, ApprovalRecord]:
    """Wait for the approval (in the flow: a pause is a flow-run state, not a task's), then move
    the alias if the outcome is promote."""
    policy, _ = load_promotion_policy(cfg.promotion_policy, cfg.promotion_overrides)
    timeout = cfg.approval_timeout_s or policy.approval.timeout_s
    approval = wait_for_approval(gate, timeout, auto_approve)
    return promote(
        cfg.registered_model, gate, approval, lock=registry_lock(cfg.registered_model)
    ), approval
