"""PPO clipped surrogate (clip-higher, dual clip) and loss aggregation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsd.algo import AGG_MODES, aggregate_loss, masked_mean, ppo_clip_loss

# (ρ, Â) pairs, one per branch, with clip_low=0.2, clip_high=0.28, dual_clip=3:
RATIOS = [1.0, 1.5, 0.5, 0.5, 1.5, 5.0, 2.0]
ADVS = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -2.0]
# per-token loss = -min(ρÂ, clip(ρ, 0.8, 1.28)Â), capped at -3Â for Â<0:
#   1: ρ=1,   Â=+1 -> -1
#   2: ρ=1.5, Â=+1 -> -min(1.5, 1.28)   = -1.28  (clip high)
#   3: ρ=0.5, Â=+1 -> -min(0.5, 0.8)    = -0.5   (no clip: low side only binds for Â<0)
#   4: ρ=0.5, Â=-1 -> -min(-0.5, -0.8)  =  0.8   (clip low)
#   5: ρ=1.5, Â=-1 -> -min(-1.5, -1.28) =  1.5   (no clip)
#   6: ρ=5,   Â=-1 -> 5, dual cap 3     =  3     (dual clip)
#   7: ρ=2,   Â=-2 -> 4, cap 6          =  4     (under the cap)
TOKEN_LOSSES = [-1.0, -1.28, -0.5, 0.8, 1.5, 3.0, 4.0]
# d(per-token loss)/d logprob = -Âρ where unclipped, 0 where a clip or the cap binds
TOKEN_GRADS = [-1.0, 0.0, -0.5, 0.0, 1.5, 0.0, 4.0]


def _branch_batch():
    """One row with the 7 branch tokens plus a padded column holding garbage."""
    logprobs = torch.tensor([[math.log(r) for r in RATIOS] + [0.0]], requires_grad=True)
    old = torch.tensor([[0.0] * 7 + [-math.inf]])
    adv = torch.tensor([ADVS + [math.nan]])
    mask = torch.tensor([[1.0] * 7 + [0.0]])
    return logprobs, old, adv, mask


def test_ppo_every_branch_by_hand():
    logprobs, old, adv, mask = _branch_batch()
    loss, stats = ppo_clip_loss(logprobs, old, adv, mask)
    assert sum(TOKEN_LOSSES) / 7 == pytest.approx(6.52 / 7)
    torch.testing.assert_close(loss, torch.tensor(6.52 / 7))
    loss.backward()
    torch.testing.assert_close(logprobs.grad, torch.tensor([[g / 7 for g in TOKEN_GRADS] + [0.0]]))
    assert stats["actor/clip_frac_low"] == pytest.approx(1 / 7)
    assert stats["actor/clip_frac_high"] == pytest.approx(1 / 7)
    assert stats["actor/dual_clip_frac"] == pytest.approx(1 / 7)
    assert stats["actor/ratio_mean"] == pytest.approx(12 / 7, rel=1e-6)
    # k1: mean(old - new) = -(2 ln 1.5 + 2 ln 0.5 + ln 5 + ln 2)/7 = -ln(5.625)/7
    assert stats["actor/approx_kl"] == pytest.approx(-math.log(5.625) / 7, rel=1e-5)
    assert all(isinstance(v, float) for v in stats.values())


def test_ppo_without_dual_clip():
    logprobs, old, adv, mask = _branch_batch()
    loss, stats = ppo_clip_loss(logprobs, old, adv, mask, dual_clip=None)
    torch.testing.assert_close(loss, torch.tensor((6.52 + 2.0) / 7))  # token 6 -> 5 uncapped
    loss.backward()
    assert logprobs.grad[0, 5].item() == pytest.approx(5.0 / 7)
    assert stats["actor/dual_clip_frac"] == 0.0


def test_ppo_argument_errors():
    logprobs, old, adv, mask = _branch_batch()
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip_loss(logprobs, old, adv, mask, dual_clip=1.0)
    with pytest.raises(ValueError, match="same shape|share one shape"):
        ppo_clip_loss(logprobs, old[:, :3], adv, mask)
    with pytest.raises(ValueError, match=r"valid: \['token-mean'"):
        ppo_clip_loss(logprobs, old, adv, mask, agg="sum")


def test_aggregation_modes_by_hand():
    loss_mat = torch.tensor([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    # token-mean: (1+2+3+4)/4
    assert aggregate_loss(loss_mat, mask, "token-mean").item() == pytest.approx(2.5)
    # seq-mean-token-mean: (mean(1,2,3) + 4 + 0) / 3 rows
    assert aggregate_loss(loss_mat, mask, "seq-mean-token-mean").item() == pytest.approx(2.0)
    # seq-mean-token-sum-norm: (6/4 + 4/4 + 0) / 3
    got = aggregate_loss(loss_mat, mask, "seq-mean-token-sum-norm").item()
    assert got == pytest.approx(2.5 / 3)
    got = aggregate_loss(loss_mat, mask, "seq-mean-token-sum-norm", norm_len=10, num_seqs=2)
    assert got.item() == pytest.approx(1.0 / 2)
    assert aggregate_loss(loss_mat, torch.zeros_like(mask), "token-mean").item() == 0.0
    assert masked_mean(loss_mat, mask).item() == pytest.approx(2.5)
    assert masked_mean(loss_mat, torch.zeros_like(mask)).item() == 0.0
    with pytest.raises(ValueError, match="seq-mean-token-sum-norm"):
        aggregate_loss(loss_mat, mask, "token-sum")
    with pytest.raises(ValueError, match="num_tokens"):
        aggregate_loss(loss_mat, mask, "token-mean", num_tokens=0)


def _split_rows(n: int, cuts: list[int]) -> list[slice]:
    edges = [0, *sorted(set(cuts)), n]
    return [slice(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 8),
    t=st.integers(1, 7),
    cuts=st.lists(st.integers(1, 7), max_size=3),
    agg=st.sampled_from(AGG_MODES),
)
def test_micro_batches_sum_to_full_batch(seed, n, t, cuts, agg):
    """Losses and gradients of micro-batches with global normalisers add up to the full batch.

    Micro-batches are also trimmed to their own longest row (as a packing trainer would);
    ``norm_len`` keeps the Dr. GRPO normaliser global.
    """
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, t, generator=g) < 0.7).float()
    old = -torch.rand(n, t, generator=g) * 3
    logprobs = (old + 0.4 * torch.randn(n, t, generator=g)).requires_grad_(True)
    adv = torch.randn(n, t, generator=g)
    full, _ = ppo_clip_loss(logprobs, old, adv, mask, agg=agg)
    (full_grad,) = torch.autograd.grad(full, logprobs)

    kw = {"num_tokens": mask.sum().clamp(min=1), "num_seqs": n, "norm_len": t}
    total = torch.zeros(())
    grad = torch.zeros(n, t)
    for rows in _split_rows(n, [c for c in cuts if c < n]):
        m = mask[rows]
        width = int(m.sum(0).nonzero().max()) + 1 if m.any() else 1
        lp = logprobs[rows, :width].detach().requires_grad_(True)
        part, _ = ppo_clip_loss(
            lp, old[rows, :width], adv[rows, :width], m[:, :width], agg=agg, **kw
        )
        (part_grad,) = torch.autograd.grad(part, lp)
        total = total + part.detach()
        grad[rows, :width] += part_grad
    torch.testing.assert_close(total, full.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, full_grad, rtol=1e-6, atol=1e-7)
