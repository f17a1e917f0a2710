"""Stage task: the verifier inventory (build, self-test and red-team every verifier).

Retried: building an image or starting a sandbox can fail for a moment (a busy engine), and an
inventory has no side effect a second try would double.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact

from rlsd.paths import verifiers_root
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import record_inventory
from rlsd.verify.stage import InventoryOutcome, take_inventory


@task(name="verifier-inventory", retries=2, retry_delay_seconds=15)
def inventory_task(cfg: PipelineConfig, parent: str, run_dir: Path) -> InventoryOutcome:
    root = Path(cfg.verifiers_root) if cfg.verifiers_root else verifiers_root()
    out = take_inventory(root, cfg.sandbox_backend, cfg.require_docker, run_dir / "inventory.json")
    record_inventory(parent, out)
    create_markdown_artifact(
        out.markdown(), key="verifier-inventory", description=f"MLflow {parent}"
    )
    return out
