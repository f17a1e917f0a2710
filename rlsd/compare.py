"""RLSD beside the GRPO control: same data, seeds and budget; a comparison table at the end."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rlsd.train.config import TrainConfig
from rlsd.train.trainer import TrainResult, train


@dataclass
class ArmSummary:
    algo: str
    accuracy_before: float | None
    accuracy_after: float | None
    train_reward_first: float
    train_reward_last: float
    entropy_last: float
    seconds_per_step: float
    output_dir: str

    @classmethod
    def of(cls, algo: str, r: TrainResult) -> ArmSummary:
        m = r.metrics
        k = max(1, min(3, len(m)))  # last few steps smooth a noisy per-step reward
        return cls(
            algo=algo,
            accuracy_before=r.eval_before.accuracy if r.eval_before else None,
            accuracy_after=r.eval_after.accuracy if r.eval_after else None,
            train_reward_first=m[0]["reward/mean"] if m else float("nan"),
            train_reward_last=sum(x["reward/mean"] for x in m[-k:]) / k if m else float("nan"),
            entropy_last=m[-1]["actor/entropy"] if m else float("nan"),
            seconds_per_step=sum(x["time/step"] for x in m) / max(len(m), 1),
            output_dir=str(r.output_dir),
        )


def run_comparison(
    base: TrainConfig, algos: list[str], output_dir: str | Path, show_progress: bool = True
) -> list[ArmSummary]:
    """Train one arm per algorithm on identical settings; the base model is evaluated once."""
    out = Path(output_dir)
    summaries: list[ArmSummary] = []
    before_file: Path | None = None
    for i, name in enumerate(algos):
        cfg = base.model_copy(deep=True)
        cfg.algo.name = name  # type: ignore[assignment]
        cfg.run.output_dir = str(out / name)
        if i > 0:
            cfg.eval.before = False  # the same base model: reuse the first arm's evaluation
        if i > 0 and before_file is not None:
            Path(cfg.run.output_dir).mkdir(parents=True, exist_ok=True)
            shutil.copy(before_file, Path(cfg.run.output_dir) / "eval_before.json")
        result = train(cfg, overwrite=True, show_progress=show_progress)
        if i == 0 and (result.output_dir / "eval_before.json").exists():
            before_file = result.output_dir / "eval_before.json"
        summaries.append(ArmSummary.of(name, result))
    (out / "comparison.json").write_text(json.dumps([s.__dict__ for s in summaries], indent=2))
    return summaries
