"""Stage task: one training arm (RLSD, GRPO, ...) in its nested MLflow run.

Never retried: an optimizer step must not be counted twice. A failed arm fails the flow with
its own error; its checkpoints let the next run of the stage resume rather than restart.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from rlsd.algo.methods import get_method
from rlsd.context.stage import IngestOutcome
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import record_arm, train_run
from rlsd.train.arms import ArmOutcome, arm_config, train_arm


@task(name="train-arm", retries=0)
def train_task(
    cfg: PipelineConfig, parent: str, arm: str, ingest: IngestOutcome, run_dir: Path
) -> ArmOutcome:
    snap = ingest.snapshot
    tcfg = arm_config(cfg.train_config, cfg.train_overrides, arm, snap, cfg.domains, run_dir / arm)
    with train_run(parent, tcfg, snap) as (run_id, sink):
        out = train_arm(tcfg, snap, run_id, sinks=(sink,))
        record_arm(out, get_method(arm).teacher_scales_advantage)
    return out
