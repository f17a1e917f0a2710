"""The pipeline run around the stages: the parent MLflow run (linked both ways with the Prefect
flow run), its run folder, and the outcome published at the end."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import BaseModel

from rlsd.gate import ApprovalRecord
from rlsd.gate.evidence import GateOutcome
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import parent_run, record_pipeline_outcome
from rlsd.uris import mask_uri


class PipelineRun(BaseModel):
    run_id: str  # the parent MLflow run
    run_dir: Path
    tracking_uri: str  # for display (printed by `rlsd retrain`): its password masked
    experiment_id: str
    flow_run_id: str


def _tag_flow_run(tag: str) -> None:
    """Add a tag to this flow run, so the Prefect side names the MLflow run too."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if flow_run.id is None:
        return
    with get_client(sync_client=True) as client:
        current = client.read_flow_run(flow_run.id)
        client.update_flow_run(flow_run.id, tags=[*(current.tags or []), tag])


@contextmanager
def pipeline_run(cfg: PipelineConfig, auto_approve: bool) -> Iterator[PipelineRun]:
    from prefect.runtime import flow_run

    fr_id = str(flow_run.id or "local")
    fr_url = flow_run.ui_url or ""
    if not fr_url.startswith("http"):  # the temporary local API has no UI to link to
        fr_url = ""
    name = f"retrain {flow_run.name or ''}".strip()
    config_json = cfg.model_dump_json(indent=2)
    with parent_run(cfg.experiment, config_json, name, fr_id, fr_url, auto_approve) as (
        run_id,
        exp,
        tracking,
        link,
    ):
        create_link_artifact(link, link_text=f"MLflow run {run_id}", key="mlflow-run")
        _tag_flow_run(f"mlflow-run:{run_id}")
        run_dir = Path(cfg.work_dir) / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        # parent_run masks the URI and the link already; masking is idempotent, and this is
        # where the URI leaves for the flow's output
        yield PipelineRun(run_id=run_id, run_dir=run_dir, tracking_uri=mask_uri(tracking),
                          experiment_id=exp, flow_run_id=fr_id)  # fmt: skip


def publish_outcome(
    run: PipelineRun, registered_model: str, gate: GateOutcome, outcome: str, winner: str,
    approval: ApprovalRecord | None, policy_path: str | None = None,
) -> None:  # fmt: skip
    """The outcome on the parent run (tags, lineage report) and as a Prefect artifact."""
    record_pipeline_outcome(registered_model, gate.version, outcome, winner, policy_path)
    who = f"Approval: {approval.mode} by {approval.approver}." if approval else ""
    create_markdown_artifact(
        f"### Outcome: **{outcome}**\n\nModel `{registered_model}` version {gate.version} "
        f"({winner} arm). {who}",
        key="outcome", description=f"MLflow {run.run_id}",
    )  # fmt: skip
