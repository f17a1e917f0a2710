"""PPO clipped surrogate with DAPO clip-higher and dual clip, as used by GRPO and RLSD.

RLSD changes only the advantages fed in (per-token ``Â`` instead of a broadcast ``A``),
so GRPO and RLSD share this exact loss; that is what makes them comparable arms.
"""

from __future__ import annotations

import torch

from rlsd.algo.aggregation import Normaliser, aggregate_loss

LOG_RATIO_CLAMP = 20.0


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    token_advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.28,
    dual_clip: float | None = 3.0,
    agg: str = "token-mean",
    *,
    num_tokens: Normaliser | None = None,
    num_seqs: Normaliser | None = None,
    norm_len: Normaliser | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy-gradient loss; returns ``(scalar loss, stats)``.

    Per token, with ``ρ = exp(logprobs - old_logprobs)``:
    ``L = -min(ρ·Â, clip(ρ, 1-clip_low, 1+clip_high)·Â)``. The asymmetric clip
    (clip-higher) leaves more room to raise rare good tokens, which keeps entropy from
    collapsing. For ``Â < 0`` the dual clip caps the loss at ``-dual_clip·Â`` so a
    token whose ratio exploded cannot produce an unbounded push-down
    (``dual_clip=None`` disables it). The per-token losses are reduced with
    :func:`rlsd.algo.aggregation.aggregate_loss` (``agg``, ``num_tokens``,
    ``num_seqs``, ``norm_len`` are passed through).

    Only ``logprobs`` receives gradient; old log-probs and advantages are detached.
    Masked positions may hold garbage: they are replaced before ``exp``. The log-ratio is
    clamped to ``[-20, 20]`` (as in veRL) so that an extreme ratio cannot overflow.

    Stats (python floats, over masked tokens): ``actor/clip_frac_low`` (Â<0 and
    ρ<1-clip_low), ``actor/clip_frac_high`` (Â>0 and ρ>1+clip_high),
    ``actor/dual_clip_frac`` (Â<0 and the dual cap active), ``actor/ratio_mean``, and
    ``actor/approx_kl`` = mean of ``old_logprobs - logprobs`` (the k1 estimator of
    KL(π_old‖π_θ), as veRL's ``ppo_kl``; it can be negative).
    """
    if not logprobs.shape == old_logprobs.shape == token_advantages.shape == mask.shape:
        raise ValueError(
            "logprobs, old_logprobs, token_advantages and mask must share one shape, got "
            f"{tuple(logprobs.shape)}, {tuple(old_logprobs.shape)}, "
            f"{tuple(token_advantages.shape)}, {tuple(mask.shape)}"
        )
    if not 0.0 <= clip_low < 1.0:
        raise ValueError(f"clip_low must be in [0, 1), got {clip_low}")
    if clip_high < 0.0:
        raise ValueError(f"clip_high must be >= 0, got {clip_high}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None to disable), got {dual_clip}")

    m = mask.bool()
    logprobs = logprobs.to(torch.float32)
    zero = torch.zeros((), dtype=torch.float32, device=logprobs.device)
    adv = torch.where(m, token_advantages.detach().to(torch.float32), zero)
    old = old_logprobs.detach().to(torch.float32)
    log_ratio = torch.where(m, logprobs - old, zero).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)

    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss_mat = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        cap = -adv * dual_clip
        loss_mat = torch.where(adv < 0, torch.minimum(loss_mat, cap), loss_mat)
    loss = aggregate_loss(
        loss_mat, m, agg, num_tokens=num_tokens, num_seqs=num_seqs, norm_len=norm_len
    )

    with torch.no_grad():
        n = m.sum().clamp(min=1).to(torch.float32)

        def frac(cond: torch.Tensor) -> float:
            return ((cond & m).sum().to(torch.float32) / n).item()

        if dual_clip is not None:
            dual_active = (adv < 0) & (-adv * dual_clip < torch.maximum(unclipped, clipped))
        else:
            dual_active = torch.zeros_like(m)
        stats = {
            "actor/clip_frac_low": frac((adv < 0) & (ratio < 1.0 - clip_low)),
            "actor/clip_frac_high": frac((adv > 0) & (ratio > 1.0 + clip_high)),
            "actor/dual_clip_frac": frac(dual_active),
            "actor/ratio_mean": (torch.where(m, ratio, zero).sum() / n).item(),
            "actor/approx_kl": (torch.where(m, -log_ratio, zero).sum() / n).item(),
        }
    return loss, stats
