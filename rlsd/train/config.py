"""The training configuration: one YAML file, validated here; field descriptions are the docs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlsd.algo.methods import METHODS, method_names
from rlsd.configs.loading import load_yaml_model
from rlsd.models.config import ModelConfig
from rlsd.rollout.base import SamplingSettings
from rlsd.tasks import (
    ArithmeticTaskConfig,
    BarChartTaskConfig,
    EasyVQATaskConfig,
    ShapeCountTaskConfig,
)

PAPER_TEACHER_TEMPLATE = (
    "{question}\n\nHere is a reference solution:\n{privileged_context}\n\n"
    "After understanding the reference solution, please try to solve this problem using your own "
    "approach."
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskConfig(_Strict):
    generator: Literal["arithmetic", "bar_chart", "shape_count", "easy_vqa"] = Field(
        "arithmetic",
        description="Which task source feeds training and evaluation (the visual ones need a "
        "vision-language model).",
    )
    arithmetic: ArithmeticTaskConfig = Field(
        default_factory=ArithmeticTaskConfig, description="Settings of the arithmetic generator."
    )
    bar_chart: BarChartTaskConfig = Field(
        default_factory=BarChartTaskConfig, description="Bar charts: values, largest, differences."
    )
    shape_count: ShapeCountTaskConfig = Field(
        default_factory=ShapeCountTaskConfig, description="Images of shapes to count."
    )
    easy_vqa: EasyVQATaskConfig = Field(
        default_factory=EasyVQATaskConfig, description="The easy-vqa package's questions."
    )
    verifier: str | None = Field(
        None,
        description="Score every task with this registered verifier instead of the one each task "
        "names (None = the task's own).",
    )
    dataset: str | None = Field(
        None,
        description="A snapshot made by `rlsd ingest` (its folder, or a snapshots folder: its "
        "latest); replaces the generator.",
    )
    domains: list[str] | None = Field(
        None, description="Use only these domains of the snapshot (None = all)."
    )
    sandbox_verifiers: bool = Field(
        False,
        description="Run the verifier inventory and score with the sandboxed verifiers (Docker, "
        "else the local sandbox) for tasks whose verifier is not built in.",
    )


class AlgoConfig(_Strict):
    name: str = Field(
        "rlsd",
        description="The training method, a name in rlsd.algo.methods: grpo: uniform credit (the "
        "control arm); rlsd: verifier direction + self-teacher token magnitude, Δ = log P_T - "
        "log P_S (with teacher.context=none: the RLSD-null arm, same template, no privileged "
        "text); opsd: JSD distillation to the self-teacher (baseline); opd: on-policy "
        "distillation from a separate model (teacher.model), per-token advantage log π_T - "
        "log π_S in the PPO surrogate, no reward; rlsd-contrast: RLSD's sign/clip/λ rule with "
        "Δ_c = log P_T(privileged prompt) - log P_T(same template, context removed), so the "
        "template's wording cancels and only the privileged context moves credit (two "
        "teacher forwards).",
    )
    advantage: Literal["grpo", "dr_grpo"] = Field(
        "grpo", description="grpo: (R - mean) / (std + 1e-6); dr_grpo: R - mean (no std)."
    )
    lam0: float = Field(0.5, ge=0.0, le=1.0, description="RLSD λ_0, the initial credit mix.")
    lambda_decay_steps: int = Field(
        50, ge=1, description="RLSD K_decay: λ falls linearly to 0 at this step (then plain GRPO)."
    )
    eps_w: float = Field(0.2, ge=0.0, lt=1.0, description="RLSD weight clip: w ∈ [1-ε_w, 1+ε_w].")
    clip_low: float = Field(0.2, ge=0.0, description="PPO ratio clip below 1.")
    clip_high: float = Field(0.28, ge=0.0, description="PPO ratio clip above 1 (clip-higher).")
    dual_clip: float | None = Field(3.0, description="Dual-clip C for negative advantages.")
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = Field(
        "token-mean", description="How per-token losses are reduced over the batch."
    )
    opsd_beta: float = Field(0.5, gt=0.0, lt=1.0, description="OPSD generalised-JSD β.")

    @field_validator("name")
    @classmethod
    def _registered_method(cls, name: str) -> str:
        # checked against the registry when the config is read, so a typo fails before any
        # model is loaded, and a method registered in code needs no edit here
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; valid: {method_names()}")
        return name


class TeacherConfig(_Strict):
    sync_interval: int = Field(
        0,
        ge=0,
        description="0: the teacher is the live policy (no extra memory); N: a frozen copy of the "
        "policy refreshed every N optimizer steps (paper: 10).",
    )
    prompt_template: str = Field(
        PAPER_TEACHER_TEMPLATE,
        description="The teacher's last user turn; {question} is the student's last user turn, "
        "{privileged_context} the task's privileged context.",
    )
    temperature: float | None = Field(
        None,
        gt=0.0,
        description="Temperature of the teacher's pass only (its log-probs or distribution); "
        "None = sampling's. The student's side always uses the sampling temperature.",
    )
    context: Literal["privileged", "none"] = Field(
        "privileged",
        description="What fills the template's {privileged_context}: the task's privileged "
        "context, or none (the empty string, so the teacher reads exactly the template's own "
        "wording and nothing else; a placeholder such as 'no solution given' would be new "
        "words that shift log-probs themselves). algo.name=rlsd with context=none is the "
        "RLSD-null arm: what the template alone does to the credit. rlsd-contrast always runs "
        "both and refuses none.",
    )
    prompt: Literal["method", "template", "student"] = Field(
        "method",
        description="The teacher's prompt: method = the method's own choice (the template for "
        "the self-teacher methods, the student's prompt for opd); template = the teacher "
        "template above; student = exactly the student's prompt (no privileged context).",
    )
    model: str | None = Field(
        None,
        description="A separate teacher model, named like model.name_or_path and loaded like the "
        "policy (same dtype and attention), frozen, never synced: opd requires it; for the "
        "other teacher methods it replaces the copy of the policy. Its tokenizer vocabulary "
        "must equal the policy's (the teacher scores the student's token ids), else the run is "
        "refused. None = the self-teacher (the policy, see sync_interval).",
    )

    @field_validator("prompt_template")
    @classmethod
    def _template_fields(cls, template: str) -> str:
        for key in ("{question}", "{privileged_context}"):
            if key not in template:
                raise ValueError(f"must contain {key}")
        return template


class RolloutConfig(_Strict):
    engine: Literal["hf", "vllm"] = Field(
        "hf",
        description="hf: sampling from the live transformers module; vllm: vLLM in this "
        "process, weights synced after each step (needs vllm: on CPU `make setup-vllm`, "
        "on CUDA rlsd[gpu]; single process, text models, no LoRA).",
    )
    decode: Literal["loop", "generate"] = Field(
        "loop",
        description="hf engine, text models: loop = the product's group-aware decode loop (each "
        "prompt prefilled once, finished rows dropped); generate = transformers' generate.",
    )
    group_size: int = Field(8, ge=2, description="G: completions sampled per prompt.")
    prompts_per_step: int = Field(4, ge=1, description="Prompts per optimizer step (global).")
    max_batch_sequences: int = Field(
        64, ge=1, description="Most sequences per generate call (memory bound; CPU likes 32-64)."
    )
    sampling: SamplingSettings = Field(
        default_factory=lambda: SamplingSettings(temperature=1.0, max_new_tokens=64),
        description="Sampling settings of training rollouts.",
    )


class OptimConfig(_Strict):
    lr: float = Field(1e-5, gt=0.0, description="AdamW learning rate (constant, no warm-up).")
    weight_decay: float = Field(0.01, ge=0.0, description="AdamW weight decay.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    eps: float = Field(1e-8, gt=0.0, description="AdamW epsilon.")
    grad_clip: float = Field(1.0, gt=0.0, description="Global gradient-norm clip.")
    warmup_steps: int = Field(0, ge=0, description="Linear warm-up steps before the constant lr.")


class EvalConfig(_Strict):
    num_tasks: int = Field(64, ge=0, description="Held-out tasks evaluated (greedy); 0 = skip.")
    max_new_tokens: int = Field(64, ge=1, description="Longest evaluation completion.")
    before: bool = Field(True, description="Evaluate the model before training.")
    after: bool = Field(True, description="Evaluate the model after training.")
    every: int = Field(0, ge=0, description="Also evaluate every N steps (0 = never).")


class RunConfig(_Strict):
    steps: int = Field(20, ge=1, description="Optimizer steps (one per rollout batch).")
    seed: int = Field(0, description="Seed of data order, sampling and initialisation.")
    micro_batch_sequences: int = Field(
        32, ge=1, description="Sequences per forward/backward chunk (gradients accumulate)."
    )
    shared_prefix: bool = Field(
        True,
        description="Encode each group's prompt once (student and teacher) and let its G responses "
        "attend to it; the same log-probs and gradients as encoding it G times, which False does.",
    )
    logprob_chunk_tokens: int = Field(
        1024, ge=1, description="Tokens per chunk of the vocabulary projection (memory bound)."
    )
    output_dir: str = Field("runs/latest", description="Run folder: config, metrics, checkpoints.")
    checkpoint_every: int = Field(
        5, ge=0, description="Checkpoint every N steps (0 = only at end)."
    )
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints kept (oldest deleted).")
    credit_samples: int = Field(
        4,
        ge=0,
        description="RLSD: responses per sampled step whose per-token credit is written to "
        "credit_samples.jsonl (the token-credit report); 0 = none.",
    )
    credit_sample_every: int = Field(
        5, ge=1, description="Write credit samples at step 0 and every this many steps."
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; None = default.")
    reuse_freed_memory: bool = Field(
        True,
        description="Linux/glibc: keep large freed blocks in the heap for the next step instead of "
        "unmapping them (rlsd.runtime.allocator); faster CPU steps, the same results.",
    )


class TrainConfig(_Strict):
    """Everything one training run needs."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    run: RunConfig = Field(default_factory=RunConfig)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file, field and value."""


def _config_error(path: Path, detail: str) -> ConfigError:
    if detail == "no such file":
        detail = "no such config file"
    return ConfigError(f"{path}: {detail}")


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None
) -> TrainConfig:
    """Read a YAML config (or the defaults) and apply ``key.sub=value`` overrides."""
    return load_yaml_model(path, TrainConfig, error=_config_error, overrides=overrides, base={})


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
