"""OPSD generalised-JSD distillation loss."""

import math

import numpy as np
import pytest
import torch

from rlsd.algo import generalized_jsd, opsd_jsd_loss


def _np_jsd(p_t, p_s, beta):
    m = beta * p_t + (1 - beta) * p_s
    kl = lambda a, b: float(np.sum(a * np.log(a / b)))  # noqa: E731
    return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)


def _logits(p):
    return torch.log(torch.tensor(p, dtype=torch.float32))


def test_jsd_hand_example_beta_half():
    p_t = np.array([0.5, 0.25, 0.25])
    p_s = np.array([0.25, 0.25, 0.5])
    # M = [0.375, 0.25, 0.375]; KL(T‖M) = 0.5 ln(4/3) + 0.25 ln(2/3) = 0.0424748 = KL(S‖M)
    expected = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3)
    assert expected == pytest.approx(0.0424748, abs=1e-7)
    assert _np_jsd(p_t, p_s, 0.5) == pytest.approx(expected)
    got = generalized_jsd(_logits(p_s) + 3.0, _logits(p_t) - 1.0, beta=0.5)  # shift-invariant
    assert got.item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_jsd_matches_numpy(beta):
    p_t = np.array([0.2, 0.3, 0.5])
    p_s = np.array([0.6, 0.2, 0.2])
    got = generalized_jsd(_logits(p_s), _logits(p_t), beta=beta).item()
    assert got == pytest.approx(_np_jsd(p_t, p_s, beta), abs=1e-6)


def test_beta_endpoints_are_kl_forms():
    p_t = np.array([0.2, 0.3, 0.5])
    p_s = np.array([0.6, 0.2, 0.2])
    forward_kl = float(np.sum(p_t * np.log(p_t / p_s)))  # KL(P_T‖P_S)
    reverse_kl = float(np.sum(p_s * np.log(p_s / p_t)))  # KL(P_S‖P_T)
    assert generalized_jsd(_logits(p_s), _logits(p_t), 0.0).item() == pytest.approx(
        forward_kl, abs=1e-6
    )
    assert generalized_jsd(_logits(p_s), _logits(p_t), 1.0).item() == pytest.approx(
        reverse_kl, abs=1e-6
    )
    # ... and they are the normalised limits of the interior formula
    eps = 1e-3
    assert _np_jsd(p_t, p_s, eps) / eps == pytest.approx(forward_kl, rel=1e-2)
    assert _np_jsd(p_t, p_s, 1 - eps) / eps == pytest.approx(reverse_kl, rel=1e-2)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(_logits(p_s), _logits(p_t), 1.5)


def test_equal_distributions_give_zero_and_beta_half_is_symmetric():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3, 11, generator=g)
    b = torch.randn(2, 3, 11, generator=g)
    mask = torch.ones(2, 3)
    for beta in (0.0, 0.3, 0.5, 1.0):
        loss, stats = opsd_jsd_loss(a, a.clone(), mask, beta=beta)
        assert abs(loss.item()) < 1e-6 and abs(stats["opsd/jsd_mean"]) < 1e-6
    ab = generalized_jsd(a, b, 0.5)
    ba = generalized_jsd(b, a, 0.5)
    torch.testing.assert_close(ab, ba, rtol=1e-5, atol=1e-6)
    assert (ab > 0).all()


def test_gradient_reaches_student_only_and_padding_is_safe():
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, 4, 7, generator=g)
    teacher = torch.randn(2, 4, 7, generator=g)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    student[0, 3] = math.nan
    teacher[1, 2] = -math.inf
    teacher[0, 0, 2] = -math.inf  # a vocabulary entry masked to -inf at a real token
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    loss, stats = opsd_jsd_loss(student, teacher, mask, temperature=0.9)
    loss.backward()
    assert teacher.grad is None
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    assert torch.equal(student.grad[~mask.bool()], torch.zeros(4, 7))
    assert student.grad[mask.bool()].abs().sum() > 0
    per_token = generalized_jsd(student.detach()[0, :3], teacher.detach()[0, :3], 0.5, 0.9)
    per_token = torch.cat(
        [per_token, generalized_jsd(student.detach()[1, :1], teacher.detach()[1, :1], 0.5, 0.9)]
    )
    torch.testing.assert_close(loss.detach(), per_token.mean())
    assert stats["opsd/jsd_mean"] == pytest.approx(per_token.mean().item(), abs=1e-6)


def test_opsd_aggregation_modes_and_errors():
    g = torch.Generator().manual_seed(2)
    student = torch.randn(3, 4, 5, generator=g)
    teacher = torch.randn(3, 4, 5, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    jsd = generalized_jsd(student, teacher)
    loss, _ = opsd_jsd_loss(student, teacher, mask, agg="seq-mean-token-mean")
    expected = (jsd[0, :2].mean() + jsd[1].mean()) / 3
    torch.testing.assert_close(loss, expected)
    loss, _ = opsd_jsd_loss(student, teacher, mask, num_tokens=12)
    torch.testing.assert_close(loss, (jsd[0, :2].sum() + jsd[1].sum()) / 12)
    with pytest.raises(ValueError, match="same shape"):
        opsd_jsd_loss(student, teacher[..., :4], mask)
    with pytest.raises(ValueError, match="valid"):
        opsd_jsd_loss(student, teacher, mask, agg="mean")
