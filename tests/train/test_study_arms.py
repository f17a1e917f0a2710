"""The study's arms on the tiny model: RLSD-null (the template without its privileged context),
rlsd-contrast (Δ against the null-context teacher), OPD (a separate teacher model), and the two
definitions of the weight clip fraction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlsd import algo
from rlsd.algo.credit import rlsd_clip_stats_all, rlsd_credit_stats, rlsd_delta_stats
from rlsd.configs.loading import parse_overrides
from rlsd.models.loader import load_tokenizer
from rlsd.tasks import ArithmeticTaskConfig, generate_arithmetic_tasks, leak
from rlsd.train.batch import PrivilegedLeakError, teacher_messages, teacher_prompt_ids
from rlsd.train.config import PAPER_TEACHER_TEMPLATE
from rlsd.train.forward import ResponseIndex
from rlsd.train.prompts import PromptEncoder
from rlsd.train.rewards import score_responses
from rlsd.train.teacher import TeacherTokenizerMismatch, check_shared_tokenizer, teacher_views
from rlsd.train.trainer import (
    Session,
    local_tasks,
    rollout_phase,
    setup,
    teacher_phase,
    train,
    update_phase,
)
from tests.conftest import tiny_config
from tests.helpers.tiny_teacher import make_tiny_model_other_tokenizer, make_tiny_teacher

NEW_METRICS = {
    "rlsd/weight_clip_frac",
    "rlsd/weight_clip_frac_all",
    "rlsd/weight_clip_frac_low_all",
    "rlsd/weight_clip_frac_high_all",
    "rlsd/delta_mean",
    "rlsd/delta_neg_frac",
    "actor/entropy",
    "response/length_mean",
}


@pytest.fixture(scope="module")
def tiny_teacher_dir(tmp_path_factory) -> Path:
    return make_tiny_teacher(tmp_path_factory.mktemp("teacher") / "model")


def _set(model_dir: Path, out: Path, *pairs: str):
    """The tiny-model config with ``--set``-style ``key=value`` overrides, parsed as ``rlsd train
    --set`` parses them."""
    parsed = parse_overrides(["eval.num_tasks=0", *pairs], error=ValueError)
    return tiny_config(model_dir, out, **parsed)


def _first_batch(s: Session):
    """Step 0's tasks, rollout, GRPO advantages and response index, as ``train_step`` makes."""
    cfg = s.cfg
    tasks = local_tasks(s, 0)
    rollout = rollout_phase(s, tasks, 0)
    G = cfg.rollout.group_size
    group_tasks = [t for t in tasks for _ in range(G)]
    results = score_responses(rollout.texts, group_tasks, cfg.task.verifier)
    rewards = torch.tensor([r.score for r in results], dtype=torch.float32)
    advantages = algo.get_advantage_estimator(cfg.algo.advantage)(rewards, G)
    return tasks, rollout, advantages, ResponseIndex.build(rollout.response_ids)


def _token_logprobs(module, prompt: list[int], response: list[int]) -> torch.Tensor:
    """log p(response_t | prompt, response_<t) by one plain full-sequence forward."""
    with torch.no_grad():
        logits = module(input_ids=torch.tensor([prompt + list(response)])).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(response)], -1)
    return logp.gather(1, torch.tensor(response)[:, None]).squeeze(1)


# --------------------------------------------------------------------------------------------
# RLSD-null


def test_null_context_teacher_prompt_is_the_template_with_the_context_removed(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    tasks, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=6, n_heldout=1))
    for task in tasks:
        null = tok.decode(teacher_prompt_ids(tok, task, PAPER_TEACHER_TEMPLATE, "none"))
        priv = tok.decode(teacher_prompt_ids(tok, task, PAPER_TEACHER_TEMPLATE, "privileged"))
        assert leak.contains(priv, task.privileged_context)
        assert not leak.contains(null, task.privileged_context)
        # exactly the privileged prompt minus the context: the template's wording is all kept
        assert null == priv.replace(task.privileged_context, "", 1)
        question = task.messages()[-1]["content"]
        last = teacher_messages(task, PAPER_TEACHER_TEMPLATE, "none")[-1]["content"]
        assert last == PAPER_TEACHER_TEMPLATE.format(question=question, privileged_context="")


def test_null_context_teacher_prompt_that_would_show_the_context_is_refused(tiny_model_dir):
    tok = load_tokenizer(tiny_model_dir)
    task = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=1, n_heldout=1))[0][0]
    # a template that spells a task's context out by itself defeats the null arm
    template = "{question}\n" + task.privileged_context + "\n{privileged_context}"
    with pytest.raises(PrivilegedLeakError, match="null-context teacher prompt"):
        teacher_prompt_ids(tok, task, template, "none")
    teacher_prompt_ids(tok, task, template, "privileged")  # the privileged one may show it


def test_rlsd_null_teacher_pass_scores_with_the_null_prompt(tiny_model_dir, tmp_path):
    cfg = _set(tiny_model_dir, tmp_path / "null", "algo.name=rlsd", "teacher.context=none")
    s = setup(cfg, overwrite=True)
    assert teacher_views(s.method, cfg.teacher) == ("none",)
    tasks, rollout, advantages, index = _first_batch(s)
    out = teacher_phase(s, tasks, rollout, index, advantages)
    G = cfg.rollout.group_size
    row = int((advantages != 0).nonzero()[0])
    task, response = tasks[row // G], rollout.response_ids[row]
    tok = s.policy.tokenizer
    null_ids = teacher_prompt_ids(tok, task, cfg.teacher.prompt_template, "none")
    priv_ids = teacher_prompt_ids(tok, task, cfg.teacher.prompt_template, "privileged")
    expected = _token_logprobs(s.model, null_ids, response)
    got = out.token_logprobs[row, : len(response)]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, _token_logprobs(s.model, priv_ids, response), atol=1e-4)


def test_rlsd_null_arm_trains_and_logs_the_study_metrics(tiny_model_dir, tmp_path):
    cfg = _set(tiny_model_dir, tmp_path / "null", "algo.name=rlsd", "teacher.context=none")
    result = train(cfg, show_progress=False)
    assert [m["step"] for m in result.metrics] == [1, 2]
    for m in result.metrics:
        assert m.keys() >= NEW_METRICS
        assert m["rlsd/weight_clip_frac_all"] == pytest.approx(
            m["rlsd/weight_clip_frac_low_all"] + m["rlsd/weight_clip_frac_high_all"]
        )
        assert m["response/length_mean"] > 0 and m["actor/entropy"] > 0


# --------------------------------------------------------------------------------------------
# rlsd-contrast


def test_rlsd_contrast_credit_is_the_clipped_privileged_over_null_teacher_ratio(
    tiny_model_dir, tmp_path
):
    # ε_w as small as the tiny random model's Δ_c, so that some tokens clip and some do not
    eps_w = 0.004
    cfg = _set(tiny_model_dir, tmp_path / "c", "algo.name=rlsd-contrast", "algo.lam0=1.0",
               f"algo.eps_w={eps_w}")  # fmt: skip
    s = setup(cfg, overwrite=True)
    assert teacher_views(s.method, cfg.teacher) == ("privileged", "none")
    tasks, rollout, advantages, index = _first_batch(s)
    assert (advantages != 0).any()
    G = cfg.rollout.group_size
    tok, template = s.policy.tokenizer, cfg.teacher.prompt_template
    # by hand, before the update moves the (live) teacher
    hand: dict[int, torch.Tensor] = {}
    rlsd_w: dict[int, torch.Tensor] = {}
    for row in (advantages != 0).nonzero().flatten().tolist():
        task, response = tasks[row // G], rollout.response_ids[row]
        lp_priv = _token_logprobs(s.model, teacher_prompt_ids(tok, task, template), response)
        lp_null = _token_logprobs(
            s.model, teacher_prompt_ids(tok, task, template, "none"), response
        )
        lp_student = _token_logprobs(s.model, PromptEncoder.ids(s.prompts.student(task)), response)
        sign = torch.sign(advantages[row])
        hand[row] = torch.exp(sign * (lp_priv - lp_null))
        rlsd_w[row] = torch.exp(sign * (lp_priv - lp_student)).clamp(1 - eps_w, 1 + eps_w)
    teacher_out = teacher_phase(s, tasks, rollout, index, advantages)
    update = update_phase(s, tasks, rollout, advantages, teacher_out, index, 1.0, len(hand))
    assert {row for row, _ in update.credit_rows} == set(hand)
    clipped = unclipped = 0
    for row, token_adv in update.credit_rows:
        w = torch.tensor(token_adv) / float(advantages[row])  # λ = 1: Â / A is the weight
        torch.testing.assert_close(w, hand[row].clamp(1 - eps_w, 1 + eps_w), atol=2e-5, rtol=0)
        outside = (hand[row] - 1).abs() > eps_w
        clipped += int(outside.sum())
        unclipped += int((~outside).sum())
        assert not torch.allclose(w, rlsd_w[row], atol=1e-4, rtol=0)  # not RLSD's Δ
    assert clipped and unclipped


def test_rlsd_contrast_trains_two_steps(tiny_model_dir, tmp_path):
    cfg = _set(tiny_model_dir, tmp_path / "c2", "algo.name=rlsd-contrast", "algo.lam0=1.0")
    result = train(cfg, show_progress=False)
    assert [m["step"] for m in result.metrics] == [1, 2]
    first = result.metrics[0]
    assert first.keys() >= NEW_METRICS
    assert first["rlsd/lambda"] == 1.0 and first["time/teacher"] > 0
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(result.output_dir / "final" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert (result.output_dir / "credit_samples.jsonl").exists()


# --------------------------------------------------------------------------------------------
# OPD


def test_opd_teacher_is_the_separate_model_reading_the_student_prompt(
    tiny_model_dir, tiny_teacher_dir, tmp_path
):
    cfg = _set(tiny_model_dir, tmp_path / "o", "algo.name=opd",
               f"teacher.model={tiny_teacher_dir}", "optim.lr=1e-3")  # fmt: skip
    s = setup(cfg, overwrite=True)
    teacher = s.teacher.module
    assert teacher is not s.model and teacher.config.hidden_size == 96
    assert not any(p.requires_grad for p in teacher.parameters())
    assert teacher_views(s.method, cfg.teacher) == ("student",)
    tasks, rollout, advantages, index = _first_batch(s)
    G = cfg.rollout.group_size
    out = teacher_phase(s, tasks, rollout, index, advantages)
    student_prompts = [PromptEncoder.ids(s.prompts.student(tasks[r // G])) for r in range(len(rollout.response_ids))]  # fmt: skip

    def gap() -> float:
        """Mean squared log π_T - log π_S over the fixed batch's sampled tokens."""
        sq, n = 0.0, 0
        for row, response in enumerate(rollout.response_ids):
            lp_s = _token_logprobs(s.model, student_prompts[row], response)
            lp_t = _token_logprobs(teacher, student_prompts[row], response)
            sq += float(((lp_t - lp_s) ** 2).sum())
            n += len(response)
        return sq / n

    for row in (0, len(rollout.response_ids) - 1):
        response = rollout.response_ids[row]
        expected = _token_logprobs(teacher, student_prompts[row], response)
        torch.testing.assert_close(out.token_logprobs[row, : len(response)], expected,
                                   atol=1e-4, rtol=1e-4)  # fmt: skip
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    gaps = [gap()]
    for _ in range(3):  # the same batch each time: the student moves to the teacher on it
        update_phase(
            s, tasks, rollout, advantages, teacher_phase(s, tasks, rollout, index), index, 0.0
        )
        gaps.append(gap())
    assert gaps[1] < gaps[0] and gaps[-1] < 0.25 * gaps[0], gaps
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in teacher_before.items())


def test_opd_arm_trains_and_resumes(tiny_model_dir, tiny_teacher_dir, tmp_path):
    cfg = _set(
        tiny_model_dir, tmp_path / "o2", "algo.name=opd", f"teacher.model={tiny_teacher_dir}"
    )
    result = train(cfg, show_progress=False)
    assert [m["step"] for m in result.metrics] == [1, 2]
    assert all("opd/reverse_kl" in m and m["rlsd/lambda"] == 0.0 for m in result.metrics)
    ckpt = sorted((result.output_dir / "checkpoints").glob("step-*"))[-1]
    assert not (ckpt / "teacher.safetensors").exists()  # the teacher is read from teacher.model
    longer = cfg.model_copy(deep=True)
    longer.run.steps = 3
    resumed = train(longer, resume=True, show_progress=False)
    assert [m["step"] for m in resumed.metrics] == [1, 2, 3]


def test_a_teacher_model_with_another_tokenizer_is_refused(
    tiny_model_dir, tiny_teacher_dir, tmp_path
):
    other = make_tiny_model_other_tokenizer(tmp_path / "other", tiny_model_dir)
    cfg = _set(tiny_model_dir, tmp_path / "x", "algo.name=opd", f"teacher.model={other}")
    with pytest.raises(
        TeacherTokenizerMismatch, match=r"vocabularies differ.*<teacher_only_token>"
    ):
        setup(cfg, overwrite=True)
    # the same tokenizer (the wider teacher's) passes
    check_shared_tokenizer(load_tokenizer(tiny_model_dir), load_tokenizer(tiny_teacher_dir))


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        (["algo.name=opd"], "set teacher.model"),
        (["algo.name=grpo", "teacher.model=/nonexistent"], "uses no teacher"),
        (["algo.name=rlsd-contrast", "teacher.context=none"], "nothing to contrast"),
        (["algo.name=rlsd-contrast", "teacher.prompt=student"], "cannot read"),
    ],
)
def test_teacher_settings_the_method_cannot_use_are_refused(
    tiny_model_dir, tmp_path, pairs, message
):
    with pytest.raises(ValueError, match=message):
        setup(_set(tiny_model_dir, tmp_path / "x", *pairs), overwrite=True)


# --------------------------------------------------------------------------------------------
# The clip fraction under both definitions


def test_clip_fraction_definitions_on_a_hand_made_batch():
    # ε_w = 0.2. Row 0 (A = 2): Δ = [0.5, 0] -> w = [e^0.5 = 1.65, 1]: one high clip.
    # Row 1 (A = -1): Δ = [0.5, -0.1] -> w = e^-Δ = [0.61, 1.11]: one low clip.
    # Row 2 (A = 0): Δ = [3, -3] but w = 1: counted by the official definition only, unclipped.
    adv = torch.tensor([2.0, -1.0, 0.0])
    teacher = torch.tensor([[-0.5, -1.0], [-0.5, -1.1], [-1.0, -4.0]])
    student = torch.tensor([[-1.0, -1.0], [-1.0, -1.0], [-4.0, -1.0]])
    mask = torch.ones(3, 2)
    product = rlsd_credit_stats(adv, teacher, student, mask, eps_w=0.2)
    official = rlsd_clip_stats_all(adv, teacher, student, mask, eps_w=0.2)
    assert product["rlsd/weight_clip_frac"] == pytest.approx(2 / 4)  # over the A ≠ 0 tokens
    assert official == pytest.approx(
        {
            "rlsd/weight_clip_frac_all": 2 / 6,  # over every response token
            "rlsd/weight_clip_frac_low_all": 1 / 6,
            "rlsd/weight_clip_frac_high_all": 1 / 6,
        }
    )
    assert rlsd_delta_stats(adv, teacher, student, mask) == {"rlsd/delta_neg_frac": 1 / 4}
    # padding counts in neither
    mask[2, 1] = 0.0
    assert rlsd_clip_stats_all(adv, teacher, student, mask, 0.2)["rlsd/weight_clip_frac_all"] == (
        pytest.approx(2 / 5)
    )
