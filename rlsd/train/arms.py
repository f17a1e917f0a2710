"""Training arms: the same settings for every arm but the method, and one summary of an arm.

Used by ``rlsd demo`` (:func:`run_comparison`, arms evaluated inside the trainer) and by the
pipeline's train stage (:func:`arm_config`, :func:`train_arm`; evaluation is its own stage).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rlsd.configs import DEFAULT_CONFIG
from rlsd.train.config import TrainConfig, load_config
from rlsd.train.trainer import TrainResult, train

if TYPE_CHECKING:
    from rlsd.context.snapshot import Snapshot

#: the train reward of an arm's end is the mean of its last few steps (one step is noisy)
LAST_STEPS = 3


class ArmSummary(BaseModel):
    algo: str
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    train_reward_first: float
    train_reward_last: float  # mean of the last LAST_STEPS steps
    entropy_last: float
    seconds_per_step: float
    output_dir: str

    @classmethod
    def of(cls, algo: str, r: TrainResult) -> ArmSummary:
        m = r.metrics
        nan = float("nan")
        k = max(1, min(LAST_STEPS, len(m)))
        return cls(
            algo=algo,
            accuracy_before=r.eval_before.accuracy if r.eval_before else None,
            accuracy_after=r.eval_after.accuracy if r.eval_after else None,
            train_reward_first=m[0]["reward/mean"] if m else nan,
            train_reward_last=sum(x["reward/mean"] for x in m[-k:]) / k if m else nan,
            entropy_last=m[-1].get("actor/entropy", nan) if m else nan,
            seconds_per_step=sum(x["time/step"] for x in m) / max(len(m), 1),
            output_dir=str(r.output_dir),
        )

    def metrics(self) -> dict[str, float]:
        """The summary as run metrics (NaN left out: MLflow would store it as a value)."""
        values = {
            "reward_first": self.train_reward_first,
            "reward_last": self.train_reward_last,
            "entropy_last": self.entropy_last,
            "seconds_per_step": self.seconds_per_step,
        }
        return {f"summary.{k}": v for k, v in values.items() if v == v}


class ArmOutcome(BaseModel):
    arm: str
    run_id: str
    output_dir: str
    final_model_dir: str | None
    summary: ArmSummary
    model_source: str = ""
    model_digest: str = ""


def arm_config(
    config_path: str | Path | None,
    overrides: dict[str, Any],
    arm: str,
    snapshot: Snapshot,
    domains: Sequence[str] | None,
    out_dir: Path,
) -> TrainConfig:
    """The trainer config of one pipeline arm: the same for every arm but the method."""
    return load_config(
        config_path or DEFAULT_CONFIG,
        {
            **overrides,
            "algo.name": arm,
            "task.dataset": str(snapshot.path),  # recorded with the run: how to reproduce it
            "task.domains": list(domains) if domains else None,
            "task.sandbox_verifiers": True,
            "eval.before": False,  # evaluation is its own stage, on the same tasks for every model
            "eval.after": False,
            "run.output_dir": str(out_dir),
        },
    )


def train_arm(
    tcfg: TrainConfig, snapshot: Snapshot, run_id: str, sinks: Sequence[Any] = ()
) -> ArmOutcome:
    """Train one arm on an already-loaded snapshot; resumes from its checkpoints if any."""
    out_dir = Path(tcfg.run.output_dir)
    result = train(
        tcfg,
        resume=(out_dir / "checkpoints").exists(),
        sinks=tuple(sinks),
        show_progress=True,
        snapshot=snapshot,
    )
    return ArmOutcome(
        arm=tcfg.algo.name,
        run_id=run_id,
        output_dir=str(out_dir),
        final_model_dir=str(result.final_model_dir) if result.final_model_dir else None,
        summary=ArmSummary.of(tcfg.algo.name, result),
        model_source=result.model_source,
        model_digest=result.model_digest,
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
        cfg.algo.name = name
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
    (out / "comparison.json").write_text(json.dumps([s.model_dump() for s in summaries], indent=2))
    return summaries
