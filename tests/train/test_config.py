"""Configuration: YAML + overrides validated by pydantic; errors name the file, field and value."""

from __future__ import annotations

import pytest

from rlsd.configs import DEFAULT_CONFIG
from rlsd.train.config import PAPER_TEACHER_TEMPLATE, ConfigError, dump_config, load_config


def test_defaults_follow_the_method_doc():
    cfg = load_config(DEFAULT_CONFIG)
    assert (cfg.algo.lam0, cfg.algo.eps_w, cfg.algo.lambda_decay_steps) == (0.5, 0.2, 50)
    assert (cfg.algo.clip_low, cfg.algo.clip_high, cfg.algo.dual_clip) == (0.2, 0.28, 3.0)
    assert cfg.algo.loss_agg == "token-mean" and cfg.algo.opsd_beta == 0.5
    assert cfg.optim.weight_decay == 0.01 and cfg.optim.grad_clip == 1.0
    assert cfg.teacher.prompt_template == PAPER_TEACHER_TEMPLATE
    assert cfg.model.name_or_path == "smollm2-135m-instruct"


def test_dump_and_reload_roundtrip(tmp_path):
    cfg = load_config(DEFAULT_CONFIG, ["algo.name=grpo", "rollout.group_size=4"])
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg


def test_errors_name_file_field_and_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout:\n  group_size: 1\nalgo:\n  name: ppo\n")
    with pytest.raises(ConfigError) as err:
        load_config(bad)
    msg = str(err.value)
    assert str(bad) in msg
    assert "rollout.group_size" in msg and "1" in msg
    assert "algo.name" in msg and "'ppo'" in msg


def test_unknown_fields_and_bad_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(None, ["optim.learning_rate=0.1"])
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("algo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["no-equals-sign"])


def test_teacher_template_must_show_the_privileged_context():
    with pytest.raises(ConfigError, match="privileged_context"):
        load_config(None, {"teacher.prompt_template": "{question} only"})


@pytest.mark.parametrize(
    ("overrides", "world", "refusal"),
    [
        (["rollout.engine=vllm", "model.lora.r=8"], 1, "does not take model.lora"),
        (["rollout.engine=vllm"], 2, "single-process"),
        (["rollout.prompts_per_step=3"], 2, "must divide evenly over 2 processes"),
    ],
)
def test_training_refuses_combinations_it_cannot_run_on_policy(overrides, world, refusal):
    """Refused before any model or engine is built: vLLM would sample from the base weights
    while LoRA trains adapters (silently off-policy), and it runs in one process."""
    from rlsd.train.trainer import _check_config

    cfg = load_config(DEFAULT_CONFIG, overrides)
    with pytest.raises(ValueError, match=refusal):
        _check_config(cfg, world)
    _check_config(load_config(DEFAULT_CONFIG), world)  # the defaults pass
