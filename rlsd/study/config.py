"""A study's design, fixed before any run: the arms, the paired seeds, the budget, the
evaluation schedule, the held-out set, the primary endpoint and its threshold.

The design is a YAML file validated here. Its digest (:func:`design_digest`) is written to the
study folder before the first run, and every later invocation refuses a design that differs:
a changed design is a new study, so no result can be re-analysed under rules chosen after
seeing it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlsd.configs.loading import load_yaml_model


class StudyError(ValueError):
    """The study cannot run as designed; the message names the file, the field and the value."""


class Endpoint(BaseModel):
    """The one comparison the study is designed to answer (others are reported, not tested)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arm: str = Field(description="The arm under test, e.g. rlsd.")
    versus: str = Field(description="The arm it is compared with, e.g. grpo (paired by seed).")
    metric: str = Field(
        "heldout_accuracy", description="Greedy held-out accuracy at the final evaluation."
    )
    threshold: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="The claim is supported when the interval's lower bound of arm - versus "
        "exceeds this (0: better than the control).",
    )


class StudyDesign(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="Folder name of the study.")
    description: str = Field("", description="What the study asks, in a sentence.")
    train_config: str | None = Field(
        None, description="Trainer YAML every arm starts from; None = the embedded defaults."
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Dotted trainer overrides applied to every arm."
    )
    arms: dict[str, dict[str, Any]] = Field(
        min_length=1,
        description="Arm name -> its own dotted overrides (at least algo.name); the only "
        "differences between arms.",
    )
    seeds: list[int] = Field(
        min_length=1,
        description="Paired seeds: seed s gives every arm the same data order and sampling "
        "seeds (run.seed = s).",
    )
    steps: int = Field(ge=1, description="Optimizer steps per run.")
    eval_every: int = Field(ge=1, description="Greedy evaluation every N steps (and at 0).")
    eval_tasks: int = Field(ge=1, description="Held-out problems per evaluation (the same set).")
    baseline: str = Field("grpo", description="The arm every other is paired against.")
    endpoint: Endpoint
    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="Two-sided interval level.")
    bootstrap_samples: int = Field(10_000, ge=100, description="Hierarchical bootstrap resamples.")
    bootstrap_seed: int = Field(20261203, ge=0, description="So the analysis is reproducible.")
    runs_dir: str = Field(
        "runs/studies",
        description="Where each run's checkpoints and weights go (not committed); the study "
        "folder keeps only the small outputs.",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @model_validator(mode="after")
    def _arms_known(self) -> StudyDesign:
        for name, overrides in self.arms.items():
            if "algo.name" not in overrides:
                raise ValueError(f"arms.{name}: name its method (algo.name)")
        for where, arm in (
            ("baseline", self.baseline),
            ("endpoint.arm", self.endpoint.arm),
            ("endpoint.versus", self.endpoint.versus),
        ):
            if arm not in self.arms:
                raise ValueError(f"{where} = {arm!r} is not an arm ({', '.join(self.arms)})")
        if self.steps % self.eval_every:
            raise ValueError(
                f"steps = {self.steps} is not a multiple of eval_every = {self.eval_every}: the "
                "final step would not be evaluated on the schedule"
            )
        return self

    @property
    def eval_steps(self) -> list[int]:
        return list(range(0, self.steps + 1, self.eval_every))


def design_digest(design: StudyDesign) -> str:
    """sha256 of the design's canonical JSON (defaults included: the effective design)."""
    text = json.dumps(design.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def load_design(path: Path | str) -> StudyDesign:
    def error(file: Path, detail: str) -> StudyError:
        return StudyError(f"{file}: {detail}")

    return load_yaml_model(path, StudyDesign, what="study design", error=error)
