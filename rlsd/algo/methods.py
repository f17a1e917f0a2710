"""Training methods by config name: which teacher pass each needs and how its update is formed.

A method is one :class:`Method` entry in :data:`METHODS`. The trainer looks the configured
name up once and then only follows the entry: it runs the teacher pass the entry asks for
(:class:`TeacherPass`), hands each micro-batch to the entry's ``loss`` as :class:`LossInputs`
and back-propagates the :class:`LossOutput`. It never compares method names, so adding a
method is one entry here (registered with :func:`register_method`) and nothing in the trainer.

Everything here is a pure function of tensors, like the rest of :mod:`rlsd.algo`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

import torch

from rlsd.algo.aggregation import Normaliser
from rlsd.algo.credit import (
    rlsd_clip_stats_all,
    rlsd_credit_stats,
    rlsd_delta_stats,
    rlsd_token_advantages,
)
from rlsd.algo.logprobs import token_logprobs_from_hidden
from rlsd.algo.opsd import opsd_jsd_loss
from rlsd.algo.ppo import ppo_clip_loss

__all__ = [
    "METHODS",
    "Credit",
    "CreditFn",
    "LossFn",
    "LossInputs",
    "LossOutput",
    "Method",
    "MethodSettings",
    "TeacherOutput",
    "TeacherPass",
    "TeacherPrompt",
    "WeightedStats",
    "entropy_from_logits",
    "get_method",
    "method_names",
    "policy_gradient_loss",
    "register_method",
]

#: Metrics of one micro-batch and the weight they carry in the step's weighted mean.
WeightedStats = tuple[dict[str, float], float]


class TeacherPass(StrEnum):
    """What a method needs from the privileged self-teacher's forward pass."""

    #: no teacher at all (no teacher module is kept, no extra forward)
    NONE = "none"
    #: log P_T(y_t) of the student's sampled tokens, ``[N, T]``
    TOKEN_LOGPROBS = "token_logprobs"
    #: the teacher's full next-token distribution at every response token
    DISTRIBUTION = "distribution"
    #: log P_T(y_t) twice, ``[N, T]`` each: under the privileged teacher prompt and under the
    #: same template with the privileged context removed (two forwards of the same teacher)
    CONTRAST_LOGPROBS = "contrast_logprobs"


class TeacherPrompt(StrEnum):
    """Which prompt a method's teacher reads by default (``teacher.prompt`` may override it)."""

    #: the teacher template (``teacher.prompt_template``) around the student's question, its
    #: ``{privileged_context}`` filled as ``teacher.context`` says: a self-teacher's view
    TEMPLATE = "template"
    #: the student's own prompt: a separate, stronger teacher needs no privileged context
    STUDENT = "student"


@dataclass(frozen=True)
class TeacherOutput:
    """The teacher pass's result, holding exactly what its method's :class:`TeacherPass` asked.

    * ``TOKEN_LOGPROBS``: ``token_logprobs`` ``[N, T]``, 0 at padding and in groups the pass
      skipped.
    * ``CONTRAST_LOGPROBS``: as ``TOKEN_LOGPROBS`` (the privileged prompt's) plus
      ``baseline_logprobs`` ``[N, T]``, the same teacher's under the null-context prompt.
    * ``DISTRIBUTION``: ``hidden`` ``[M, H]``, the teacher's last hidden state at each of the M
      response tokens (row-major), with the teacher's *own* output head (``head_weight``
      ``[V, H]``, ``head_bias``). Logits are formed per micro-batch (:meth:`logits`), so no
      ``[M, V]`` tensor is held for the whole batch, and they always come from the module that
      produced the hidden states (a frozen teacher's head, not the live student's).
    """

    kind: TeacherPass
    token_logprobs: torch.Tensor | None = None
    baseline_logprobs: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    head_weight: torch.Tensor | None = None
    head_bias: torch.Tensor | None = None

    def micro_batch(
        self, rows: list[int], width: int, tokens: slice, device: torch.device
    ) -> TeacherOutput:
        """The part that belongs to response ``rows`` (padded to ``width``), whose tokens are
        ``tokens`` of the flat M, moved to ``device``."""
        if self.kind is TeacherPass.TOKEN_LOGPROBS:
            logp = self.token_logprobs[rows, :width].to(device)
            return TeacherOutput(self.kind, token_logprobs=logp)
        if self.kind is TeacherPass.CONTRAST_LOGPROBS:
            logp = self.token_logprobs[rows, :width].to(device)
            base = self.baseline_logprobs[rows, :width].to(device)
            return TeacherOutput(self.kind, token_logprobs=logp, baseline_logprobs=base)
        if self.kind is TeacherPass.DISTRIBUTION:
            hidden = self.hidden[tokens].to(device)
            return TeacherOutput(
                self.kind, hidden=hidden, head_weight=self.head_weight, head_bias=self.head_bias
            )
        return self

    def logits(self) -> torch.Tensor:
        """Teacher logits ``[M, V]`` from its hidden states and its own head (no gradient)."""
        if self.kind is not TeacherPass.DISTRIBUTION:
            raise ValueError(f"a {self.kind.value!r} teacher pass holds no distribution")
        with torch.no_grad():
            return torch.nn.functional.linear(self.hidden, self.head_weight, self.head_bias)


@dataclass(frozen=True)
class MethodSettings:
    """The run's hyperparameters a method may read (built once from the run config).

    ``temperature`` is the rollout's sampling temperature: the student's log-probs, entropy and
    distribution are always taken at the temperature the responses were drawn at, so the
    gradient is that of the policy that sampled. ``teacher_temperature`` applies to the
    teacher's side only.
    """

    temperature: float = 1.0
    teacher_temperature: float = 1.0
    clip_low: float = 0.2
    clip_high: float = 0.28
    dual_clip: float | None = 3.0
    loss_agg: str = "token-mean"
    eps_w: float = 0.2
    opsd_beta: float = 0.5
    logprob_chunk_tokens: int = 1024


@dataclass(frozen=True)
class LossInputs:
    """One micro-batch of n whole responses (M response tokens), as a method's loss sees it."""

    #: ``[M, H]`` student last hidden states predicting the response tokens (with gradient)
    hidden: torch.Tensor
    #: the student's output head ``[V, H]`` (and bias), with gradient
    weight: torch.Tensor
    bias: torch.Tensor | None
    #: ``[M]`` sampled token ids, and each token's row / column in the ``[n, T]`` layout
    targets: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    #: ``[n, T]`` 1 at response tokens
    mask: torch.Tensor
    #: ``[n]`` sequence advantages from the verifier's rewards
    advantages: torch.Tensor
    #: this micro-batch's part of the teacher pass (None when the method needs none)
    teacher: TeacherOutput | None
    #: the annealed teacher share λ_k of this step
    lam: float
    settings: MethodSettings
    #: global normalisers (whole batch, all ranks), so micro-batch losses add up
    norm_tokens: Normaliser
    norm_seqs: Normaliser
    norm_len: Normaliser

    @property
    def num_tokens(self) -> int:
        return int(self.targets.numel())

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """``[M]`` -> ``[n, T]`` (0 at padding); differentiable."""
        out = values.new_full(self.mask.shape, 0.0)
        return out.index_put((self.rows, self.cols), values)


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor
    #: ``[M]`` the student's per-token entropy (a metric, detached)
    entropy: torch.Tensor
    #: metrics with their weights; the step reports each key's weighted mean
    stats: tuple[WeightedStats, ...]
    #: ``[n, T]`` per-token advantages, for the token-credit report (None: not a PG method)
    token_advantages: torch.Tensor | None = None
    #: ``[n, T]`` the student's detached log-probs of the sampled tokens (None: not computed)
    logprobs: torch.Tensor | None = None


LossFn = Callable[[LossInputs], LossOutput]


@dataclass(frozen=True)
class Credit:
    """Per-token advantages ``[n, T]`` of a policy-gradient method and their metrics."""

    token_advantages: torch.Tensor
    stats: tuple[WeightedStats, ...] = ()


#: ``(inputs, detached student log-probs [n, T]) -> Credit``
CreditFn = Callable[[LossInputs, torch.Tensor], Credit]


@dataclass(frozen=True)
class Method:
    """One training method, selectable as ``algo.name``."""

    name: str
    summary: str
    teacher: TeacherPass
    loss: LossFn
    #: The teacher only rescales the verifier's advantage per token, by a λ-annealed weight
    #: (RLSD-style): λ is in effect (and logged), groups with A = 0 need no teacher pass (their
    #: credit is A·w = 0 whatever it says), and the per-token credit is sampled for the report.
    teacher_scales_advantage: bool = False
    #: the prompt the teacher reads unless ``teacher.prompt`` says otherwise
    teacher_prompt: TeacherPrompt = TeacherPrompt.TEMPLATE
    #: the teacher must be a separate model (``teacher.model``), not a copy of the policy: a
    #: self-teacher reading the student's own prompt would make the method a no-op
    requires_teacher_model: bool = False


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of ``softmax(logits)`` over the last dimension, in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def policy_gradient_loss(credit: CreditFn) -> LossFn:
    """The PPO clipped surrogate on the student's sampled-token log-probs, with per-token
    advantages from ``credit``. GRPO and RLSD differ only in ``credit``, so they share this
    exact loss, which is what makes them comparable arms."""

    def loss(x: LossInputs) -> LossOutput:
        s = x.settings
        logp_flat, ent = token_logprobs_from_hidden(
            x.hidden, x.weight, x.targets, x.bias, s.temperature, s.logprob_chunk_tokens
        )
        logp = x.scatter(logp_flat)
        c = credit(x, logp.detach())
        value, stats = ppo_clip_loss(
            logp,
            logp.detach(),
            c.token_advantages,
            x.mask,
            clip_low=s.clip_low,
            clip_high=s.clip_high,
            dual_clip=s.dual_clip,
            agg=s.loss_agg,
            num_tokens=x.norm_tokens,
            num_seqs=x.norm_seqs,
            norm_len=x.norm_len,
        )
        return LossOutput(
            value, ent, (*c.stats, (stats, float(x.num_tokens))), c.token_advantages, logp.detach()
        )

    return loss


def uniform_credit(x: LossInputs, student_logprobs: torch.Tensor) -> Credit:
    """GRPO: every token of a response gets its sequence advantage."""
    return Credit(x.advantages[:, None] * x.mask)


def _scaled_credit(x: LossInputs, teacher_logp: torch.Tensor, reference: torch.Tensor) -> Credit:
    """RLSD's rule with Δ = ``teacher_logp - reference``: the verifier's sign, the clipped,
    λ-annealed weight exp(sign(A)·Δ) as the per-token magnitude (:mod:`rlsd.algo.credit`)."""
    eps_w = x.settings.eps_w
    adv = x.advantages
    token_adv = rlsd_token_advantages(adv, teacher_logp, reference, x.mask, x.lam, eps_w)
    stats = rlsd_credit_stats(adv, teacher_logp, reference, x.mask, eps_w)
    stats |= rlsd_delta_stats(adv, teacher_logp, reference, x.mask)
    # the credit metrics are means over the A != 0 tokens, so that is their weight; the
    # official clip fraction is a mean over every response token, so it weighs them all
    informative = float(((adv != 0)[:, None] * x.mask).sum())
    all_tokens = rlsd_clip_stats_all(adv, teacher_logp, reference, x.mask, eps_w)
    return Credit(token_adv, ((stats, informative), (all_tokens, float(x.num_tokens))))


def rlsd_credit(x: LossInputs, student_logprobs: torch.Tensor) -> Credit:
    """RLSD: Δ = log P_T(y_t | privileged prompt) - log P_S(y_t)."""
    return _scaled_credit(x, x.teacher.token_logprobs, student_logprobs)


def rlsd_contrast_credit(x: LossInputs, student_logprobs: torch.Tensor) -> Credit:
    """RLSD-contrast: Δ_c = log P_T(y_t | privileged prompt) - log P_T(y_t | null-context prompt).

    On small models RLSD's Δ partly measures how the teacher template's own sentences shift
    log-probs, and on the student's samples E[Δ] = -KL(P_S‖P_T) ≤ 0, so RLSD mostly shrinks the
    credit of correct responses. Measuring against the same teacher reading the same template
    with the context removed cancels the wording: only what the privileged context itself
    makes more (or less) likely moves credit. Sign, clip and λ rule are RLSD's.
    """
    return _scaled_credit(x, x.teacher.token_logprobs, x.teacher.baseline_logprobs)


def opd_credit(x: LossInputs, student_logprobs: torch.Tensor) -> Credit:
    """OPD: per-token advantage A_t = log π_T(y_t) - log π_S(y_t), detached (the verifier's
    reward is not used).

    On the student's own samples E[A_t · ∇log π_S(y_t)] = -∇ KL(π_S‖π_T) at each position, so
    the policy-gradient step is a step down the per-token reverse KL to the teacher (Agarwal et
    al.'s on-policy GKD with β = 1, in the sampled-token form of Thinking Machines' "on-policy
    distillation"). Sharing :func:`policy_gradient_loss` with GRPO and RLSD keeps the arms on
    one surrogate, clip and aggregation; only the credit differs.
    """
    with torch.no_grad():
        t_logp = x.teacher.token_logprobs.to(torch.float32)
        s_logp = student_logprobs.to(torch.float32)
        m = x.mask.bool()
        # masked before subtracting: padding may hold anything
        adv = torch.where(m, t_logp - s_logp, torch.zeros((), device=t_logp.device))
        n = max(float(m.sum()), 1.0)
        stats = {
            # the sampled-token (k1) estimate of KL(π_S‖π_T) per token
            "opd/reverse_kl": float(-adv.sum()) / n,
            "opd/adv_neg_frac": float(((adv < 0) & m).sum()) / n,
        }
    return Credit(adv, ((stats, float(x.num_tokens)),))


def opsd_loss(x: LossInputs) -> LossOutput:
    """OPSD: generalised JSD between the teacher's and the student's next-token distributions.

    The student's side is at the sampling temperature (the distribution that drew the samples
    and that the update moves); the teacher's at ``teacher_temperature`` (how sharp a target it
    offers), which defaults to the sampling temperature.
    """
    s = x.settings
    s_logits = torch.nn.functional.linear(x.hidden, x.weight, x.bias)
    t_logits = x.teacher.logits()
    n = x.num_tokens
    value, stats = opsd_jsd_loss(
        s_logits[None],
        t_logits[None],
        torch.ones(1, n, device=x.weight.device),
        beta=s.opsd_beta,
        num_tokens=x.norm_tokens,
        temperature=s.temperature,
        teacher_temperature=s.teacher_temperature,
    )
    with torch.no_grad():
        ent = entropy_from_logits(s_logits / s.temperature)
    return LossOutput(value, ent, ((stats, float(n)),))


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Make ``method`` selectable as ``algo.name``; a name is registered once."""
    if method.name in METHODS and METHODS[method.name] is not method:
        raise ValueError(f"method {method.name!r} is already registered")
    METHODS[method.name] = method
    return method


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> Method:
    """Look a method up by config name; an unknown name lists the valid ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; valid: {method_names()}") from None


register_method(
    Method(
        "grpo",
        "uniform credit (the control arm)",
        TeacherPass.NONE,
        policy_gradient_loss(uniform_credit),
    )
)
register_method(
    Method(
        "rlsd",
        "verifier direction + self-teacher token magnitude",
        TeacherPass.TOKEN_LOGPROBS,
        policy_gradient_loss(rlsd_credit),
        teacher_scales_advantage=True,
    )
)
register_method(
    Method(
        "opsd",
        "JSD distillation to the self-teacher (baseline)",
        TeacherPass.DISTRIBUTION,
        opsd_loss,
    )
)
register_method(
    Method(
        "opd",
        "on-policy distillation from a separate teacher model (per-token reverse-KL advantage)",
        TeacherPass.TOKEN_LOGPROBS,
        policy_gradient_loss(opd_credit),
        teacher_prompt=TeacherPrompt.STUDENT,
        requires_teacher_model=True,
    )
)
register_method(
    Method(
        "rlsd-contrast",
        "RLSD credit with Δ measured against the null-context teacher (template cancels)",
        TeacherPass.CONTRAST_LOGPROBS,
        policy_gradient_loss(rlsd_contrast_credit),
        teacher_scales_advantage=True,
    )
)
