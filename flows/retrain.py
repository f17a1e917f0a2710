"""The ``retrain`` flow: inventory -> ingest -> RLSD and GRPO arms -> evaluation -> gate ->
human approval -> alias move. Thin: every stage is a function of :mod:`rlsd.pipeline.stages`.

Retries only where a retry is safe: building verifier images and reading the sources (a
transient database error) retry; training never does (an optimizer step must not be counted
twice -- a failed arm fails the flow with its own error, and its checkpoints let a new run of
the stage resume rather than restart).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.input import RunInput
from pydantic import Field

if __package__ in (None, ""):  # `prefect deploy` loads this file by path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlsd.pipeline import stages  # noqa: E402
from rlsd.pipeline.config import PipelineConfig, load_pipeline_config  # noqa: E402
from rlsd.tracking import conventions as C  # noqa: E402
from rlsd.tracking.runs import configure, environment_tags, experiment_id, log_json  # noqa: E402


class ApprovalInput(RunInput):
    """What a reviewer gives to resume the paused flow (Prefect UI form or `rlsd approve`)."""

    decision: Literal["approve", "reject"]
    # the server validates the answer against this schema: blank names or reasons are refused
    approver: Annotated[str, Field(min_length=1, pattern=r"\S")]
    reason: Annotated[str, Field(min_length=1, pattern=r"\S")]


def _transient_db_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry ingestion only on connection-level database errors, never on validation."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - classify, then decide
        from sqlalchemy.exc import DisconnectionError, OperationalError

        return isinstance(exc, OperationalError | DisconnectionError | ConnectionError)
    return False


@task(name="verifier-inventory", retries=2, retry_delay_seconds=15)
def inventory_task(cfg: PipelineConfig, parent: str, run_dir: Path) -> stages.InventoryOutcome:
    out = stages.inventory_stage(cfg, parent, run_dir)
    create_markdown_artifact(out.markdown, key="verifier-inventory", description=f"MLflow {parent}")
    return out


@task(
    name="ingest-context", retries=2, retry_delay_seconds=10, retry_condition_fn=_transient_db_error
)
def ingest_task(cfg: PipelineConfig, parent: str) -> stages.IngestOutcome:
    out = stages.ingest_stage(cfg, parent)
    create_markdown_artifact(out.markdown, key="data-validation", description=f"MLflow {parent}")
    return out


@task(name="train-arm", retries=0)
def train_task(
    cfg: PipelineConfig, parent: str, arm: str, snap: stages.IngestOutcome, run_dir: Path
) -> stages.ArmOutcome:
    return stages.train_stage(cfg, parent, arm, snap, run_dir)


@task(name="evaluate", retries=1)
def evaluate_task(
    cfg: PipelineConfig,
    parent: str,
    name: str,
    model_path: str,
    version: str,
    snap: stages.IngestOutcome,
    run_dir: Path,
) -> stages.EvalOutcome:
    return stages.evaluate_stage(cfg, parent, name, model_path, version, snap, run_dir)


@task(name="promotion-gate", retries=0)
def gate_task(cfg: PipelineConfig, parent: str, **kw: Any) -> stages.GateOutcome:
    out = stages.gate_stage(cfg, parent, **kw)
    create_markdown_artifact(out.markdown, key="promotion-gate", description=f"MLflow {parent}")
    return out


def _registry_lock(name: str) -> Any:
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


def wait_for_approval(gate: stages.GateOutcome, timeout_s: int, auto_approve: bool) -> Any:
    """The approval record: automatic (demo / unattended tests, recorded as such), a human's
    (given in the Prefect UI or with `rlsd approve`), or a timeout that rejects."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    from rlsd.gate import ApprovalRecord, GateDecision

    digest = GateDecision.model_validate_json(gate.decision_json).digest()
    now = _dt.datetime.now(_dt.UTC)
    if auto_approve:
        return ApprovalRecord(
            decision="approve", approver="auto-approve", mode="auto", at=now,
            reason="--auto-approve: unattended demo or test run, no human reviewed this",
            gate_decision_digest=digest,
        )  # fmt: skip
    logger = get_run_logger()
    logger.info(
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


@flow(name="retrain", log_prints=True)
def retrain(
    config: str | None = None,
    sources: str | None = None,
    steps: int | None = None,
    auto_approve: bool = False,
    approval_timeout_s: int | None = None,
    registered_model: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Retrain with RLSD beside a GRPO control and promote the winner through the gate."""
    import mlflow
    from prefect.runtime import flow_run

    logging.getLogger("rlsd").setLevel(logging.INFO)
    extra = dict(overrides or {})
    if sources is not None:
        extra["sources"] = sources
    if registered_model is not None:
        extra["registered_model"] = registered_model
    if approval_timeout_s is not None:
        extra["approval_timeout_s"] = approval_timeout_s
    cfg = load_pipeline_config(config, extra)
    if steps is not None:
        cfg.train_overrides = {**cfg.train_overrides, "run.steps": steps}
    configure()
    exp = experiment_id(cfg.experiment)
    fr_id = str(flow_run.id or "local")
    fr_url = flow_run.ui_url or ""
    if not fr_url.startswith("http"):  # the temporary local API has no UI to link to
        fr_url = ""
    with mlflow.start_run(
        experiment_id=exp,
        run_name=f"retrain {flow_run.name or ''}".strip(),
        tags={
            C.KIND: "pipeline",
            C.PREFECT_FLOW_RUN: fr_id,
            C.PREFECT_FLOW_RUN_URL: fr_url,
            C.AUTO_APPROVE: str(auto_approve).lower(),
            **environment_tags(),
        },  # fmt: skip
    ) as parent_run:
        parent = parent_run.info.run_id
        mlflow.log_text(cfg.model_dump_json(indent=2), "config/pipeline.json")
        from rlsd.tracking.runs import package_versions

        log_json(package_versions(), C.ENVIRONMENT_JSON)
        tracking = mlflow.get_tracking_uri()
        create_link_artifact(
            _run_link(tracking, exp, parent), link_text=f"MLflow run {parent}", key="mlflow-run"
        )
        _tag_flow_run(f"mlflow-run:{parent}")
        run_dir = Path(cfg.work_dir) / parent
        run_dir.mkdir(parents=True, exist_ok=True)

        inventory = inventory_task(cfg, parent, run_dir)
        snap = ingest_task(cfg, parent)
        arms = [train_task(cfg, parent, arm, snap, run_dir) for arm in (cfg.candidate, cfg.control)]
        stages.curves_stage(parent, arms, run_dir)

        base_path = stages.train_config_for(
            cfg, cfg.control, snap.snapshot, run_dir
        ).model.name_or_path
        evals = {
            "base": evaluate_task(
                cfg, parent, "base", base_path, f"base:{base_path}", snap, run_dir
            )
        }
        for a in arms:
            evals[a.arm] = evaluate_task(
                cfg, parent, a.arm, a.final_model_dir, f"run:{a.run_id}", snap, run_dir
            )
        champ = stages.champion_version(cfg.registered_model)
        champion_eval = None
        if champ is not None:
            path = stages.download_version(champ, run_dir / "champion")
            champion_eval = evaluate_task(
                cfg, parent, "champion", path,
                f"models:/{cfg.registered_model}/{champ.version}", snap, run_dir,
            )  # fmt: skip
        shown = [*evals.values(), *([champion_eval] if champion_eval else [])]
        create_markdown_artifact(
            stages.comparison_markdown(shown, arms),
            key="comparison",
            description=f"MLflow {parent}",
        )
        # the winner of the two arms is the candidate; the GRPO arm stays the control
        by_arm = {a.arm: a for a in arms}
        winner = max(
            (cfg.candidate, cfg.control), key=lambda a: (evals[a].accuracy, a == cfg.candidate)
        )
        gate = gate_task(
            cfg, parent,
            candidate_arm=by_arm[winner], candidate=evals[winner], control=evals[cfg.control],
            champion=champion_eval, champion_version_id=str(champ.version) if champ else None,
            inventory=inventory, ingest=snap,
        )  # fmt: skip
        outcome = "reject"
        approval = None
        if gate.passed:
            policy, _ = stages.load_promotion_policy(cfg)
            timeout = cfg.approval_timeout_s or policy.approval.timeout_s
            approval = wait_for_approval(gate, timeout, auto_approve)
            outcome = stages.promote(cfg, gate, approval, lock=_registry_lock(cfg.registered_model))
        else:
            from mlflow import MlflowClient

            MlflowClient().set_model_version_tag(
                cfg.registered_model, gate.version, C.GATE_OUTCOME, "reject"
            )
        mlflow.set_tags({C.GATE_OUTCOME: outcome, "rlsd.model_version": gate.version,
                         "rlsd.winner_arm": winner})  # fmt: skip
        from rlsd.tracking.lineage import lineage_markdown

        lineage = lineage_markdown(f"{cfg.registered_model}/{gate.version}")
        mlflow.log_text(lineage, C.LINEAGE_MD)
        create_markdown_artifact(
            f"### Outcome: **{outcome}**\n\nModel `{cfg.registered_model}` version {gate.version} "
            f"({winner} arm). " + (f"Approval: {approval.mode} by {approval.approver}." if approval else ""),
            key="outcome", description=f"MLflow {parent}",
        )  # fmt: skip
    return {
        "mlflow_run_id": parent,
        "tracking_uri": tracking,
        "experiment_id": exp,
        "registered_model": cfg.registered_model,
        "version": gate.version,
        "winner": winner,
        "gate_passed": gate.passed,
        "outcome": outcome,
        "approval": approval.model_dump(mode="json") if approval else None,
        "comparison": {k: v.accuracy for k, v in evals.items()}
        | ({"champion": champion_eval.accuracy} if champion_eval else {}),
        "decision_markdown": gate.markdown,
        "flow_run_id": fr_id,
    }


def _tag_flow_run(tag: str) -> None:
    """Add a tag to this flow run, so the Prefect side names the MLflow run too."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=[*(current.tags or []), tag])


def _run_link(tracking: str, exp: str, run_id: str) -> str:
    if tracking.startswith("http"):
        return f"{tracking.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    return f"mlflow-ui://experiments/{exp}/runs/{run_id} (store {tracking}; `mlflow ui --backend-store-uri {tracking}`)"


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    print(retrain(auto_approve=True))
