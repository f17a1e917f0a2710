"""Stage tasks: the promotion gate (policy decision, candidate registered), the approval (a
human's through a paused flow run, or an automatic one recorded as such), and the alias move
under a registry-wide lock.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from pydantic import Field

from rlsd.context.stage import IngestOutcome
from rlsd.gate import ApprovalRecord, evaluate_gate
from rlsd.gate.approval import approval_problems
from rlsd.gate.evidence import (
    GateOutcome,
    check_promotion_setup,
    collect_evidence,
    load_promotion_policy,
)
from rlsd.gate.policy import PromotionPolicy
from rlsd.gate.signing import (
    key_id,
    private_key_from_pem,
    read_private_key,
    sign_record,
)
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import record_gate
from rlsd.tracking.registry import promote
from rlsd.train.arms import ArmOutcome
from rlsd.train.heldout import EvalOutcome
from rlsd.verify.stage import InventoryOutcome


def signing_key(cfg: PipelineConfig) -> Ed25519PrivateKey:
    """The pipeline's signing key: from the Prefect Secret block the config names, else from
    its key file. Never from MLflow, which only ever holds signatures."""
    if cfg.signing_key_secret:
        from prefect.blocks.system import Secret

        pem = Secret.load(cfg.signing_key_secret).get()
        return private_key_from_pem(pem, where=f"Prefect Secret block {cfg.signing_key_secret!r}")
    return read_private_key(cfg.signing_key_file)


def preflight(cfg: PipelineConfig, auto_approve: bool) -> None:
    """Before any training: the policy loads, the signing key is there and is the policy's, and
    an automatic approval is allowed by the policy if one is asked for."""
    policy, path = load_promotion_policy(cfg.promotion_policy, cfg.promotion_overrides)
    key = signing_key(cfg)
    check_promotion_setup(policy, path, auto_approve, key_id(key.public_key()))


def triggered_by(explicit: str | None) -> str:
    """Who started this run: the flow parameter if given, else Prefect's record of the creator,
    else the deployment that scheduled it, else the local user."""
    if explicit:
        return explicit
    import getpass

    from prefect.runtime import deployment, flow_run

    if flow_run.id is not None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            created = client.read_flow_run(flow_run.id).created_by
        if created is not None and created.display_value:
            return str(created.display_value)
    if deployment.name:
        return f"deployment:{deployment.name}"
    return getpass.getuser()


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
    inventory: InventoryOutcome, ingest: IngestOutcome, trigger: str,
) -> GateOutcome:  # fmt: skip
    now = _dt.datetime.now(_dt.UTC)
    base, _ = load_promotion_policy(cfg.promotion_policy)
    policy, policy_path = load_promotion_policy(cfg.promotion_policy, cfg.promotion_overrides)
    evidence = collect_evidence(
        policy, evals[candidate.arm], evals[cfg.control], champion, inventory.statuses,
        inventory.sandbox_kind, ingest.snapshot, cfg.domains, now,
        inventory_digest=hashlib.sha256(Path(inventory.path).read_bytes()).hexdigest(),
        triggered_by=trigger,
    )  # fmt: skip
    decision = evaluate_gate(policy, evidence, now=now, base_policy=base,
                             pinned_policy_digest=cfg.promotion_policy_sha256)  # fmt: skip
    signature = sign_record("gate-decision", decision.model_dump(mode="json"), signing_key(cfg))
    out = record_gate(
        parent, cfg.registered_model, candidate, ingest.snapshot.digest, evidence,
        decision, signature, policy_path, cfg.promotion_overrides, champion_version,
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
    """The approval record: automatic (only where the policy allows it, recorded as such), a
    human's (given in the Prefect UI or with `rlsd approve`; refused -- a rejection naming who
    answered -- when the policy does not accept that approver), or a timeout that rejects."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    decision = gate.decision
    digest = decision.digest()
    now = _dt.datetime.now(_dt.UTC)
    if auto_approve or not decision.policy.approval.required:
        record = ApprovalRecord(
            decision="approve", approver="auto-approve", mode="auto", at=now,
            reason="the promotion policy does not require a human approval "
            "(approval.required: false); no human reviewed this",
            gate_decision_digest=digest,
        )  # fmt: skip
        problems = approval_problems(decision, record)
        if problems:  # preflight refuses this before training; never promote on it regardless
            raise PermissionError("; ".join(problems))
        return record
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
    record = ApprovalRecord(
        decision=given.decision, approver=given.approver, reason=given.reason, mode="human",
        at=_dt.datetime.now(_dt.UTC), gate_decision_digest=digest,
    )  # fmt: skip
    problems = approval_problems(decision, record)
    if not problems:
        return record
    get_run_logger().warning("approval refused: %s", "; ".join(problems))
    return ApprovalRecord(
        decision="reject", approver=given.approver, mode="refused", at=record.at,
        gate_decision_digest=digest,
        reason=f"refused by the promotion policy: {'; '.join(problems)} "
        f"(answer given: {given.decision}: {given.reason})"[:5000],
    )  # fmt: skip


def approve_and_promote(
    cfg: PipelineConfig, gate: GateOutcome, auto_approve: bool
) -> tuple[str, ApprovalRecord]:
    """Wait for the approval (in the flow: a pause is a flow-run state, not a task's), sign it,
    then move the alias if the outcome is promote."""
    policy: PromotionPolicy = gate.decision.policy
    timeout = cfg.approval_timeout_s or policy.approval.timeout_s
    approval = wait_for_approval(gate, timeout, auto_approve)
    signature = sign_record("gate-approval", approval.model_dump(mode="json"), signing_key(cfg))
    return promote(
        cfg.registered_model, gate, approval, signature, lock=registry_lock(cfg.registered_model)
    ), approval
