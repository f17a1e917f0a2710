"""The ``verifier-inventory`` flow (nightly): build, check and self-test every verifier, log the
inventory to MLflow and publish it as a Prefect artifact, so a broken verifier is found before
the next retraining run needs it."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

if __package__ in (None, ""):  # `prefect deploy` loads this file by path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlsd.pipeline import stages  # noqa: E402
from rlsd.pipeline.config import PipelineConfig  # noqa: E402
from rlsd.tracking import conventions as C  # noqa: E402
from rlsd.tracking.runs import configure, environment_tags, experiment_id  # noqa: E402


@task(name="verifier-inventory", retries=2, retry_delay_seconds=15)
def _inventory(cfg: PipelineConfig, parent: str, run_dir: Path) -> stages.InventoryOutcome:
    return stages.inventory_stage(cfg, parent, run_dir)


@flow(name="verifier-inventory", log_prints=True)
def verifier_inventory_flow(root: str = "verifiers", require_docker: bool = False) -> dict:
    """Run the verifier inventory; returns verifier name -> status."""
    import mlflow
    from prefect.runtime import flow_run

    cfg = PipelineConfig(verifiers_root=root, require_docker=require_docker)
    configure()
    exp = experiment_id("rlsd-verifier-inventory")
    with mlflow.start_run(
        experiment_id=exp,
        run_name=f"inventory {flow_run.name or ''}".strip(),
        tags={
            C.KIND: "pipeline",
            C.PREFECT_FLOW_RUN: str(flow_run.id or "local"),
            C.PREFECT_FLOW_RUN_URL: str(flow_run.ui_url or ""),
            **environment_tags(),
        },  # fmt: skip
    ) as run:
        run_dir = Path(cfg.work_dir) / "inventory" / run.info.run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        out = _inventory(cfg, run.info.run_id, run_dir)
    create_markdown_artifact(out.markdown, key="verifier-inventory")
    return out.statuses


if __name__ == "__main__":
    print(verifier_inventory_flow())
