"""The pipeline's curve panels name metrics the trainer really logs (a misspelt name would make
the plot drop its panel without a word)."""

from __future__ import annotations

import json

from rlsd.tracking.plots import PIPELINE_CURVE_METRICS
from rlsd.train.trainer import train
from tests.conftest import tiny_config


def test_every_pipeline_curve_is_a_metric_the_trainer_logs(tiny_model_dir, tmp_path) -> None:
    cfg = tiny_config(tiny_model_dir, tmp_path / "run", **{"run.steps": 1, "eval.before": False,
                                                            "eval.after": True})  # fmt: skip
    train(cfg, show_progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*rows)
    # held-out accuracy comes from the run's eval files (plot_training_curves reads them too)
    assert (tmp_path / "run" / "eval_after.json").exists()
    assert not {m for m in PIPELINE_CURVE_METRICS if not m.startswith("eval/")} - logged
