"""The trainer follows the method registry: a new entry trains without a trainer edit; the
teacher's temperature and a frozen teacher's head reach the teacher's side only."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import rlsd.algo.opsd as opsd_mod
from rlsd.algo import METHODS, Method, TeacherPass
from rlsd.algo.methods import Credit, policy_gradient_loss
from rlsd.train.config import ConfigError
from rlsd.train.forward import ResponseIndex
from rlsd.train.prompts import PromptEncoder
from rlsd.train.trainer import (
    local_tasks,
    rollout_phase,
    setup,
    teacher_phase,
    train,
    update_phase,
)
from tests.conftest import tiny_config

ONE_STEP = {"run.steps": 1, "eval.num_tasks": 0}


def _weights(result):
    return load_file(str(result.output_dir / "final" / "model.safetensors"))


def test_a_method_registered_elsewhere_trains_without_a_trainer_edit(
    tiny_model_dir, tmp_path, monkeypatch
):
    seen: list[tuple[torch.Size, torch.Size]] = []

    def half_credit(x, student_logprobs):
        # uses the teacher pass it asked for, so the trainer must have run it
        seen.append((x.teacher.token_logprobs.shape, x.mask.shape))
        return Credit(0.5 * x.advantages[:, None] * x.mask)

    half = Method("half-grpo", "GRPO at half the step", TeacherPass.TOKEN_LOGPROBS,
                  policy_gradient_loss(half_credit))  # fmt: skip
    monkeypatch.setitem(METHODS, half.name, half)
    with pytest.raises(ConfigError, match=r"algo.name.*unknown method 'nope'.*'half-grpo'"):
        tiny_config(tiny_model_dir, tmp_path / "x", **{"algo.name": "nope"})

    grpo = train(tiny_config(tiny_model_dir, tmp_path / "g", **{"algo.name": "grpo"}, **ONE_STEP),
                 show_progress=False)  # fmt: skip
    halved = train(
        tiny_config(tiny_model_dir, tmp_path / "h", **{"algo.name": "half-grpo"}, **ONE_STEP),
        show_progress=False,
    )
    assert seen and all(t == m for t, m in seen)
    g, h = grpo.metrics[0], halved.metrics[0]
    assert h["reward/mean"] == g["reward/mean"]
    # on-policy the ratio is 1, so the loss and gradient are linear in the token advantages
    assert h["actor/grad_norm"] == pytest.approx(0.5 * g["actor/grad_norm"], rel=1e-4)
    assert h["actor/loss"] == pytest.approx(0.5 * g["actor/loss"], rel=1e-4, abs=1e-9)
    assert h["rlsd/lambda"] == 0.0  # the λ schedule is RLSD's


def test_teacher_temperature_leaves_the_student_side_at_the_sampling_temperature(
    tiny_model_dir, tmp_path
):
    def run(name, **kw):
        cfg = tiny_config(tiny_model_dir, tmp_path / name, **ONE_STEP, **kw)
        return train(cfg, show_progress=False)

    # GRPO has no teacher: its teacher's temperature cannot change anything
    plain, hot = run("g", **{"algo.name": "grpo"}), run("gt", **{"algo.name": "grpo",
                                                             "teacher.temperature": 2.0})  # fmt: skip
    a, b = _weights(plain), _weights(hot)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert plain.metrics[0]["actor/entropy"] == hot.metrics[0]["actor/entropy"]
    # RLSD and OPSD: the student's entropy (taken at the update's temperature) is unchanged,
    # while the teacher's side does change
    rlsd = {"algo.name": "rlsd", "algo.lam0": 1.0, "algo.eps_w": 0.5}
    r, rt = run("r", **rlsd), run("rt", **rlsd, **{"teacher.temperature": 2.0})
    assert r.metrics[0]["actor/entropy"] == rt.metrics[0]["actor/entropy"]
    assert r.metrics[0]["rlsd/delta_mean"] != rt.metrics[0]["rlsd/delta_mean"]
    o, ot = run("o", **{"algo.name": "opsd"}), run("ot", **{"algo.name": "opsd",
                                                            "teacher.temperature": 2.0})  # fmt: skip
    assert o.metrics[0]["actor/entropy"] == ot.metrics[0]["actor/entropy"]
    assert o.metrics[0]["opsd/jsd_mean"] != ot.metrics[0]["opsd/jsd_mean"]


def test_frozen_opsd_teacher_scores_with_its_own_output_head(tiny_model_dir, tmp_path, monkeypatch):
    cfg = tiny_config(tiny_model_dir, tmp_path / "o",
                      **{"algo.name": "opsd", "teacher.sync_interval": 2}, **ONE_STEP)  # fmt: skip
    s = setup(cfg, overwrite=True)
    frozen = s.teacher.frozen
    assert s.teacher.maybe_sync(0)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # the live policy moves on after the sync, as after an update
        for p in s.model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    tasks = local_tasks(s, 1)
    rollout = rollout_phase(s, tasks, 1)
    index = ResponseIndex.build(rollout.response_ids)
    advantages = torch.zeros(index.mask.shape[0])

    seen: list[torch.Tensor] = []
    real = opsd_mod.generalized_jsd

    def spy(student_logits, teacher_logits, *args, **kwargs):
        seen.append(teacher_logits.detach().reshape(-1, teacher_logits.shape[-1]).clone())
        return real(student_logits, teacher_logits, *args, **kwargs)

    monkeypatch.setattr(opsd_mod, "generalized_jsd", spy)
    teacher_out = teacher_phase(s, tasks, rollout, index, advantages)
    update_phase(s, tasks, rollout, advantages, teacher_out, index, 0.0)
    got = torch.cat(seen)

    # what the frozen teacher itself predicts for each response token, privileged prompt first
    G = cfg.rollout.group_size
    expected = []
    with torch.no_grad():
        for row, resp in enumerate(rollout.response_ids):
            prefix = PromptEncoder.ids(
                s.prompts.teacher(tasks[row // G], cfg.teacher.prompt_template)
            )
            ids = torch.tensor([prefix + list(resp)])
            logits = frozen(input_ids=ids).logits[0]
            expected.append(logits[len(prefix) - 1 : len(prefix) - 1 + len(resp)])
    torch.testing.assert_close(got, torch.cat(expected).float(), atol=1e-4, rtol=1e-4)
