"""The ``verifier-inventory`` flow (nightly): build, check and self-test every verifier, log the
inventory to MLflow and publish it as a Prefect artifact, so a broken verifier is found before
the next retraining run needs it."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow

if __package__ in (None, ""):  # `prefect deploy` loads this file by path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.inventory import inventory_task  # noqa: E402
from rlsd.pipeline.config import PipelineConfig  # noqa: E402
from rlsd.tracking.records import parent_run  # noqa: E402


@flow(name="verifier-inventory", log_prints=True)
def verifier_inventory_flow(root: str = "verifiers", require_docker: bool = False) -> dict:
    """Run the verifier inventory; returns verifier name -> status."""
    from prefect.runtime import flow_run

    cfg = PipelineConfig(verifiers_root=root, require_docker=require_docker)
    name = f"inventory {flow_run.name or ''}".strip()
    fr_id, fr_url = str(flow_run.id or "local"), str(flow_run.ui_url or "")
    with parent_run("rlsd-verifier-inventory", cfg.model_dump_json(indent=2), name, fr_id,
                    fr_url, auto_approve=False) as (run_id, _, _, _):  # fmt: skip
        run_dir = Path(cfg.work_dir) / "inventory" / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        out = inventory_task(cfg, run_id, run_dir)
    return out.statuses


if __name__ == "__main__":
    print(verifier_inventory_flow())
