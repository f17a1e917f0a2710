"""The teacher: the policy itself (live), a frozen copy refreshed every N steps, or a separate
frozen model (``teacher.model``) that shares the policy's tokenizer; and which prompts it reads.
"""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING

from torch import nn
from transformers import PreTrainedTokenizerBase

from rlsd.algo.methods import Method, TeacherPass, TeacherPrompt
from rlsd.train.prompts import TeacherView

if TYPE_CHECKING:
    from rlsd.models import LoadedPolicy
    from rlsd.train.config import TeacherConfig, TrainConfig

log = logging.getLogger("rlsd.train")


class SelfTeacher:
    """Holds the module that scores responses with privileged context in its prompt.

    sync_interval 0: the live policy (no extra memory; its log-probs are detached anyway).
    sync_interval N: a frozen copy, refreshed from the policy at steps 0, N, 2N, ...
    """

    def __init__(self, policy: nn.Module, sync_interval: int) -> None:
        self.sync_interval = sync_interval
        self.policy = policy
        self.frozen: nn.Module | None = None
        if sync_interval > 0:
            self.frozen = copy.deepcopy(policy)
            self.frozen.requires_grad_(False)
            self.frozen.eval()

    @property
    def module(self) -> nn.Module:
        return self.frozen if self.frozen is not None else self.policy

    def maybe_sync(self, step: int) -> bool:
        """Refresh the frozen copy at the start of step ``step`` (0-based); True if it did."""
        if self.frozen is None or step % self.sync_interval != 0:
            return False
        self.frozen.load_state_dict(self.policy.state_dict())
        return True


class ModelTeacher:
    """A separate teacher model, frozen for the whole run (the OPD teacher).

    ``frozen`` is None: a checkpoint need not carry its weights, which never change and are
    read again from ``teacher.model`` on resume (the config, and so that path, must match).
    """

    def __init__(self, loaded: LoadedPolicy) -> None:
        self.loaded = loaded
        loaded.model.requires_grad_(False)
        loaded.model.eval()
        self.frozen: nn.Module | None = None

    @property
    def module(self) -> nn.Module:
        return self.loaded.model

    def maybe_sync(self, step: int) -> bool:
        return False


Teacher = SelfTeacher | ModelTeacher


class TeacherTokenizerMismatch(ValueError):
    """The teacher model's tokenizer differs from the policy's: it cannot score their tokens."""


def check_shared_tokenizer(
    student: PreTrainedTokenizerBase,
    teacher: PreTrainedTokenizerBase,
    student_name: str = "the policy",
    teacher_name: str = "the teacher",
) -> None:
    """Refuse a teacher whose vocabulary (token -> id, added tokens included) is not the
    policy's. The teacher scores the ids the student sampled, so one differing id would score
    a different token, silently."""
    a, b = student.get_vocab(), teacher.get_vocab()
    if a == b:
        return
    only_s = sorted(set(a) - set(b))
    only_t = sorted(set(b) - set(a))
    moved = sorted(k for k in set(a) & set(b) if a[k] != b[k])
    parts = [f"{student_name}: {len(a)} tokens, {teacher_name}: {len(b)} tokens"]
    if only_s:
        parts.append(f"{len(only_s)} only in {student_name} (e.g. {only_s[:3]})")
    if only_t:
        parts.append(f"{len(only_t)} only in {teacher_name} (e.g. {only_t[:3]})")
    if moved:
        parts.append(f"{len(moved)} with different ids (e.g. {moved[:3]})")
    raise TeacherTokenizerMismatch(
        "teacher.model must share the policy's tokenizer (the teacher scores the student's "
        "token ids), but the vocabularies differ: " + "; ".join(parts)
    )


def teacher_views(method: Method, cfg: TeacherConfig) -> tuple[TeacherView, ...]:
    """The prompts ``method``'s teacher pass reads, in the order its :class:`TeacherOutput`
    holds them (one per pass, two for ``CONTRAST_LOGPROBS``: privileged, then null)."""
    if method.teacher is TeacherPass.NONE:
        return ()
    prompt = method.teacher_prompt.value if cfg.prompt == "method" else cfg.prompt
    if method.teacher is TeacherPass.CONTRAST_LOGPROBS:
        if prompt != TeacherPrompt.TEMPLATE.value:
            raise ValueError(
                f"algo.name={method.name!r} contrasts two teacher templates; it cannot read "
                f"teacher.prompt={cfg.prompt!r}"
            )
        if cfg.context != "privileged":
            # Δ_c would be log P_T(null) - log P_T(null) = 0: plain GRPO under another name
            raise ValueError(
                f"algo.name={method.name!r} contrasts the privileged and the null-context "
                "teacher; teacher.context=none would leave nothing to contrast"
            )
        return ("privileged", "none")
    if prompt == TeacherPrompt.STUDENT.value:
        return ("student",)
    return (cfg.context,)


def check_teacher_config(method: Method, cfg: TeacherConfig) -> None:
    """Refuse, before any model is loaded, a teacher setting the method cannot use."""
    teacher_views(method, cfg)
    if method.requires_teacher_model and not cfg.model:
        raise ValueError(
            f"algo.name={method.name!r} distils from a separate model: set teacher.model to its "
            "directory (or name), sharing the policy's tokenizer"
        )
    if cfg.model and method.teacher is TeacherPass.NONE:
        raise ValueError(f"teacher.model is set but algo.name={method.name!r} uses no teacher")


def build_teacher(method: Method, cfg: TrainConfig, policy: LoadedPolicy) -> Teacher | None:
    """The run's teacher: none, a separate model (``teacher.model``), or the self-teacher."""
    check_teacher_config(method, cfg.teacher)
    if method.teacher is TeacherPass.NONE:
        return None
    if not cfg.teacher.model:
        return SelfTeacher(policy.model, cfg.teacher.sync_interval)
    from rlsd.models import ModelConfig, load_policy
    from rlsd.models.vlm import LoadedVLM

    m = cfg.model
    loaded = load_policy(
        ModelConfig(
            name_or_path=cfg.teacher.model,
            dtype=m.dtype,
            cache_dir=m.cache_dir,
            attn_implementation=m.attn_implementation,
        )
    )
    if isinstance(loaded, LoadedVLM) != isinstance(policy, LoadedVLM):
        raise ValueError(
            f"teacher.model={cfg.teacher.model!r} and the policy must both be text or both be "
            "vision-language models (the teacher reads the student's prompt inputs)"
        )
    check_shared_tokenizer(
        policy.tokenizer, loaded.tokenizer, policy.source, f"teacher.model ({loaded.source})"
    )
    if cfg.teacher.sync_interval:
        log.info("teacher.sync_interval is ignored: teacher.model is never synced")
    loaded.model.to(next(policy.model.parameters()).device)
    return ModelTeacher(loaded)
