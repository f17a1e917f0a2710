"""RLSD token credit: the verifier picks the sign, the self-teacher picks the size.

For a response with GRPO advantage ``A_i``, every token gets the same sign as
``A_i`` but a magnitude scaled by how much the privileged teacher agrees with it:

* ``Δ_t = log P_T(y_t) - log P_S(y_t)`` (no gradient)
* ``w_t = exp(sign(A_i) · Δ_t)`` — for a correct response the teacher's extra belief
  earns credit, for a wrong one the teacher's disbelief earns blame
* ``Â_t = A_i · ((1 - λ) + λ · clip(w_t, 1 - ε_w, 1 + ε_w))``

Because ``w_t > 0`` and ``λ ∈ [0, 1]``, the sign of the update is never flipped and the
teacher is never imitated, so privileged phrasing cannot leak into the student.
λ is annealed to 0, after which the update is plain GRPO.

The functions only ever use ``log P_S`` as the reference Δ is measured against, so
``rlsd-contrast`` passes the *null-context teacher's* log-probs in its place
(Δ_c = log P_T(· | privileged) - log P_T(· | context removed)) and shares every formula here.
"""

from __future__ import annotations

import torch

__all__ = [
    "lambda_schedule",
    "rlsd_clip_stats_all",
    "rlsd_credit_stats",
    "rlsd_delta_stats",
    "rlsd_token_advantages",
    "rlsd_token_weights",
]


def _check_shapes(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    mask: torch.Tensor,
) -> None:
    if advantages.dim() != 1:
        raise ValueError(f"advantages must be 1-D [N], got shape {tuple(advantages.shape)}")
    if mask.dim() != 2 or mask.shape[0] != advantages.shape[0]:
        raise ValueError(
            f"mask must be [N, T] with N={advantages.shape[0]}, got shape {tuple(mask.shape)}"
        )
    for name, t in (("teacher_logprobs", teacher_logprobs), ("student_logprobs", student_logprobs)):
        if t.shape != mask.shape:
            raise ValueError(
                f"{name} must have the mask's shape {tuple(mask.shape)}, got {tuple(t.shape)}"
            )


def _check_eps_w(eps_w: float) -> None:
    if not 0.0 <= eps_w < 1.0:
        raise ValueError(f"eps_w must be in [0, 1), got {eps_w}")


def _delta_and_weights(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(mask_bool, Δ, w)`` with Δ = 0 and w = 1 wherever mask is 0 or A = 0.

    Log-probs are masked *before* subtracting and exponentiating, so padding that
    holds -inf or huge values cannot turn into NaN.
    """
    with torch.no_grad():
        m = mask.bool()
        zero = torch.zeros((), dtype=torch.float32, device=mask.device)
        t = torch.where(m, teacher_logprobs.detach().to(torch.float32), zero)
        s = torch.where(m, student_logprobs.detach().to(torch.float32), zero)
        delta = t - s
        sign = torch.sign(advantages.detach().to(torch.float32))[:, None].expand_as(delta)
        exponent = torch.where(m & (sign != 0), sign * delta, zero)
        return m, delta, torch.exp(exponent)


def rlsd_token_weights(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """Unclipped direction-aware weights ``w = exp(sign(A)·Δ)``, ``[N, T]``, detached.

    Exposed for inspection and tests; it is 1 on masked-out tokens and wherever A = 0
    (no verdict, so nothing to redistribute).
    """
    _check_shapes(advantages, teacher_logprobs, student_logprobs, mask)
    return _delta_and_weights(advantages, teacher_logprobs, student_logprobs, mask)[2]


def rlsd_token_advantages(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    mask: torch.Tensor,
    lam: float,
    eps_w: float = 0.2,
) -> torch.Tensor:
    """Per-token RLSD advantages ``Â = A·((1-λ) + λ·clip(w, 1-ε_w, 1+ε_w))``, ``[N, T]``.

    ``advantages`` is the per-response GRPO advantage ``[N]``; the log-probs are those
    of the sampled tokens ``[N, T]`` under the privileged teacher and the student
    (the policy that sampled). The clip bounds how much one token's credit may differ
    from the verdict, so a confident but wrong teacher cannot dominate the update.

    The result is float32, detached (neither the teacher, Δ, nor A ever carries
    gradient), and exactly 0 where ``mask`` is 0. With ``lam = 0`` it equals ``A``
    broadcast over the masked tokens bit for bit, i.e. plain GRPO.
    """
    _check_shapes(advantages, teacher_logprobs, student_logprobs, mask)
    _check_eps_w(eps_w)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1] (larger values can flip the sign), got {lam}")
    m, _, w = _delta_and_weights(advantages, teacher_logprobs, student_logprobs, mask)
    with torch.no_grad():
        a = advantages.detach().to(torch.float32)[:, None]
        scale = (1.0 - lam) + lam * w.clamp(1.0 - eps_w, 1.0 + eps_w)
        token_adv = a * scale
        return torch.where(m, token_adv, torch.zeros_like(token_adv))


def rlsd_credit_stats(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    mask: torch.Tensor,
    eps_w: float = 0.2,
) -> dict[str, float]:
    """Metrics of the teacher's credit redistribution, as python floats.

    Computed over tokens where ``mask = 1`` and ``A ≠ 0`` (A = 0 tokens trivially
    have w = 1 and would dilute the numbers); all 0.0 when there are none.

    * ``rlsd/weight_mean``, ``rlsd/weight_std``: of the *clipped* weights, i.e. the
      factors that actually scale the advantage (population std).
    * ``rlsd/weight_clip_frac``: fraction of tokens whose unclipped ``w`` fell outside
      ``[1-ε_w, 1+ε_w]`` (the paper reports it settling around 3-6 %).
    * ``rlsd/delta_mean``: mean of ``Δ = log P_T - log P_S``, the privileged
      information gain.
    """
    _check_shapes(advantages, teacher_logprobs, student_logprobs, mask)
    _check_eps_w(eps_w)
    m, delta, w = _delta_and_weights(advantages, teacher_logprobs, student_logprobs, mask)
    with torch.no_grad():
        sel = m & (advantages.detach() != 0)[:, None]
        if not bool(sel.any()):
            return {
                "rlsd/weight_mean": 0.0,
                "rlsd/weight_std": 0.0,
                "rlsd/weight_clip_frac": 0.0,
                "rlsd/delta_mean": 0.0,
            }
        w_sel = w[sel]
        clipped = w_sel.clamp(1.0 - eps_w, 1.0 + eps_w)
        outside = (w_sel < 1.0 - eps_w) | (w_sel > 1.0 + eps_w)
        return {
            "rlsd/weight_mean": clipped.mean().item(),
            "rlsd/weight_std": clipped.std(correction=0).item(),
            "rlsd/weight_clip_frac": outside.to(torch.float32).mean().item(),
            "rlsd/delta_mean": delta[sel].mean().item(),
        }


def rlsd_clip_stats_all(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    mask: torch.Tensor,
    eps_w: float = 0.2,
) -> dict[str, float]:
    """The weight clip fraction as the official RLSD code reports it: over *all* response
    tokens (``mask = 1``), split by side; all 0.0 when there are no tokens.

    A = 0 tokens count in the denominator with w = exp(0) = 1, never clipped, so on a batch
    with zero-variance groups these read lower than ``rlsd/weight_clip_frac`` (A ≠ 0 tokens
    only); both are logged so the product's numbers can be set beside the paper's 3-6 %.

    * ``rlsd/weight_clip_frac_all``: ``w < 1-ε_w`` or ``w > 1+ε_w``
    * ``rlsd/weight_clip_frac_low_all``: ``w < 1-ε_w``
    * ``rlsd/weight_clip_frac_high_all``: ``w > 1+ε_w``
    """
    _check_shapes(advantages, teacher_logprobs, student_logprobs, mask)
    _check_eps_w(eps_w)
    m, _, w = _delta_and_weights(advantages, teacher_logprobs, student_logprobs, mask)
    with torch.no_grad():
        n = m.sum().clamp(min=1).to(torch.float32)
        low = ((w < 1.0 - eps_w) & m).sum().to(torch.float32) / n
        high = ((w > 1.0 + eps_w) & m).sum().to(torch.float32) / n
        return {
            "rlsd/weight_clip_frac_all": (low + high).item(),
            "rlsd/weight_clip_frac_low_all": low.item(),
            "rlsd/weight_clip_frac_high_all": high.item(),
        }


def rlsd_delta_stats(
    advantages: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    student_logprobs: torch.Tensor,
    mask: torch.Tensor,
) -> dict[str, float]:
    """The sign of Δ over the tokens ``rlsd_credit_stats`` reads (``mask = 1``, A ≠ 0).

    * ``rlsd/delta_neg_frac``: fraction of tokens with Δ < 0. On the student's own samples
      E[Δ] = -KL(P_S‖P_T) ≤ 0, so a value well above 1/2 says the teacher mostly shrinks the
      credit of correct responses rather than redistributing it.

    Only A ≠ 0 tokens are read because the trainer does not score zero-variance groups with
    the teacher (their Δ is not known there); 0.0 when there are no such tokens.
    """
    _check_shapes(advantages, teacher_logprobs, student_logprobs, mask)
    m, delta, _ = _delta_and_weights(advantages, teacher_logprobs, student_logprobs, mask)
    with torch.no_grad():
        sel = m & (advantages.detach() != 0)[:, None]
        if not bool(sel.any()):
            return {"rlsd/delta_neg_frac": 0.0}
        return {"rlsd/delta_neg_frac": (delta[sel] < 0).to(torch.float32).mean().item()}


def lambda_schedule(step: int, lam0: float = 0.5, decay_steps: int = 50) -> float:
    """Annealed teacher share ``λ_k = λ_0 · max(0, 1 - k / K_decay)``.

    The teacher's credit matters most early, when the student's own per-token signal is
    weakest; decaying it to 0 at ``decay_steps`` (and keeping it 0 afterwards) makes
    the late-stage update plain GRPO, so the run cannot drift toward the teacher.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if decay_steps <= 0:
        raise ValueError(f"decay_steps must be > 0, got {decay_steps}")
    if not 0.0 <= lam0 <= 1.0:
        raise ValueError(f"lam0 must be in [0, 1], got {lam0}")
    return float(lam0 * max(0.0, 1.0 - step / decay_steps))
