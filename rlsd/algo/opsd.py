"""OPSD baseline: distil the privileged self-teacher's full distribution (GKD-style JSD).

Unlike RLSD, OPSD makes the teacher a *target*: on the student's own samples it pulls
the student's next-token distribution towards the teacher's, token by token. This is
the baseline that is known to leak privileged phrasing; it lives here so both arms share
one code path for masking and aggregation.
"""

from __future__ import annotations

import math

import torch

from rlsd.algo.aggregation import Normaliser, aggregate_loss, masked_mean

# Logits below this are treated as this value: such entries have probability exactly 0
# in float32 next to any ordinary logit, and being finite they keep 0·log 0 terms at 0
# (instead of NaN) in both the value and the gradient, e.g. for -inf vocabulary masks.
LOGIT_FLOOR = -1e9


def _kl_terms(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-position ``KL(P‖Q) = Σ_v p·(log p - log q)`` over the last dimension."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def generalized_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    beta: float = 0.5,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> torch.Tensor:
    """Per-position generalised JSD of Agarwal et al. (GKD), shape ``logits.shape[:-1]``.

    The student's logits are divided by ``temperature``, the teacher's by
    ``teacher_temperature`` (None = the same ``temperature``): the student's side should be
    the distribution its samples were drawn from, while the teacher's sharpness is its own
    setting.

    ``M = β·P_T + (1-β)·P_S`` and ``JSD_β = β·KL(P_T‖M) + (1-β)·KL(P_S‖M)``, with
    ``log M`` computed as a logsumexp of ``log β + log P_T`` and ``log(1-β) + log P_S``
    so that nothing under- or overflows. All maths in float32.

    The end points, where the formula itself degenerates to 0, follow the GKD/TRL
    convention of the normalised limits: ``β = 0`` gives forward ``KL(P_T‖P_S)``
    (= lim JSD_β/β) and ``β = 1`` gives reverse ``KL(P_S‖P_T)`` (= lim JSD_β/(1-β)).

    The teacher is detached here: gradient reaches the student logits only.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if teacher_temperature is None:
        teacher_temperature = temperature
    for name, value in (("temperature", temperature), ("teacher_temperature", teacher_temperature)):
        if value <= 0.0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "student and teacher logits must have the same shape (shared tokenizer), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    s = (student_logits.to(torch.float32) / temperature).clamp(min=LOGIT_FLOOR)
    t = (teacher_logits.detach().to(torch.float32) / teacher_temperature).clamp(min=LOGIT_FLOOR)
    log_ps = torch.log_softmax(s, dim=-1)
    log_pt = torch.log_softmax(t, dim=-1)
    if beta == 0.0:
        return _kl_terms(log_pt, log_ps)
    if beta == 1.0:
        return _kl_terms(log_ps, log_pt)
    log_m = torch.logsumexp(
        torch.stack([log_pt + math.log(beta), log_ps + math.log(1.0 - beta)]), dim=0
    )
    return beta * _kl_terms(log_pt, log_m) + (1.0 - beta) * _kl_terms(log_ps, log_m)


def opsd_jsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    beta: float = 0.5,
    agg: str = "token-mean",
    *,
    num_tokens: Normaliser | None = None,
    num_seqs: Normaliser | None = None,
    norm_len: Normaliser | None = None,
    temperature: float = 1.0,
    teacher_temperature: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """OPSD distillation loss over ``[N, T, V]`` logits; returns ``(scalar loss, stats)``.

    Per token the generalised JSD (:func:`generalized_jsd`, β = 0.5 in the OPSD paper)
    between the teacher's and the student's next-token distributions, reduced with
    :func:`rlsd.algo.aggregation.aggregate_loss` over ``mask`` ``[N, T]``. Rows at
    masked positions are replaced by zeros before the softmax, so padding garbage cannot
    produce NaN. Gradient flows through the student only. ``temperature`` and
    ``teacher_temperature`` are those of :func:`generalized_jsd`.

    Stats: ``opsd/jsd_mean`` = plain mean of the per-token JSD over masked tokens.
    """
    if student_logits.dim() != 3 or mask.shape != student_logits.shape[:2]:
        raise ValueError(
            "expected student_logits [N, T, V] and mask [N, T], got "
            f"{tuple(student_logits.shape)} and {tuple(mask.shape)}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "student and teacher logits must have the same shape (shared tokenizer), got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    m = mask.bool()
    keep = m[..., None]
    zero = torch.zeros((), dtype=student_logits.dtype, device=student_logits.device)
    student = torch.where(keep, student_logits, zero)
    teacher = torch.where(keep, teacher_logits.detach(), zero.to(teacher_logits.dtype))
    jsd = generalized_jsd(
        student,
        teacher,
        beta=beta,
        temperature=temperature,
        teacher_temperature=teacher_temperature,
    )
    loss = aggregate_loss(jsd, m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_len=norm_len)
    with torch.no_grad():
        stats = {"opsd/jsd_mean": masked_mean(jsd.detach(), m).item()}
    return loss, stats
