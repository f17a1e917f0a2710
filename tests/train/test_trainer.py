"""The trainer on a tiny model: every algorithm trains, λ=0 RLSD is GRPO, the teacher matters."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rlsd.tasks import ArithmeticTaskConfig, ChatMessage, Task, generate_arithmetic_tasks
from rlsd.train.batch import (
    PrivilegedLeakError,
    student_prompt_ids,
    tasks_for_step,
    teacher_messages,
)
from rlsd.train.config import load_config
from rlsd.train.teacher import SelfTeacher
from rlsd.train.trainer import ResumeError, train
from tests.conftest import tiny_config

METHOD_METRICS = {
    "reward/mean",
    "reward/std",
    "accuracy",
    "groups/zero_variance_frac",
    "response/length_mean",
    "response/length_max",
    "response/clipped_frac",
    "actor/entropy",
    "actor/clip_frac_low",
    "actor/clip_frac_high",
    "actor/grad_norm",
    "rlsd/lambda",
    "perf/tokens_per_s",
    "time/generate",
    "time/verify",
    "time/teacher",
    "time/old_logprob",
    "time/update",
}
RLSD_METRICS = {"rlsd/weight_mean", "rlsd/weight_std", "rlsd/weight_clip_frac"}


def _weights(run_dir):
    return load_file(str(run_dir / "final" / "model.safetensors"))


@pytest.mark.parametrize("algo", ["rlsd", "grpo", "opsd"])
def test_each_algorithm_trains_and_logs_the_method_metrics(algo, tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, tmp_path / algo, **{"algo.name": algo})
    result = train(cfg, show_progress=False)
    assert [m["step"] for m in result.metrics] == [1, 2]
    for m in result.metrics:
        ppo_only = {"actor/clip_frac_low", "actor/clip_frac_high"} if algo == "opsd" else set()
        assert METHOD_METRICS - ppo_only <= m.keys()
        if algo == "rlsd":
            assert m.keys() >= RLSD_METRICS
            assert 0.8 - 1e-6 <= m["rlsd/weight_mean"] <= 1.2 + 1e-6
        if algo == "opsd":
            assert m["opsd/jsd_mean"] >= 0
    # rewards vary on the toy verifier, so the policy must have moved
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = _weights(result.output_dir)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert result.eval_before is not None and result.eval_after is not None
    saved = load_config(result.output_dir / "config.yaml")
    assert saved == cfg, "the fully resolved config is saved with the run"
    assert json.loads((result.output_dir / "eval_after.json").read_text())["num_tasks"] == 8


def test_rlsd_with_lambda_zero_is_exactly_grpo(tiny_model_dir, tmp_path):
    grpo = train(
        tiny_config(tiny_model_dir, tmp_path / "g", **{"algo.name": "grpo"}), show_progress=False
    )
    rlsd = train(
        tiny_config(tiny_model_dir, tmp_path / "r", **{"algo.name": "rlsd", "algo.lam0": 0.0}),
        show_progress=False,
    )
    a, b = _weights(grpo.output_dir), _weights(rlsd.output_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(grpo.metrics, rlsd.metrics, strict=True):
        assert x["reward/mean"] == y["reward/mean"] and x["actor/loss"] == y["actor/loss"]


def test_rlsd_credit_changes_the_update(tiny_model_dir, tmp_path):
    kw = {"run.steps": 1, "eval.num_tasks": 0}
    grpo = train(
        tiny_config(tiny_model_dir, tmp_path / "g", **{"algo.name": "grpo"}, **kw),
        show_progress=False,
    )
    rlsd = train(
        tiny_config(
            tiny_model_dir,
            tmp_path / "r",
            **{"algo.name": "rlsd", "algo.lam0": 1.0, "algo.eps_w": 0.5},
            **kw,
        ),
        show_progress=False,
    )
    a, b = _weights(grpo.output_dir), _weights(rlsd.output_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    assert rlsd.metrics[0]["rlsd/lambda"] == 1.0


def test_frozen_teacher_and_shared_prefix_off_train_too(tiny_model_dir, tmp_path):
    cfg = tiny_config(
        tiny_model_dir,
        tmp_path / "t",
        **{"teacher.sync_interval": 2, "run.shared_prefix": False, "run.steps": 3},
    )
    result = train(cfg, show_progress=False)
    assert len(result.metrics) == 3
    ckpt = sorted((result.output_dir / "checkpoints").glob("step-*"))[-1]
    # the frozen teacher is registered with accelerate's state after the scheduler
    teacher = torch.load(ckpt / "accelerate" / "custom_checkpoint_1.pkl", weights_only=True)
    assert teacher.keys() == _weights(result.output_dir).keys() | {"lm_head.weight"}


def test_self_teacher_sync_schedule():
    policy = torch.nn.Linear(2, 2)
    live = SelfTeacher(policy, 0)
    assert live.module is policy and not live.maybe_sync(0)
    frozen = SelfTeacher(policy, 2)
    assert frozen.module is not policy
    with torch.no_grad():
        policy.weight.add_(1.0)
    assert not frozen.maybe_sync(1)
    assert not torch.equal(frozen.module.weight, policy.weight)
    assert frozen.maybe_sync(2)
    assert torch.equal(frozen.module.weight, policy.weight)
    assert not frozen.module.weight.requires_grad


def test_student_prompt_with_privileged_context_is_refused(smollm2):
    # model_construct skips the record's own validator, as a task from a buggy source might.
    task = Task.model_construct(
        id="leaky",
        prompt=[ChatMessage(role="user", content="Q: 2+2? The worked solution: 2 + 2 = 4")],
        answer="4",
        privileged_context="The worked solution: 2 + 2 = 4",
        verifier="math-answer",
        images=[],
        split="train",
        source="test",
        metadata={},
    )
    with pytest.raises(PrivilegedLeakError, match="leaky"):
        student_prompt_ids(smollm2.tokenizer, task)


def test_teacher_prompt_shows_privileged_context_and_student_prompt_does_not(smollm2):
    train_tasks, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=3, n_heldout=1))
    cfg = load_config(None)
    for t in train_tasks:
        student = smollm2.tokenizer.decode(student_prompt_ids(smollm2.tokenizer, t))
        teacher = teacher_messages(t, cfg.teacher.prompt_template)[-1]["content"]
        assert t.privileged_context in teacher and t.privileged_context not in student


def test_step_batches_are_a_pure_function_of_seed_and_step():
    tasks, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=10, n_heldout=1))
    a = [t.id for s in range(6) for t in tasks_for_step(tasks, s, 4, seed=1)]
    assert a == [t.id for s in range(6) for t in tasks_for_step(tasks, s, 4, seed=1)]
    # each epoch visits every task once
    assert sorted(a[:10]) == sorted(t.id for t in tasks)
    assert a != [t.id for s in range(6) for t in tasks_for_step(tasks, s, 4, seed=2)]


def test_existing_run_needs_resume_or_overwrite(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, tmp_path / "x", **{"run.steps": 1, "eval.num_tasks": 0})
    train(cfg, show_progress=False)
    with pytest.raises(ResumeError, match="--resume"):
        train(cfg, show_progress=False)
    changed = tiny_config(
        tiny_model_dir, tmp_path / "x", **{"run.steps": 2, "eval.num_tasks": 0, "optim.lr": 1e-3}
    )
    with pytest.raises(ResumeError, match="optim.lr"):
        train(changed, resume=True, show_progress=False)


def test_non_finite_gradient_skips_the_update_and_keeps_training(
    tiny_model_dir, tmp_path, monkeypatch
):
    import dataclasses

    from rlsd.algo import METHODS

    real = METHODS["grpo"].loss

    def poisoned(inputs):
        out = real(inputs)
        return dataclasses.replace(out, loss=out.loss * float("nan"))

    monkeypatch.setitem(METHODS, "grpo", dataclasses.replace(METHODS["grpo"], loss=poisoned))
    cfg = tiny_config(
        tiny_model_dir, tmp_path / "nan", **{"algo.name": "grpo", "eval.num_tasks": 0}
    )
    result = train(cfg, show_progress=False)
    assert [m["actor/skipped_step"] for m in result.metrics] == [1.0, 1.0]
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = _weights(result.output_dir)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_teacher_skips_groups_without_advantage_and_the_credit_is_unchanged(
    tiny_model_dir, tmp_path
):
    """Groups whose responses all scored alike (A = 0) are not scored by the teacher: the
    token advantages of every row, and the credit metrics, come out the same as scoring all."""
    from rlsd import algo
    from rlsd.train.forward import ResponseIndex
    from rlsd.train.trainer import local_tasks, rollout_phase, setup, teacher_phase

    cfg = tiny_config(tiny_model_dir, tmp_path / "r", **{"algo.name": "rlsd", "algo.lam0": 1.0})
    s = setup(cfg, overwrite=True)
    tasks = local_tasks(s, 0)
    rollout = rollout_phase(s, tasks, 0)
    index = ResponseIndex.build(rollout.response_ids)
    G = cfg.rollout.group_size
    advantages = torch.linspace(-1.0, 1.0, len(tasks) * G)
    advantages[G : 3 * G] = 0.0  # groups 1 and 2 carry no signal
    everything = teacher_phase(s, tasks, rollout, index).token_logprobs
    skipping = teacher_phase(s, tasks, rollout, index, advantages).token_logprobs
    assert everything.shape == skipping.shape == index.mask.shape
    assert torch.equal(skipping[G : 3 * G], torch.zeros_like(skipping[G : 3 * G]))
    informative = list(range(G)) + list(range(3 * G, 4 * G))
    torch.testing.assert_close(skipping[informative], everything[informative], atol=1e-5, rtol=0)
    student = everything - 0.3 * index.mask  # any student log-probs
    a = algo.rlsd_token_advantages(advantages, everything, student, index.mask, 1.0, 0.2)
    b = algo.rlsd_token_advantages(advantages, skipping, student, index.mask, 1.0, 0.2)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    sa = algo.rlsd_credit_stats(advantages, everything, student, index.mask, 0.2)
    sb = algo.rlsd_credit_stats(advantages, skipping, student, index.mask, 0.2)
    assert sa == pytest.approx(sb, abs=1e-5)
    # nothing informative: no teacher forward at all
    none = teacher_phase(s, tasks, rollout, index, torch.zeros(len(tasks) * G))
    assert not none.token_logprobs.any()
