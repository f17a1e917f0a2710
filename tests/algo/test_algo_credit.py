"""RLSD direction-aware token credit and the λ schedule."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsd.algo import (
    lambda_schedule,
    ppo_clip_loss,
    rlsd_credit_stats,
    rlsd_token_advantages,
    rlsd_token_weights,
)

PROP = settings(max_examples=80, deadline=None)

NONZERO_ADV = st.one_of(st.floats(1e-3, 5.0), st.floats(-5.0, -1e-3))


@st.composite
def rlsd_batches(draw, allow_zero_adv: bool = True):
    """Return ``(A [N], teacher [N,T], student [N,T], mask [N,T])`` as float32 tensors.

    Masked-out log-probs hold -inf / NaN / huge values to prove they cannot leak.
    """
    n = draw(st.integers(1, 4))
    t = draw(st.integers(1, 6))
    adv_el = st.one_of(st.just(0.0), NONZERO_ADV) if allow_zero_adv else NONZERO_ADV
    adv = draw(st.lists(adv_el, min_size=n, max_size=n))
    lp = st.floats(-12.0, 0.0)
    teacher = draw(st.lists(lp, min_size=n * t, max_size=n * t))
    student = draw(st.lists(lp, min_size=n * t, max_size=n * t))
    mask = draw(st.lists(st.booleans(), min_size=n * t, max_size=n * t))
    garbage = draw(st.sampled_from([-math.inf, math.nan, 1e30, -1e30]))

    mask_t = torch.tensor(np.array(mask).reshape(n, t))
    teacher_t = torch.tensor(np.array(teacher, dtype=np.float32).reshape(n, t))
    student_t = torch.tensor(np.array(student, dtype=np.float32).reshape(n, t))
    teacher_t[~mask_t] = garbage
    student_t[~mask_t] = -garbage if not math.isnan(garbage) else garbage
    return torch.tensor(adv, dtype=torch.float32), teacher_t, student_t, mask_t.float()


def _two_row_example():
    adv = torch.tensor([1.0, -2.0])
    teacher = torch.tensor([[-1.0, -2.0], [-0.5, -math.inf]])
    student = torch.tensor([[-1.1, -1.0], [-0.4, 5.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    return adv, teacher, student, mask


def test_rlsd_hand_example():
    adv, teacher, student, mask = _two_row_example()
    # Row 0 (A=+1): Δ = [0.1, -1.0] -> w = [e^0.1, e^-1] = [1.105171, 0.367879]
    #   clip to [0.8, 1.2] -> [1.105171, 0.8]; λ=0.5: Â = 0.5 + 0.5·w = [1.052585, 0.9]
    # Row 1 (A=-2): Δ = [-0.1, masked] -> w = exp(-Δ) = [1.105171, -]
    #   Â = -2·(0.5 + 0.5·1.105171) = -2.105171; masked token -> 0
    w = rlsd_token_weights(adv, teacher, student, mask)
    torch.testing.assert_close(w, torch.tensor([[1.105171, 0.367879], [1.105171, 1.0]]))
    out = rlsd_token_advantages(adv, teacher, student, mask, lam=0.5, eps_w=0.2)
    torch.testing.assert_close(out, torch.tensor([[1.052585, 0.9], [-2.105171, 0.0]]))
    assert out[1, 1].item() == 0.0 and not torch.isnan(out).any()


def test_rlsd_hand_example_clip_on_wrong_response():
    # A=-1, Δ = -2.5 -> w = e^2.5 = 12.18 -> clipped to 1.2; λ=0.25 -> Â = -(0.75 + 0.3) = -1.05
    out = rlsd_token_advantages(
        torch.tensor([-1.0]), torch.tensor([[-3.0]]), torch.tensor([[-0.5]]), torch.ones(1, 1), 0.25
    )
    torch.testing.assert_close(out, torch.tensor([[-1.05]]))


def test_credit_stats_hand_example():
    adv, teacher, student, mask = _two_row_example()
    stats = rlsd_credit_stats(adv, teacher, student, mask, eps_w=0.2)
    # selected tokens: raw w = [1.105171, 0.367879, 1.105171], clipped [1.105171, 0.8, 1.105171]
    clipped = torch.tensor([1.105171, 0.8, 1.105171])
    assert stats["rlsd/weight_mean"] == pytest.approx(clipped.mean().item(), abs=1e-6)
    assert stats["rlsd/weight_mean"] == pytest.approx(1.003447, abs=1e-6)
    assert stats["rlsd/weight_std"] == pytest.approx(clipped.std(correction=0).item(), abs=1e-6)
    assert stats["rlsd/weight_clip_frac"] == pytest.approx(1 / 3)
    assert stats["rlsd/delta_mean"] == pytest.approx((0.1 - 1.0 - 0.1) / 3, abs=1e-6)
    assert all(isinstance(v, float) for v in stats.values())


def test_credit_stats_ignore_zero_advantage_and_empty():
    teacher = torch.tensor([[-5.0, -1.0]])
    student = torch.tensor([[-1.0, -5.0]])
    empty = rlsd_credit_stats(torch.tensor([0.0]), teacher, student, torch.ones(1, 2))
    assert empty == {
        "rlsd/weight_mean": 0.0,
        "rlsd/weight_std": 0.0,
        "rlsd/weight_clip_frac": 0.0,
        "rlsd/delta_mean": 0.0,
    }
    none_masked = rlsd_credit_stats(torch.tensor([1.0]), teacher, student, torch.zeros(1, 2))
    assert set(none_masked.values()) == {0.0}


def test_rlsd_input_errors():
    adv, teacher, student, mask = _two_row_example()
    with pytest.raises(ValueError, match="lam"):
        rlsd_token_advantages(adv, teacher, student, mask, lam=1.5)
    with pytest.raises(ValueError, match="eps_w"):
        rlsd_token_advantages(adv, teacher, student, mask, lam=0.5, eps_w=-0.1)
    with pytest.raises(ValueError, match="teacher_logprobs"):
        rlsd_token_advantages(adv, teacher[:, :1], student, mask, lam=0.5)
    with pytest.raises(ValueError, match="advantages"):
        rlsd_token_advantages(adv[:, None], teacher, student, mask, lam=0.5)


def test_lambda_schedule_hand_values():
    assert lambda_schedule(0) == 0.5
    assert lambda_schedule(25) == 0.25
    assert lambda_schedule(50) == 0.0
    assert lambda_schedule(60) == 0.0
    assert lambda_schedule(30, lam0=0.5, decay_steps=60) == 0.25
    with pytest.raises(ValueError, match="decay_steps"):
        lambda_schedule(3, decay_steps=0)
    with pytest.raises(ValueError, match="step"):
        lambda_schedule(-1)


@PROP
@given(
    lam0=st.floats(0.0, 1.0),
    decay=st.integers(1, 500),
    extra=st.integers(0, 1000),
)
def test_lambda_reaches_zero_and_stays(lam0, decay, extra):
    assert lambda_schedule(decay, lam0, decay) == 0.0
    assert lambda_schedule(decay + extra, lam0, decay) == 0.0
    values = [lambda_schedule(k, lam0, decay) for k in range(0, decay + 2, max(1, decay // 7))]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert lambda_schedule(0, lam0, decay) == lam0


@PROP
@given(batch=rlsd_batches(), lam=st.floats(0.0, 1.0), eps_w=st.floats(0.0, 0.9))
def test_zero_advantage_gives_unit_weight_and_zero_credit(batch, lam, eps_w):
    _, teacher, student, mask = batch
    adv = torch.zeros(mask.shape[0])
    assert torch.equal(rlsd_token_weights(adv, teacher, student, mask), torch.ones_like(mask))
    token_adv = rlsd_token_advantages(adv, teacher, student, mask, lam, eps_w)
    assert torch.equal(token_adv, torch.zeros_like(mask))
    logprobs = torch.where(mask.bool(), student, 0.0).requires_grad_(True)
    loss, _ = ppo_clip_loss(logprobs, torch.zeros_like(mask), token_adv, mask)
    loss.backward()
    assert torch.equal(logprobs.grad, torch.zeros_like(mask))
    assert loss.item() == 0.0


@PROP
@given(batch=rlsd_batches(), lam=st.floats(0.0, 1.0), eps_w=st.floats(0.0, 0.9))
def test_sign_preserved_and_scale_bounded(batch, lam, eps_w):
    adv, teacher, student, mask = batch
    token_adv = rlsd_token_advantages(adv, teacher, student, mask, lam, eps_w)
    m = mask.bool()
    assert not torch.isnan(token_adv).any()
    assert torch.equal(token_adv[~m], torch.zeros_like(token_adv[~m]))
    a = adv[:, None].expand_as(token_adv)
    assert torch.equal(torch.sign(token_adv[m]), torch.sign(a[m]))

    w = rlsd_token_weights(adv, teacher, student, mask)
    assert (w > 0).all() and not torch.isnan(w).any()
    nz = m & (a != 0)
    ratio = token_adv[nz] / a[nz]
    lo, hi = (1 - lam) + lam * (1 - eps_w), (1 - lam) + lam * (1 + eps_w)
    assert (ratio >= lo - 1e-6).all() and (ratio <= hi + 1e-6).all()
    clipped = w.clamp(1 - eps_w, 1 + eps_w)[nz]
    assert (clipped >= 1 - eps_w).all() and (clipped <= 1 + eps_w).all()


@PROP
@given(
    batch=rlsd_batches(),
    agg=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]),
)
def test_lambda_zero_equals_grpo_exactly(batch, agg):
    adv, teacher, student, mask = batch
    token_adv = rlsd_token_advantages(adv, teacher, student, mask, lam=0.0)
    grpo_adv = adv[:, None].expand_as(mask)
    old = torch.where(mask.bool(), student, 0.0)
    shift = torch.linspace(-0.5, 0.5, mask.numel()).view_as(mask)
    lp1 = (old + shift).requires_grad_(True)
    lp2 = (old + shift).requires_grad_(True)
    loss_rlsd, stats_rlsd = ppo_clip_loss(lp1, old, token_adv, mask, agg=agg)
    loss_grpo, stats_grpo = ppo_clip_loss(lp2, old, grpo_adv, mask, agg=agg)
    assert torch.equal(loss_rlsd, loss_grpo)
    assert stats_rlsd == stats_grpo
    loss_rlsd.backward()
    loss_grpo.backward()
    assert torch.equal(lp1.grad, lp2.grad)


@PROP
@given(batch=rlsd_batches(), lam=st.floats(0.0, 1.0))
def test_no_gradient_reaches_the_teacher(batch, lam):
    adv, teacher, student, mask = batch
    plain = rlsd_token_advantages(adv, teacher, student, mask, lam)
    t = teacher.clone().requires_grad_(True)
    a = adv.clone().requires_grad_(True)
    s = student.clone().requires_grad_(True)
    tracked = rlsd_token_advantages(a, t, s, mask, lam)
    assert not tracked.requires_grad and tracked.grad_fn is None
    assert torch.equal(plain, tracked)
    old = torch.where(mask.bool(), student, 0.0)
    lp = old.clone().requires_grad_(True)
    loss, _ = ppo_clip_loss(lp, old, tracked, mask)
    loss.backward()
    assert t.grad is None and a.grad is None and s.grad is None
