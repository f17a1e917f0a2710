"""Stage task: greedy held-out accuracy of one model, in its nested MLflow run.

Retried once: loading a model or a sandbox hiccup is worth a second try, and an evaluation
writes nothing a second try would double (its run is new).
"""

from __future__ import annotations

from pathlib import Path

from prefect import task

from rlsd.context.stage import IngestOutcome
from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking.records import record_evaluation
from rlsd.train.arms import arm_config
from rlsd.train.heldout import EvalOutcome, evaluate_model, heldout_tasks


@task(name="evaluate", retries=1)
def evaluate_task(
    cfg: PipelineConfig, parent: str, name: str, model_path: str, version: str,
    ingest: IngestOutcome, run_dir: Path,
) -> EvalOutcome:  # fmt: skip
    snap = ingest.snapshot
    tcfg = arm_config(cfg.train_config, cfg.train_overrides, cfg.control, snap, cfg.domains,
                      run_dir / "eval")  # fmt: skip
    tasks = heldout_tasks(snap, cfg.domains, cfg.eval_tasks)
    out = evaluate_model(name, model_path, version, tcfg, snap, tasks)
    return record_evaluation(parent, out, model_path)
