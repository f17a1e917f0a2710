"""The trainer: rollout -> verify -> teacher pass -> advantages -> loss -> AdamW step.

One optimizer step per rollout batch (on-policy), so pi_old is the policy that sampled and its
log-probs are the detached log-probs of the update's own forward: no separate old-log-prob pass.
Data parallel and sharded through accelerate (:mod:`rlsd.train.distributed`): the policy is
prepared by ``Accelerator.prepare`` (DDP, or FSDP on accelerators), each rank samples a slice of
the prompts, losses are normalised by global token counts and the gradients are synchronised by
DDP's (FSDP's) own reduction, so N processes give the same update as one process with the same
global batch; checkpoints are accelerate's state.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate import Accelerator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from rlsd import algo
from rlsd.algo import LossInputs, Method, MethodSettings, TeacherOutput, TeacherPass
from rlsd.configs.loading import flatten
from rlsd.models import LoadedPolicy, load_policy
from rlsd.rollout import HFGenerateEngine, RolloutBatch, derive_seed
from rlsd.runtime import keep_freed_memory
from rlsd.tasks import Task
from rlsd.train import distributed as dist
from rlsd.train.batch import tasks_for_step
from rlsd.train.checkpoint import (
    CheckpointError,
    apply_checkpoint,
    latest_checkpoint,
    resume_checkpoint,
    save_checkpoint,
    unwrapped_weights_hooks,
)
from rlsd.train.config import TrainConfig, dump_config
from rlsd.train.data import DatasetError, eval_subset, load_run_tasks, resume_dataset_problem
from rlsd.train.evaluate import EvalResult, evaluate
from rlsd.train.forward import ResponseIndex, output_head
from rlsd.train.metrics import JsonlSink, MetricsSink, MultiSink, read_metrics
from rlsd.train.prompts import PromptEncoder, hidden_plain, hidden_shared_prefix
from rlsd.train.rewards import score_responses
from rlsd.train.teacher import Teacher, build_teacher, check_teacher_config, teacher_views

if TYPE_CHECKING:
    from rlsd.context.snapshot import Snapshot

log = logging.getLogger("rlsd.train")

# Fields that may change between a run and its resumption without changing its trajectory.
_RESUME_FREE = {
    "run.steps",
    "run.output_dir",
    "run.checkpoint_every",
    "run.keep_checkpoints",
    "run.num_threads",
    "run.reuse_freed_memory",
    "run.credit_samples",
    "run.credit_sample_every",
    "task.sandbox_verifiers",
    "eval",
}


class ResumeError(RuntimeError):
    pass


@dataclass
class TrainResult:
    output_dir: Path
    metrics: list[dict]
    eval_before: EvalResult | None
    eval_after: EvalResult | None
    final_model_dir: Path | None
    model_source: str = ""
    model_digest: str = ""


@dataclass
class Session:
    """Everything a step needs; built once by ``setup``."""

    cfg: TrainConfig
    acc: Accelerator
    policy: LoadedPolicy
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    teacher: Teacher | None
    engine: Any
    train_tasks: list[Task]
    heldout_tasks: list[Task]
    output_dir: Path
    #: the configured training method (``cfg.algo.name``), looked up once, and its settings
    method: Method
    settings: MethodSettings
    start_step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    prompts: PromptEncoder | None = None
    #: what ``Accelerator.prepare`` returned for :class:`~rlsd.train.distributed.PolicyLoss`
    #: (DDP / FSDP wrapped, or the module itself in one process)
    prepared: torch.nn.Module | None = None

    def full_parameters(self):
        """Whole parameters for calls outside the prepared forward (no-op unless FSDP)."""
        return dist.full_parameters(self.acc, self.prepared)

    @property
    def model(self) -> torch.nn.Module:
        return self.policy.model

    @property
    def pad_id(self) -> int:
        return self.policy.tokenizer.pad_token_id


# --------------------------------------------------------------------------------------------
# The step, as a story


def _now() -> float:
    """A phase boundary: CUDA work is asynchronous, so wait for it before reading the clock."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def train_step(s: Session, step: int) -> dict[str, float]:
    """One optimizer step (``step`` is 0-based); returns the step's metrics, reduced over ranks."""
    cfg = s.cfg
    t_step = _now()
    if s.teacher is not None:
        s.teacher.maybe_sync(step)
    tasks = local_tasks(s, step)
    rollout = rollout_phase(s, tasks, step)
    t0 = _now()
    group_tasks = [t for t in tasks for _ in range(cfg.rollout.group_size)]
    results = score_responses(rollout.texts, group_tasks, cfg.task.verifier)
    t_verify = _now() - t0
    rewards = torch.tensor([r.score for r in results], dtype=torch.float32)
    advantages = algo.get_advantage_estimator(cfg.algo.advantage)(rewards, cfg.rollout.group_size)
    index = ResponseIndex.build(rollout.response_ids)
    t0 = _now()
    teacher_out = teacher_phase(s, tasks, rollout, index, advantages)
    t_teacher = _now() - t0
    lam = algo.lambda_schedule(step, cfg.algo.lam0, cfg.algo.lambda_decay_steps)
    t0 = _now()
    capture = (
        cfg.run.credit_samples
        if s.method.teacher_scales_advantage
        and s.acc.is_main_process
        and step % cfg.run.credit_sample_every == 0
        else 0
    )
    update = update_phase(s, tasks, rollout, advantages, teacher_out, index, lam, capture)
    s.engine.sync_weights(s.model)  # the next rollout samples from the updated policy
    t_update = _now() - t0
    t_total = _now() - t_step
    if update.credit_rows:
        write_credit_samples(
            s, step, update.credit_rows, group_tasks, rollout, rewards, advantages, lam
        )

    return step_metrics(
        s,
        rollout,
        rewards,
        torch.tensor([r.passed for r in results], dtype=torch.float32),
        update,
        lam,
        timings={
            "time/generate": rollout.timings["generate"],
            # the decode loop's split (0 where the engine does not report it)
            "time/generate_prefill": rollout.timings.get("prefill", 0.0),
            "time/generate_decode": rollout.timings.get("decode", 0.0),
            "time/verify": t_verify,
            "time/teacher": t_teacher,
            "time/old_logprob": 0.0,  # on-policy: pi_old is the detached update forward
            "time/update": t_update,
            "time/step": t_total,
        },
    )


# --------------------------------------------------------------------------------------------
# Phases


def local_tasks(s: Session, step: int) -> list[Task]:
    cfg = s.cfg
    world, rank = s.acc.num_processes, s.acc.process_index
    batch = tasks_for_step(s.train_tasks, step, cfg.rollout.prompts_per_step, cfg.run.seed)
    per_rank = cfg.rollout.prompts_per_step // world
    return batch[rank * per_rank : (rank + 1) * per_rank]


def rollout_phase(s: Session, tasks: list[Task], step: int) -> RolloutBatch:
    cfg = s.cfg
    prompts = [s.prompts.student(t) for t in tasks]
    per_rank = cfg.rollout.prompts_per_step // s.acc.num_processes
    with s.full_parameters():
        batch = s.engine.generate(
            prompts,
            cfg.rollout.group_size,
            cfg.rollout.sampling,
            seed=derive_seed(cfg.run.seed, "rollout", step),
            group_offset=s.acc.process_index * per_rank,
        )
    # the forward passes need the whole prompts (vision tensors too), not only their ids
    batch.prompt_inputs = prompts
    return batch


def _positive(t: float | None, fallback: float = 1.0) -> float:
    return t if t is not None and t > 0 else fallback


def method_settings(cfg: TrainConfig) -> MethodSettings:
    """The method's hyperparameters. The student's side is always taken at the sampling
    temperature (greedy sampling, 0, scores at 1); ``teacher.temperature`` sets the teacher's
    pass only and falls back to the student's."""
    student_t = _positive(cfg.rollout.sampling.temperature)
    a = cfg.algo
    return MethodSettings(
        temperature=student_t,
        teacher_temperature=_positive(cfg.teacher.temperature, student_t),
        clip_low=a.clip_low,
        clip_high=a.clip_high,
        dual_clip=a.dual_clip,
        loss_agg=a.loss_agg,
        eps_w=a.eps_w,
        opsd_beta=a.opsd_beta,
        logprob_chunk_tokens=cfg.run.logprob_chunk_tokens,
    )


@torch.no_grad()
def teacher_phase(
    s: Session,
    tasks: list[Task],
    rollout: RolloutBatch,
    index: ResponseIndex,
    advantages: torch.Tensor | None = None,
) -> TeacherOutput:
    """The teacher pass the method asks for (``s.method.teacher``), over the teacher's prompts.

    ``TOKEN_LOGPROBS``: teacher log-probs ``[N, T]`` of the sampled tokens. ``DISTRIBUTION``:
    teacher hidden states ``[M, H]`` with the teacher module's own output head.
    ``CONTRAST_LOGPROBS``: token log-probs under the privileged and under the null-context
    prompt (two forwards). ``NONE``: no forward at all. Which prompts are read is
    :func:`rlsd.train.teacher.teacher_views` of the method and ``cfg.teacher``.

    When the teacher only rescales advantages (``teacher_scales_advantage``) and ``advantages``
    are given, groups whose advantages are all zero (every response scored alike) are not
    scored. Their tokens' credit is A * w = 0 whatever the teacher says, and the credit
    metrics count A != 0 tokens only, so the update and its metrics are unchanged; their
    entries stay 0.
    """
    cfg = s.cfg
    kind = s.method.teacher
    if kind is TeacherPass.NONE:
        return TeacherOutput(kind)
    module = s.teacher.module
    G = cfg.rollout.group_size
    groups = list(range(len(tasks)))
    if s.method.teacher_scales_advantage and advantages is not None:
        informative = (advantages.view(-1, G) != 0).any(dim=1).tolist()
        groups = [g for g in groups if informative[g]]
    rows = [g * G + j for g in groups for j in range(G)]
    responses = [rollout.response_ids[r] for r in rows]
    views = teacher_views(s.method, cfg.teacher)
    template = cfg.teacher.prompt_template
    if kind is not TeacherPass.DISTRIBUTION and not groups:
        zeros = [torch.zeros(index.mask.shape) for _ in views]
        return _token_logprob_output(kind, zeros)
    sub = ResponseIndex.build(responses)
    was_training = module.training
    module.eval()
    per_view = []
    with s.full_parameters():
        # the teacher's own head: a frozen teacher's logits must not use the live student's
        weight, bias = output_head(module)
        try:
            for view in views:
                prefixes = [s.prompts.view(tasks[g], view, template) for g in groups]
                hidden = _teacher_hidden(s, module, prefixes, responses)
                if kind is TeacherPass.DISTRIBUTION:
                    return TeacherOutput(kind, hidden=hidden, head_weight=weight, head_bias=bias)
                logp, _ = algo.token_logprobs_from_hidden(
                    hidden,
                    weight,
                    sub.targets.to(hidden.device),
                    bias,
                    s.settings.teacher_temperature,
                    cfg.run.logprob_chunk_tokens,
                    return_entropy=False,
                )
                out = torch.zeros(index.mask.shape)
                scored = sub.scatter(logp.float().cpu())
                out[torch.tensor(rows, dtype=torch.long), : scored.shape[1]] = scored
                per_view.append(out)
        finally:
            module.train(was_training)
    return _token_logprob_output(kind, per_view)


def _teacher_hidden(
    s: Session, module: torch.nn.Module, prefixes: list[Any], responses: list[list[int]]
) -> torch.Tensor:
    """The teacher's hidden states ``[M, H]`` at the response tokens, in chunks of groups."""
    cfg = s.cfg
    G = cfg.rollout.group_size
    groups_per_chunk = max(1, cfg.run.micro_batch_sequences // G)
    pieces = []
    for g0 in range(0, len(prefixes), groups_per_chunk):
        chunk_prefixes = prefixes[g0 : g0 + groups_per_chunk]
        chunk_resp = responses[g0 * G : (g0 + len(chunk_prefixes)) * G]
        if cfg.run.shared_prefix:
            pieces.append(hidden_shared_prefix(module, chunk_prefixes, chunk_resp, G, s.pad_id))
        else:
            per_seq = [p for p in chunk_prefixes for _ in range(G)]
            pieces.append(hidden_plain(module, per_seq, chunk_resp, s.pad_id))
    return torch.cat(pieces, dim=0)


def _token_logprob_output(kind: TeacherPass, per_view: list[torch.Tensor]) -> TeacherOutput:
    """A token-log-prob pass's output; the views are in :func:`teacher_views` order."""
    if kind is TeacherPass.CONTRAST_LOGPROBS:
        return TeacherOutput(kind, token_logprobs=per_view[0], baseline_logprobs=per_view[1])
    return TeacherOutput(kind, token_logprobs=per_view[0])


@dataclass
class UpdateStats:
    loss: float
    grad_norm: float
    sums: dict[str, float]
    weights: dict[str, float]
    entropy_sum: float
    num_tokens: int
    #: (row, Â_t over the row's response tokens) for a few rows, for the token-credit report
    credit_rows: list[tuple[int, list[float]]] = field(default_factory=list)


def update_phase(
    s: Session,
    tasks: list[Task],
    rollout: RolloutBatch,
    advantages: torch.Tensor,
    teacher_out: TeacherOutput | None,
    index: ResponseIndex,
    lam: float,
    capture_credit: int = 0,
) -> UpdateStats:
    """Forward and backward the method's loss over micro-batches of whole groups; one step."""
    cfg = s.cfg
    model = s.model
    G = cfg.rollout.group_size
    group_prompts = rollout.prompt_inputs or rollout.prompt_ids
    prompts = [p for p in group_prompts for _ in range(G)]
    responses = rollout.response_ids
    global_tokens = max(1, int(s.acc.reduce(torch.tensor(index.num_tokens), "sum").item()))
    global_seqs = cfg.rollout.prompts_per_step * G
    device = s.acc.device

    model.train()
    s.optimizer.zero_grad(set_to_none=True)
    total_loss, entropy_sum = 0.0, 0.0
    credit_rows: list[tuple[int, list[float]]] = []
    sums: dict[str, float] = {}
    weights: dict[str, float] = {}
    token_offset = 0
    logprob_diff_max = 0.0
    # Micro-batches hold whole groups, so a group's prompt is encoded once (shared prefix).
    mb = max(1, cfg.run.micro_batch_sequences // G) * G
    batches = []
    for start in range(0, len(responses), mb):
        rows = list(range(start, min(len(responses), start + mb)))
        sub = ResponseIndex.build([responses[i] for i in rows])
        if sub.num_tokens:
            batches.append((start, rows, sub))
    if not batches:  # no tokens on this rank: still take part in the gradient reduction
        dist.backward(s.acc, s.prepared(dist.touch_all))
    for k, (start, rows, sub) in enumerate(batches):
        mask = sub.mask.to(device)
        adv = advantages[rows].to(device)
        tokens = slice(token_offset, token_offset + sub.num_tokens)
        teacher = (
            teacher_out.micro_batch(rows, mask.shape[1], tokens, device)
            if teacher_out is not None
            else None
        )
        compute = partial(
            _micro_batch_loss,
            s=s,
            prompts=(
                group_prompts[start // G : (start + len(rows)) // G]
                if cfg.run.shared_prefix
                else [prompts[i] for i in rows]
            ),
            responses=[responses[i] for i in rows],
            sub=sub,
            inputs={
                "mask": mask,
                "advantages": adv,
                "teacher": teacher,
                "lam": lam,
                "norm_tokens": global_tokens,
                "norm_seqs": global_seqs,
            },
        )
        # gradients are reduced across ranks once, in the last micro-batch's backward
        last = k == len(batches) - 1
        with nullcontext() if last else s.acc.no_sync(s.prepared):
            out = s.prepared(compute)
            dist.backward(s.acc, out.loss)
        if out.token_advantages is not None:
            for j, row in enumerate(rows):
                if len(credit_rows) < capture_credit and float(adv[j]) != 0.0:
                    n = int(mask[j].sum())
                    credit_rows.append((row, out.token_advantages[j, :n].detach().float().tolist()))
        for stats, w in out.stats:
            _accumulate(sums, weights, stats, w)
        if rollout.logprobs is not None and out.logprobs is not None:
            diff_sum, diff_max = _logprob_diff(out.logprobs, [rollout.logprobs[i] for i in rows])
            _accumulate(
                sums,
                weights,
                {"rollout/logprob_diff_mean": diff_sum / sub.num_tokens},
                float(sub.num_tokens),
            )
            logprob_diff_max = max(logprob_diff_max, diff_max)
        total_loss += float(out.loss.detach())
        entropy_sum += float(out.entropy.detach().sum())
        token_offset += sub.num_tokens

    params = [p for p in s.prepared.parameters() if p.requires_grad]
    grad_norm = dist.clip_grad_norm(s.acc, params, cfg.optim.grad_clip)
    skipped = not math.isfinite(grad_norm)
    if skipped:
        # A non-finite gradient would poison the weights and AdamW's moments for good: drop this
        # batch's update, keep the step count (data and seeds stay aligned with other runs).
        log.warning("non-finite gradient norm (%s): optimizer step skipped", grad_norm)
        s.optimizer.zero_grad(set_to_none=True)
    else:
        s.optimizer.step()
    with warnings.catch_warnings():  # the schedule follows steps taken, skipped ones included
        warnings.simplefilter("ignore", UserWarning)
        s.scheduler.step()
    _accumulate(sums, weights, {"actor/skipped_step": float(skipped)}, 1.0)
    if rollout.logprobs is not None:
        _accumulate(sums, weights, {"rollout/logprob_diff_max": logprob_diff_max}, 1.0)
    return UpdateStats(
        total_loss, grad_norm, sums, weights, entropy_sum, index.num_tokens, credit_rows
    )


def write_credit_samples(
    s: Session,
    step: int,
    credit_rows: list[tuple[int, list[float]]],
    group_tasks: list[Task],
    rollout: RolloutBatch,
    rewards: torch.Tensor,
    advantages: torch.Tensor,
    lam: float,
) -> None:
    """Append a few responses' per-token credit to ``credit_samples.jsonl`` (the report's input).

    ``weight`` is Â_t / A: the multiplier RLSD put on the verifier's verdict for that token
    (1 everywhere under GRPO). No privileged text is written, only the student's side.
    """
    tok = s.policy.tokenizer
    lines = []
    for row, token_adv in credit_rows:
        a = float(advantages[row])
        ids = rollout.response_ids[row][: len(token_adv)]
        task = group_tasks[row]
        lines.append(
            json.dumps(
                {
                    "step": step,
                    "task_id": task.id,
                    "prompt_preview": task.prompt[-1].content[:300],
                    "reward": float(rewards[row]),
                    "seq_advantage": a,
                    "lam": lam,
                    "eps_w": s.cfg.algo.eps_w,
                    "tokens": [tok.decode([int(t)]) for t in ids],
                    "token_advantage": token_adv,
                    "weight": [x / a for x in token_adv],
                }
            )
        )
    with (s.output_dir / "credit_samples.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def _logprob_diff(recomputed: torch.Tensor, sampled: list[list[float]]) -> tuple[float, float]:
    """(sum, max) over tokens of |engine log-prob - recomputed log-prob|: how far the sampling
    engine's policy is from the one being updated (0 when on-policy, up to numerics)."""
    total, worst = 0.0, 0.0
    for j, lp in enumerate(sampled):
        if not lp:
            continue
        d = (recomputed[j, : len(lp)].float().cpu() - torch.tensor(lp)).abs()
        total += float(d.sum())
        worst = max(worst, float(d.max()))
    return total, worst


def _accumulate(sums: dict, weights: dict, stats: dict[str, float], weight: float) -> None:
    for k, v in stats.items():
        sums[k] = sums.get(k, 0.0) + float(v) * weight
        weights[k] = weights.get(k, 0.0) + weight


def _micro_batch_loss(
    policy: torch.nn.Module,
    *,
    s: Session,
    prompts: list[Any],
    responses: list[list[int]],
    sub: ResponseIndex,
    inputs: dict[str, Any],
) -> Any:
    """One micro-batch's method loss, run inside the prepared module's forward
    (:class:`~rlsd.train.distributed.PolicyLoss`): hidden states, output head, method."""
    cfg = s.cfg
    if cfg.run.shared_prefix:
        hidden = hidden_shared_prefix(policy, prompts, responses, cfg.rollout.group_size, s.pad_id)
    else:
        hidden = hidden_plain(policy, prompts, responses, s.pad_id)
    weight, bias = output_head(policy)
    return s.method.loss(
        LossInputs(
            hidden=hidden,
            weight=weight,
            bias=bias,
            targets=sub.targets.to(hidden.device),
            rows=sub.rows,
            cols=sub.cols,
            settings=s.settings,
            norm_len=cfg.rollout.sampling.max_new_tokens,
            **inputs,
        )
    )


def step_metrics(
    s: Session,
    rollout: RolloutBatch,
    rewards: torch.Tensor,
    passed: torch.Tensor,
    update: UpdateStats,
    lam: float,
    timings: dict[str, float],
) -> dict[str, float]:
    """Metrics of the global batch: per-sequence values gathered, per-token ones token-weighted."""
    acc, G = s.acc, s.cfg.rollout.group_size
    lengths = torch.tensor([len(r) for r in rollout.response_ids], dtype=torch.float32)
    clipped = torch.tensor(rollout.truncated, dtype=torch.float32)
    rewards, passed, lengths, clipped = (
        acc.gather(x.to(acc.device)).cpu() for x in (rewards, passed, lengths, clipped)
    )
    keys = sorted(update.sums)
    packed = torch.tensor(
        [update.sums[k] for k in keys]
        + [update.weights[k] for k in keys]
        + [update.entropy_sum, float(update.num_tokens), update.loss],
        dtype=torch.float64,
    )
    packed = acc.reduce(packed.to(acc.device), "sum").cpu()
    n = len(keys)
    sums, wts = packed[:n], packed[n : 2 * n]
    entropy_sum, tokens, loss = packed[2 * n :].tolist()
    groups = rewards.view(-1, G)
    gen_time = acc.reduce(torch.tensor(timings["time/generate"]), "mean").item()
    m = {
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std().item() if rewards.numel() > 1 else 0.0,
        "accuracy": passed.mean().item(),
        "groups/zero_variance_frac": (groups.max(1).values == groups.min(1).values)
        .float()
        .mean()
        .item(),
        "response/length_mean": lengths.mean().item(),
        "response/length_max": lengths.max().item(),
        "response/clipped_frac": clipped.mean().item(),
        "actor/loss": loss,
        "actor/entropy": entropy_sum / max(tokens, 1.0),
        "actor/grad_norm": update.grad_norm,
        "actor/lr": s.scheduler.get_last_lr()[0],
        "rlsd/lambda": lam if s.method.teacher_scales_advantage else 0.0,
        "perf/tokens_per_s": tokens / max(timings["time/step"], 1e-9),
        "perf/generate_tokens_per_s": tokens / max(gen_time, 1e-9),
        "dist/num_processes": float(acc.num_processes),
    }
    for i, k in enumerate(keys):
        m[k] = float(sums[i] / wts[i]) if wts[i] > 0 else 0.0
    for k, v in timings.items():
        m[k] = acc.reduce(torch.tensor(float(v)), "mean").item()
    return m


# --------------------------------------------------------------------------------------------
# Setup, loop, evaluation


def _check_config(cfg: TrainConfig, world: int) -> None:
    if cfg.rollout.prompts_per_step % world != 0:
        raise ValueError(
            f"rollout.prompts_per_step={cfg.rollout.prompts_per_step} must divide evenly over "
            f"{world} processes"
        )
    if cfg.rollout.engine == "vllm" and world > 1:
        raise ValueError("rollout.engine='vllm' is single-process in this version")
    if cfg.rollout.engine == "vllm" and cfg.model.lora is not None:
        # vLLM would sample from the base weights: the adapters live only in the trainer's
        # module, and a sync of merged weights per step is not built, so training would be
        # silently off-policy.
        raise ValueError("rollout.engine='vllm' does not take model.lora: use rollout.engine=hf")


def _resume_conflicts(saved: TrainConfig, current: TrainConfig) -> list[str]:
    a, b = flatten(saved.model_dump(mode="json")), flatten(current.model_dump(mode="json"))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in _RESUME_FREE or key.split(".")[0] in _RESUME_FREE:
            continue
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: checkpoint {a.get(key)!r} vs now {b.get(key)!r}")
    return diffs


def make_engine(cfg: TrainConfig, policy: LoadedPolicy):
    from rlsd.models.vlm import LoadedVLM

    if isinstance(policy, LoadedVLM):
        if cfg.rollout.engine == "vllm":
            raise ValueError("rollout.engine=vllm does not take vision-language policies here")
        from rlsd.rollout.hf_generate_mm import HFGenerateEngineMM

        return HFGenerateEngineMM(policy.model, policy.tokenizer, cfg.rollout.max_batch_sequences)
    if cfg.rollout.engine == "vllm":
        from rlsd.rollout.vllm_engine import VLLMEngine

        # the trainer's dtype, so vLLM's log-probs are those of the weights being trained
        return VLLMEngine(policy.path, dtype=cfg.model.dtype)
    return HFGenerateEngine(
        policy.model, policy.tokenizer, cfg.rollout.max_batch_sequences, cfg.rollout.decode
    )


def _write_image_samples(tasks: list[Task], stores: list[Any], out: Path, n: int = 8) -> None:
    """A contact sheet of a few training images with their questions (logged with the run)."""
    with_images = [t for t in tasks if t.images][:n]
    if not with_images:
        return
    from rlsd.tasks.images import contact_sheet

    captions = [f"{t.id}: {t.prompt[-1].content[:90]}" for t in with_images]
    contact_sheet([t.images[0] for t in with_images], stores, out, captions)


def ensure_verifiers(cfg: TrainConfig, tasks: list[Task], output_dir: Path) -> None:
    """Every verifier the run's tasks name must be registered before the first rollout.

    Built-in verifiers are always there; the drop-in ones under ``verifiers/`` are registered
    from a fresh inventory (built, self-tested, sandboxed) when ``task.sandbox_verifiers`` is on.
    """
    from rlsd.verify import known_verifiers

    names = {cfg.task.verifier} if cfg.task.verifier else {t.verifier for t in tasks}
    missing = sorted(n for n in names if n not in known_verifiers())
    if not missing:
        return
    if not cfg.task.sandbox_verifiers:
        raise DatasetError(
            f"the run's tasks use verifier(s) {missing}, which are not built in: set "
            "task.sandbox_verifiers=true to score them with the sandboxed verifiers under "
            "verifiers/, or keep to built-in ones with task.domains=[...]"
        )
    from rlsd.paths import verifiers_root
    from rlsd.verify.inventory import register_inventory, run_inventory

    inventory = run_inventory(verifiers_root(), out=output_dir / "verifier_inventory.json")
    registered = register_inventory(inventory)
    log.info("sandboxed verifiers: %s", registered)
    not_ready = [n for n in missing if n not in known_verifiers()]
    if not_ready:
        raise DatasetError(f"verifier(s) {not_ready} are not in the inventory under verifiers/")


def setup(
    cfg: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    *,
    snapshot: Snapshot | None = None,
) -> Session:
    """Everything a run needs, built once. ``snapshot``: the run's data, already loaded (e.g. by
    the ingest stage); None = the one ``cfg.task`` names (or its generator)."""
    method = algo.get_method(cfg.algo.name)
    check_teacher_config(method, cfg.teacher)  # before any model is loaded
    acc = dist.make_accelerator()
    _check_config(cfg, acc.num_processes)
    dist.check_sharding(
        acc,
        frozen_teacher=bool(cfg.teacher.sync_interval) and not cfg.teacher.model,
        distribution_teacher=method.teacher is TeacherPass.DISTRIBUTION,
        engine=cfg.rollout.engine,
    )
    if cfg.run.num_threads:
        torch.set_num_threads(cfg.run.num_threads)
    if cfg.run.reuse_freed_memory:
        keep_freed_memory()
    torch.manual_seed(cfg.run.seed)
    output_dir = Path(cfg.run.output_dir)
    ckpt_root = output_dir / "checkpoints"
    latest = latest_checkpoint(ckpt_root)
    if latest is not None and not resume and not overwrite:
        raise ResumeError(
            f"{output_dir} already holds checkpoints (latest {latest.name}); pass --resume to "
            "continue that run or --overwrite to start again"
        )
    resumed = None
    if resume and latest is not None:
        try:  # the newest intact checkpoint; a damaged newer one is skipped with a warning
            resumed = resume_checkpoint(ckpt_root, acc.process_index)
        except CheckpointError as exc:
            raise ResumeError(f"cannot resume {output_dir}: {exc}") from exc
        latest = resumed.path if resumed is not None else None
    if resumed is not None:
        from rlsd.train.config import load_config

        saved = load_config(output_dir / "config.yaml")
        if conflicts := _resume_conflicts(saved, cfg):
            raise ResumeError(
                f"cannot resume {output_dir}: the configuration differs from the checkpoint's:\n  "
                + "\n  ".join(conflicts)
            )
    acc.wait_for_everyone()
    if overwrite and not resume and acc.is_main_process and ckpt_root.exists():
        import shutil

        shutil.rmtree(ckpt_root)

    policy = load_policy(cfg.model)
    policy.model.to(acc.device)
    run_tasks = load_run_tasks(cfg.task, snapshot=snapshot)
    train_tasks, heldout = run_tasks.train, run_tasks.heldout
    if resumed is not None and (
        problem := resume_dataset_problem(
            run_tasks.lineage, resumed.state, output_dir / "dataset.json"
        )
    ):
        raise ResumeError(f"cannot resume {output_dir}: {problem}")
    ensure_verifiers(cfg, train_tasks + eval_subset(heldout, cfg.eval.num_tasks), output_dir)
    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.optim.lr,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        weight_decay=cfg.optim.weight_decay,
    )
    warmup = cfg.optim.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: min(1.0, (k + 1) / warmup) if warmup else 1.0
    )
    teacher = build_teacher(method, cfg, policy)  # a frozen copy is taken of whole weights
    from rlsd.models.vlm import LoadedVLM

    if isinstance(policy, LoadedVLM) and dist.is_fsdp(acc):
        raise dist.ShardingError("vision-language policies train with DDP here, not FSDP")
    # The scheduler is not prepared: accelerate's wrapper steps it once per process per step.
    prepared, optimizer = acc.prepare(dist.PolicyLoss(policy.model), optimizer)
    acc.register_for_checkpointing(scheduler)
    if teacher is not None and teacher.frozen is not None:
        acc.register_for_checkpointing(teacher.frozen)
    unwrapped_weights_hooks(acc)
    session = Session(
        cfg,
        acc,
        policy,
        optimizer,
        scheduler,
        teacher,
        make_engine(cfg, policy),
        train_tasks,
        heldout,
        output_dir,
        prompts=PromptEncoder(policy, run_tasks.image_stores),
        method=method,
        settings=method_settings(cfg),
        prepared=prepared,
    )
    session.extra["dataset_digest"] = run_tasks.lineage.get("digest")
    if resumed is not None:
        state = apply_checkpoint(
            resumed,
            acc,
            policy.model,
            optimizer,
            scheduler,
            teacher.frozen if teacher is not None else None,
        )
        session.start_step = int(state["step"])
        log.info("resumed %s at step %d", resumed.path, session.start_step)
    if acc.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "config.yaml").write_text(dump_config(cfg))
        (output_dir / "dataset.json").write_text(json.dumps(run_tasks.lineage, indent=2) + "\n")
        _write_image_samples(train_tasks, run_tasks.image_stores, output_dir / "image_samples.png")
    acc.wait_for_everyone()
    return session


def run_eval(s: Session) -> EvalResult:
    """Greedy held-out accuracy; ranks split the tasks and the main process merges."""
    cfg = s.cfg
    tasks = eval_subset(s.heldout_tasks, cfg.eval.num_tasks)
    world, rank = s.acc.num_processes, s.acc.process_index
    mine = tasks[rank::world]
    with s.full_parameters():
        res = _evaluate(s, mine)
    if world == 1:
        return res
    from accelerate.utils import gather_object

    rows = gather_object(res.rows)
    lengths = gather_object([res.mean_response_tokens * res.num_tasks])
    correct = sum(r["passed"] for r in rows)
    return EvalResult(
        correct / max(len(rows), 1), len(rows), correct, sum(lengths) / max(len(rows), 1), rows
    )


def _evaluate(s: Session, mine: list[Task]) -> EvalResult:
    cfg = s.cfg
    return evaluate(
        s.model,
        s.policy.tokenizer,
        mine,
        cfg.eval.max_new_tokens,
        cfg.rollout.max_batch_sequences,
        cfg.rollout.sampling.stop_regex,
        cfg.task.verifier,
        prompts=s.prompts,
    )


def train(
    cfg: TrainConfig,
    *,
    resume: bool = False,
    overwrite: bool = False,
    sinks: tuple[MetricsSink, ...] = (),
    show_progress: bool = True,
    snapshot: Snapshot | None = None,
) -> TrainResult:
    """Train one arm for ``cfg.run.steps`` optimizer steps; evaluate before and after.

    ``snapshot``: the run's data, already loaded; None = the one ``cfg.task`` names."""
    s = setup(cfg, resume=resume, overwrite=overwrite, snapshot=snapshot)
    main = s.acc.is_main_process
    out = s.output_dir
    metrics_path = out / "metrics.jsonl"
    sink: MetricsSink | None = None
    if main:
        jsonl = JsonlSink(metrics_path, resume_from_step=s.start_step if resume else None)
        sink = MultiSink(jsonl, *sinks)

    eval_before = None
    if cfg.eval.before and cfg.eval.num_tasks and s.start_step == 0:
        eval_before = run_eval(s)
        _write_eval(s, "eval_before.json", eval_before)
        _write_eval(s, _step_eval(0), eval_before)
    elif (out / "eval_before.json").exists():
        eval_before = _read_eval(out / "eval_before.json")

    progress = _progress(show_progress and main, cfg)
    every = cfg.run.checkpoint_every
    with progress as bar:
        task_id = bar.add_task(
            f"{cfg.algo.name} training", total=cfg.run.steps, completed=s.start_step, info=""
        )
        for step in range(s.start_step, cfg.run.steps):
            metrics = train_step(s, step)
            done = step + 1
            if cfg.eval.every and done % cfg.eval.every == 0 and done < cfg.run.steps:
                res = run_eval(s)
                _write_eval(s, _step_eval(done), res)  # per task, for paired statistics
                metrics.update(res.summary())
            if not all(math.isfinite(v) for k, v in metrics.items() if k.startswith("actor/")):
                log.warning("step %d: non-finite actor metrics %s", done, metrics)
            if sink is not None:
                sink.log(done, metrics)
            bar.update(task_id, completed=done, info=_progress_info(metrics))
            if (every and done % every == 0) or done == cfg.run.steps:
                _checkpoint(s, done)
    eval_after = None
    if cfg.eval.after and cfg.eval.num_tasks:
        eval_after = run_eval(s)
        _write_eval(s, "eval_after.json", eval_after)
        _write_eval(s, _step_eval(cfg.run.steps), eval_after)
    final_dir = _save_final(s)
    close = getattr(s.engine, "close", None)
    if close is not None:  # vLLM holds its KV cache and worker until closed
        close()
    if sink is not None:
        sink.close()
    rows = read_metrics(metrics_path) if main else []
    return TrainResult(
        out, rows, eval_before, eval_after, final_dir, s.policy.source, s.policy.digest
    )


def _checkpoint(s: Session, done: int) -> None:
    state = {
        "data_position": done * s.cfg.rollout.prompts_per_step,
        "seed": s.cfg.run.seed,
        "algo": s.cfg.algo.name,
        "model_source": s.policy.source,
        "model_digest": s.policy.digest,
        # what this step trained on, so a resume can refuse changed data (see data.py)
        "dataset_digest": s.extra.get("dataset_digest"),
    }
    save_checkpoint(
        s.output_dir / "checkpoints", done, s.acc, state, keep=s.cfg.run.keep_checkpoints
    )


def _save_final(s: Session) -> Path | None:
    final = s.output_dir / "final"
    # gathered from the shards under FSDP; the model's own (unwrapped) weights otherwise
    state = dist.full_policy_state(s.acc, s.prepared) if dist.is_fsdp(s.acc) else None
    if s.acc.is_main_process:
        s.model.save_pretrained(final, state_dict=state)
        s.policy.tokenizer.save_pretrained(final)
    s.acc.wait_for_everyone()
    return final


def _step_eval(step: int) -> str:
    """Where the evaluation after ``step`` optimizer steps is written (0: before training)."""
    return f"eval/step-{step:05d}.json"


def _write_eval(s: Session, name: str, res: EvalResult) -> None:
    if s.acc.is_main_process:
        (s.output_dir / name).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "accuracy": res.accuracy,
            "num_tasks": res.num_tasks,
            "num_correct": res.num_correct,
            "mean_response_tokens": res.mean_response_tokens,
            "rows": res.rows,
        }
        path = s.output_dir / name
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, path)  # a reader (a study's report) never sees half a file


def _read_eval(path: Path) -> EvalResult:
    d = json.loads(path.read_text())
    return EvalResult(
        d["accuracy"], d["num_tasks"], d["num_correct"], d["mean_response_tokens"], d["rows"]
    )


def _progress_info(m: dict[str, float]) -> str:
    return (
        f"reward {m['reward/mean']:.2f}  acc {m['accuracy']:.2f}  "
        f"ent {m['actor/entropy']:.2f}  {m['time/step']:.1f}s/step"
    )


def _progress(enabled: bool, cfg: TrainConfig) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        disable=not enabled or bool(os.environ.get("RLSD_NO_PROGRESS")),
    )
