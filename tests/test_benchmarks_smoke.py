"""The benchmarks still run (on the tiny model, a few seconds); their figures are printed, not
asserted here."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO


def test_step_time_benchmark_runs_on_the_tiny_model(tiny_model_dir, tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "step_time.py"),
        "--steps",
        "1",
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(tmp_path),
        "--set",
        "rollout.sampling.max_new_tokens=6",
        "--set",
        "task.verifier=toy-even-length",
        "--set",
        "rollout.group_size=2",
        "--set",
        "rollout.prompts_per_step=2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), COLUMNS="200")
    code = (
        "import runpy, sys; from tests.helpers.toy_verifier import register; register(); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *cmd[1:]], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RLSD/GRPO step-time ratio" in out.stdout
