"""The method registry: one entry per method saying its teacher pass and how its loss is formed."""

from __future__ import annotations

from dataclasses import replace

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
from rlsd.algo.credit import rlsd_clip_stats_all, rlsd_credit_stats
from rlsd.algo.methods import TeacherPrompt


def test_each_builtin_method_is_one_entry_naming_its_teacher_pass():
    assert {"grpo", "rlsd", "opsd"} <= set(method_names())
    assert get_method("grpo").teacher is TeacherPass.NONE
    assert get_method("rlsd").teacher is TeacherPass.TOKEN_LOGPROBS
    assert get_method("opsd").teacher is TeacherPass.DISTRIBUTION
    scaling = [m for m in METHODS.values() if m.teacher_scales_advantage]
    assert scaling == [get_method("rlsd"), get_method("rlsd-contrast")]


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


def test_study_arms_are_registry_entries_declaring_their_teacher():
    opd, contrast = get_method("opd"), get_method("rlsd-contrast")
    assert opd.teacher is TeacherPass.TOKEN_LOGPROBS and not opd.teacher_scales_advantage
    assert opd.requires_teacher_model and opd.teacher_prompt is TeacherPrompt.STUDENT
    assert contrast.teacher is TeacherPass.CONTRAST_LOGPROBS
    assert not contrast.requires_teacher_model
    assert contrast.teacher_prompt is TeacherPrompt.TEMPLATE
    assert get_method("rlsd").teacher_prompt is TeacherPrompt.TEMPLATE


def _masked_logprobs(x: LossInputs, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.where(x.mask.bool(), -2.0 * torch.rand(x.mask.shape, generator=gen), 0.0)


def test_opd_credit_is_the_detached_teacher_minus_student_log_ratio_in_the_surrogate():
    x0 = _inputs(None)
    t_logp = _masked_logprobs(x0, 3)
    x = _inputs(TeacherOutput(TeacherPass.TOKEN_LOGPROBS, token_logprobs=t_logp))
    out = get_method("opd").loss(x)
    logp = _student_logprobs(x)
    expected_adv = (t_logp - logp.detach()) * x.mask
    torch.testing.assert_close(out.token_advantages, expected_adv)
    expected, _ = ppo_clip_loss(logp, logp.detach(), expected_adv, x.mask)
    torch.testing.assert_close(out.loss, expected)
    opd_stats, weight = out.stats[0]
    assert weight == x.num_tokens
    n = x.mask.sum()
    assert opd_stats["opd/reverse_kl"] == pytest.approx(float(-expected_adv.sum() / n), abs=1e-6)
    assert opd_stats["opd/adv_neg_frac"] == pytest.approx(float((expected_adv < 0).sum() / n))
    # the verifier's advantages play no part: OPD is pure distillation
    x_other = replace(_inputs(x.teacher), advantages=-x.advantages)
    torch.testing.assert_close(get_method("opd").loss(x_other).loss, out.loss)


def test_opd_steps_bring_the_student_distribution_to_the_teacher():
    # one-hot hidden states make the head rows the logits of each position: logits = W[:, p]
    torch.manual_seed(0)
    P, V, K = 3, 6, 64  # positions, vocabulary, samples per position
    teacher_logits = 2.0 * torch.randn(P, V)
    head = torch.zeros(V, P, requires_grad=True)  # the student starts uniform
    gen = torch.Generator().manual_seed(1)

    def reverse_kl() -> float:
        s = torch.log_softmax(head.detach().T, -1)
        t = torch.log_softmax(teacher_logits, -1)
        return float((s.exp() * (s - t)).sum(-1).mean())

    kls = [reverse_kl()]
    for _ in range(30):
        probs = torch.softmax(head.detach().T, -1)
        targets = torch.multinomial(probs, K, replacement=True, generator=gen)  # [P, K]
        pos = torch.arange(P).repeat_interleave(K)
        targets = targets.reshape(-1)
        t_logp = torch.log_softmax(teacher_logits, -1)[pos, targets].view(P, K)
        mask = torch.ones(P, K)
        rows = torch.arange(P).repeat_interleave(K)
        cols = torch.arange(K).repeat(P)
        x = LossInputs(
            hidden=torch.nn.functional.one_hot(pos, P).float(),
            weight=head,
            bias=None,
            targets=targets,
            rows=rows,
            cols=cols,
            mask=mask,
            advantages=torch.zeros(P),
            teacher=TeacherOutput(TeacherPass.TOKEN_LOGPROBS, token_logprobs=t_logp),
            lam=0.0,
            settings=MethodSettings(),
            norm_tokens=P * K,
            norm_seqs=P,
            norm_len=K,
        )
        get_method("opd").loss(x).loss.backward()
        with torch.no_grad():
            head -= 2.0 * head.grad
            head.grad = None
        kls.append(reverse_kl())
    assert kls[0] > 0.5
    assert kls[-1] < 0.1 * kls[0]


def test_rlsd_contrast_credit_is_rlsd_measured_against_the_null_teacher():
    x0 = _inputs(None)
    priv, null = _masked_logprobs(x0, 4), _masked_logprobs(x0, 5)
    teacher = TeacherOutput(TeacherPass.CONTRAST_LOGPROBS, token_logprobs=priv,
                            baseline_logprobs=null)  # fmt: skip
    x = _inputs(teacher, lam=0.7)
    out = get_method("rlsd-contrast").loss(x)
    expected = rlsd_token_advantages(x.advantages, priv, null, x.mask, 0.7, 0.3)
    torch.testing.assert_close(out.token_advantages, expected)
    # one token by hand: row 0 (A = 1), token 1
    w = torch.exp(torch.sign(x.advantages[0]) * (priv[0, 1] - null[0, 1])).clamp(0.7, 1.3)
    assert float(out.token_advantages[0, 1]) == pytest.approx(float(1.0 * (0.3 + 0.7 * w)))
    # the student's log-probs do not enter the credit, unlike RLSD's
    shifted = replace(x, hidden=x.hidden.detach() * 3.0)
    torch.testing.assert_close(get_method("rlsd-contrast").loss(shifted).token_advantages, expected)
    rlsd_like = TeacherOutput(TeacherPass.TOKEN_LOGPROBS, token_logprobs=priv)
    assert not torch.allclose(get_method("rlsd").loss(_inputs(rlsd_like, 0.7)).token_advantages,
                              expected)  # fmt: skip
    stats = dict(out.stats[0][0])
    assert stats.items() >= rlsd_credit_stats(x.advantages, priv, null, x.mask, 0.3).items()
    delta_c = (priv - null)[((x.advantages != 0)[:, None] * x.mask).bool()]
    assert stats["rlsd/delta_neg_frac"] == pytest.approx(float((delta_c < 0).float().mean()))


def test_rlsd_logs_both_clip_fraction_definitions_with_their_weights():
    x0 = _inputs(None)
    t_logp = _masked_logprobs(x0, 6)
    x = _inputs(TeacherOutput(TeacherPass.TOKEN_LOGPROBS, token_logprobs=t_logp))
    out = get_method("rlsd").loss(x)
    by_key = {k: (v, w) for stats, w in out.stats for k, v in stats.items()}
    student = _student_logprobs(x).detach()
    informative = float(((x.advantages != 0)[:, None] * x.mask).sum())
    assert by_key["rlsd/weight_clip_frac"][1] == informative == 6.0
    assert by_key["rlsd/delta_neg_frac"][1] == informative
    all_stats = rlsd_clip_stats_all(x.advantages, t_logp, student, x.mask, 0.3)
    for k, v in all_stats.items():
        assert by_key[k] == (pytest.approx(v), float(x.num_tokens))
    delta = (t_logp - student)[((x.advantages != 0)[:, None] * x.mask).bool()]
    assert by_key["rlsd/delta_neg_frac"][0] == pytest.approx(float((delta < 0).float().mean()))


def test_contrast_teacher_output_micro_batch_slices_both_passes():
    a, b = torch.arange(12.0).view(3, 4), -torch.arange(12.0).view(3, 4)
    out = TeacherOutput(TeacherPass.CONTRAST_LOGPROBS, token_logprobs=a, baseline_logprobs=b)
    part = out.micro_batch([0, 2], 3, slice(0, 0), torch.device("cpu"))
    assert torch.equal(part.token_logprobs, a[[0, 2], :3])
    assert torch.equal(part.baseline_logprobs, b[[0, 2], :3])
