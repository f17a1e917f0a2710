"""The method registry: one entry per method saying its teacher pass and how its loss is formed."""

from __future__ import annotations

import pytest
import torch

from rlsd.algo import (
    METHODS,
    LossInputs,
    Method,
    MethodSettings,
    TeacherOutput,
    TeacherPass,
    generalized_jsd,
    get_method,
    method_names,
    ppo_clip_loss,
    register_method,
    rlsd_token_advantages,
)


def test_each_builtin_method_is_one_entry_naming_its_teacher_pass():
    assert {"grpo", "rlsd", "opsd"} <= set(method_names())
    assert get_method("grpo").teacher is TeacherPass.NONE
    assert get_method("rlsd").teacher is TeacherPass.TOKEN_LOGPROBS
    assert get_method("opsd").teacher is TeacherPass.DISTRIBUTION
    assert [m for m in METHODS.values() if m.teacher_scales_advantage] == [get_method("rlsd")]


def test_unknown_method_lists_the_valid_ones_and_names_register_once():
    with pytest.raises(ValueError, match=r"unknown method 'ppo'.*'grpo'.*'opsd'.*'rlsd'"):
        get_method("ppo")
    clash = Method("grpo", "another grpo", TeacherPass.NONE, get_method("grpo").loss)
    with pytest.raises(ValueError, match="already registered"):
        register_method(clash)
    assert register_method(get_method("grpo")) is get_method("grpo")  # the same entry is fine


def _inputs(teacher: TeacherOutput | None, lam: float = 1.0) -> LossInputs:
    torch.manual_seed(0)
    lengths = [3, 1, 2, 2]
    rows = torch.tensor([i for i, n in enumerate(lengths) for _ in range(n)])
    cols = torch.tensor([j for n in lengths for j in range(n)])
    mask = torch.zeros(len(lengths), max(lengths))
    mask[rows, cols] = 1.0
    M, H, V = int(mask.sum()), 5, 7
    return LossInputs(
        hidden=torch.randn(M, H, requires_grad=True),
        weight=torch.randn(V, H),
        bias=None,
        targets=torch.randint(0, V, (M,)),
        rows=rows,
        cols=cols,
        mask=mask,
        advantages=torch.tensor([1.0, -1.0, 0.5, 0.0]),
        teacher=teacher,
        lam=lam,
        settings=MethodSettings(temperature=0.8, teacher_temperature=1.3, eps_w=0.3),
        norm_tokens=M,
        norm_seqs=4,
        norm_len=3,
    )


def _student_logprobs(x: LossInputs) -> torch.Tensor:
    logits = (x.hidden @ x.weight.T) / x.settings.temperature
    flat = torch.log_softmax(logits, -1).gather(1, x.targets[:, None]).squeeze(1)
    return x.scatter(flat)


def test_grpo_loss_is_the_ppo_surrogate_with_uniform_credit_at_the_sampling_temperature():
    x = _inputs(None)
    out = get_method("grpo").loss(x)
    logp = _student_logprobs(x)
    expected, _ = ppo_clip_loss(logp, logp.detach(), x.advantages[:, None] * x.mask, x.mask)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.token_advantages, x.advantages[:, None] * x.mask)
    assert out.entropy.shape == (x.num_tokens,)
    assert dict(out.stats[-1][0]).keys() >= {"actor/clip_frac_low", "actor/approx_kl"}
    assert out.stats[-1][1] == x.num_tokens


def test_rlsd_credit_reads_the_teacher_token_logprobs():
    x0 = _inputs(None)
    t_logp = torch.where(x0.mask.bool(), -torch.rand(x0.mask.shape), torch.zeros(()))
    x = _inputs(TeacherOutput(TeacherPass.TOKEN_LOGPROBS, token_logprobs=t_logp), lam=1.0)
    out = get_method("rlsd").loss(x)
    logp = _student_logprobs(x).detach()
    expected = rlsd_token_advantages(x.advantages, t_logp, logp, x.mask, 1.0, 0.3)
    torch.testing.assert_close(out.token_advantages, expected)
    credit, weight = out.stats[0]
    assert "rlsd/weight_mean" in credit and weight == 6.0  # the A != 0 tokens


def test_opsd_teacher_distribution_uses_the_teacher_head_and_temperature():
    x0 = _inputs(None)
    t_hidden = torch.randn(x0.num_tokens, 5)
    t_weight = torch.randn(7, 5)
    teacher = TeacherOutput(TeacherPass.DISTRIBUTION, hidden=t_hidden, head_weight=t_weight)
    torch.testing.assert_close(teacher.logits(), t_hidden @ t_weight.T)
    x = _inputs(teacher)
    out = get_method("opsd").loss(x)
    s_logits = x.hidden @ x.weight.T
    jsd = generalized_jsd(s_logits, t_hidden @ t_weight.T, 0.5, temperature=0.8,
                          teacher_temperature=1.3)  # fmt: skip
    torch.testing.assert_close(out.loss, jsd.mean())
    assert out.token_advantages is None


def test_teacher_output_micro_batch_slices_what_the_pass_holds():
    logp = torch.arange(12.0).view(3, 4)
    part = TeacherOutput(TeacherPass.TOKEN_LOGPROBS, token_logprobs=logp).micro_batch(
        [1, 2], 2, slice(0, 0), torch.device("cpu")
    )
    assert torch.equal(part.token_logprobs, logp[1:3, :2])
    hidden = torch.arange(10.0).view(5, 2)
    dist = TeacherOutput(TeacherPass.DISTRIBUTION, hidden=hidden, head_weight=torch.eye(2))
    part = dist.micro_batch([0], 3, slice(1, 4), torch.device("cpu"))
    assert torch.equal(part.hidden, hidden[1:4]) and part.head_weight is dist.head_weight
    with pytest.raises(ValueError, match="no distribution"):
        TeacherOutput(TeacherPass.NONE).logits()


def test_jsd_teacher_temperature_scales_the_teacher_side_only():
    torch.manual_seed(1)
    s, t = torch.randn(4, 9), torch.randn(4, 9)
    same = generalized_jsd(s, t, 0.5, temperature=0.7)
    assert torch.equal(same, generalized_jsd(s, t, 0.5, temperature=0.7, teacher_temperature=0.7))
    split = generalized_jsd(s, t, 0.5, temperature=0.7, teacher_temperature=2.0)
    torch.testing.assert_close(split, generalized_jsd(s / 0.7, t / 2.0, 0.5))
    with pytest.raises(ValueError, match="teacher_temperature must be > 0"):
        generalized_jsd(s, t, 0.5, teacher_temperature=0.0)
