"""A killed run resumes to the same trajectory; two data-parallel processes equal one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from rlsd.train.metrics import read_metrics
from tests.conftest import REPO, tiny_config

RUN_CLI = str(REPO / "tests" / "helpers" / "run_cli.py")
TIMING = ("time/", "perf/")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", RLSD_NO_PROGRESS="1", PYTHONPATH=str(REPO))
    return env


def _write_config(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = (
        load_file(str(a / "final" / "model.safetensors")),
        load_file(str(b / "final" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_killed_run_resumes_and_reproduces_the_uninterrupted_metrics(tiny_model_dir, tmp_path):
    overrides = {
        "run.steps": 6,
        "run.checkpoint_every": 2,
        "eval.num_tasks": 0,
        "algo.name": "rlsd",
        "teacher.sync_interval": 3,
    }
    straight = tiny_config(tiny_model_dir, tmp_path / "straight", **overrides)
    killed = tiny_config(tiny_model_dir, tmp_path / "killed", **overrides)
    cmd = [sys.executable, RUN_CLI, "train", "-c"]
    subprocess.run(
        cmd + [str(_write_config(straight, tmp_path / "a.yaml"))],
        env=_env(),
        check=True,
        capture_output=True,
    )

    cfg_b = _write_config(killed, tmp_path / "b.yaml")
    proc = subprocess.Popen(
        cmd + [str(cfg_b)],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    metrics = Path(killed.run.output_dir) / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and any(r["step"] >= 3 for r in read_metrics(metrics)):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    logged = [r["step"] for r in read_metrics(metrics)]
    assert 3 in logged and 6 not in logged

    resumed = subprocess.run(
        cmd + [str(cfg_b), "--resume"], env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = read_metrics(Path(straight.run.output_dir) / "metrics.jsonl")
    b = read_metrics(metrics)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    assert _comparable(a) == _comparable(b)
    _same_weights(Path(straight.run.output_dir), Path(killed.run.output_dir))


def test_two_data_parallel_processes_match_one_process(tiny_model_dir, tmp_path):
    # Same global batch (4 prompts x G=4); each generate call covers 2 groups in both layouts.
    overrides = {"run.steps": 2, "eval.num_tasks": 4, "rollout.max_batch_sequences": 8}
    single = tiny_config(tiny_model_dir, tmp_path / "single", **overrides)
    dp = tiny_config(tiny_model_dir, tmp_path / "dp", **overrides)
    subprocess.run(
        [sys.executable, RUN_CLI, "train", "-c", str(_write_config(single, tmp_path / "s.yaml"))],
        env=_env(),
        check=True,
        capture_output=True,
    )
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        RUN_CLI,
        "train",
        "-c",
        str(_write_config(dp, tmp_path / "d.yaml")),
    ]
    out = subprocess.run(launch, env=_env(), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    a = read_metrics(Path(single.run.output_dir) / "metrics.jsonl")
    b = read_metrics(Path(dp.run.output_dir) / "metrics.jsonl")
    assert [r["dist/num_processes"] for r in b] == [2.0, 2.0]
    for x, y in zip(_comparable(a), _comparable(b), strict=True):
        x.pop("dist/num_processes"), y.pop("dist/num_processes")
        assert x.keys() == y.keys()
        for k in x:
            assert abs(x[k] - y[k]) <= 1e-6 * max(1.0, abs(x[k])), (k, x[k], y[k])
    wa = load_file(str(Path(single.run.output_dir) / "final" / "model.safetensors"))
    wb = load_file(str(Path(dp.run.output_dir) / "final" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)
    ea = json.loads((Path(single.run.output_dir) / "eval_after.json").read_text())
    eb = json.loads((Path(dp.run.output_dir) / "eval_after.json").read_text())
    assert ea["num_tasks"] == eb["num_tasks"] == 4


def _launch(config: Path, *flags: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    flags = flags or ("--multi_gpu",)
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
        "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        *flags, RUN_CLI, "train", "-c", str(config), *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True)


def test_a_data_parallel_checkpoint_is_accelerate_state_and_resumes_on_one_process(
    tiny_model_dir, tmp_path
):
    # Two ranks write one checkpoint through accelerate (each its RNG state); the weights are
    # stored unwrapped, so the run continues on one process and ends where a one-process run
    # of the same length ends (up to the float rounding DDP's reduction order allows).
    over = {"eval.num_tasks": 0, "rollout.max_batch_sequences": 8, "run.checkpoint_every": 1}
    dp = tiny_config(tiny_model_dir, tmp_path / "dp", **over, **{"run.steps": 2})
    out = _launch(_write_config(dp, tmp_path / "d.yaml"))
    assert out.returncode == 0, out.stderr[-3000:]
    ckpt = Path(dp.run.output_dir) / "checkpoints" / "step-000002"
    recorded = json.loads((ckpt / "trainer_state.json").read_text())["files"]
    assert {"accelerate/model.safetensors", "accelerate/optimizer.bin",
            "accelerate/random_states_0.pkl", "accelerate/random_states_1.pkl"} <= set(recorded)  # fmt: skip
    assert not any(k.startswith("module.") for k in load_file(str(ckpt / "accelerate" / "model.safetensors")))  # fmt: skip

    longer = tiny_config(tiny_model_dir, tmp_path / "dp", **over, **{"run.steps": 3})
    cfg = _write_config(longer, tmp_path / "d3.yaml")
    resumed = subprocess.run(
        [sys.executable, RUN_CLI, "train", "-c", str(cfg), "--resume"],
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    single = tiny_config(tiny_model_dir, tmp_path / "single", **over, **{"run.steps": 3})
    subprocess.run(
        [sys.executable, RUN_CLI, "train", "-c", str(_write_config(single, tmp_path / "s.yaml"))],
        env=_env(), check=True, capture_output=True,
    )  # fmt: skip
    a = read_metrics(Path(single.run.output_dir) / "metrics.jsonl")
    b = read_metrics(Path(dp.run.output_dir) / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3]
    assert [r["dist/num_processes"] for r in b] == [2.0, 2.0, 1.0]
    for x, y in zip(_comparable(a), _comparable(b), strict=True):
        for k in x.keys() - {"dist/num_processes"}:
            assert abs(x[k] - y[k]) <= 1e-5 * max(1.0, abs(x[k])), (x["step"], k, x[k], y[k])
    wa = load_file(str(Path(single.run.output_dir) / "final" / "model.safetensors"))
    wb = load_file(str(Path(dp.run.output_dir) / "final" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def test_fsdp_asked_for_on_cpu_runs_ddp_and_says_so(tiny_model_dir, tmp_path):
    # accelerate shards with FSDP only on accelerators (AcceleratorState picks FSDP only for
    # MULTI_GPU-like types): a CPU launch with --use_fsdp is DDP. The trainer says so, and
    # the update is DDP's, equal to one process's. The FSDP path itself runs on a GPU, in
    # benchmarks/run_gpu_checks.sh.
    over = {"run.steps": 1, "eval.num_tasks": 0, "rollout.max_batch_sequences": 8}
    fsdp = tiny_config(tiny_model_dir, tmp_path / "fsdp", **over)
    out = _launch(_write_config(fsdp, tmp_path / "f.yaml"), "--use_fsdp", "--fsdp_version", "2")
    assert out.returncode == 0, out.stderr[-3000:]
    said = " ".join((out.stdout + out.stderr).split())  # the log wraps long lines
    assert "accelerate runs FSDP only on accelerators" in said, said[-2000:]
    assert "this cpu run is MULTI_CPU" in said
    single = tiny_config(tiny_model_dir, tmp_path / "single", **over)
    subprocess.run(
        [sys.executable, RUN_CLI, "train", "-c", str(_write_config(single, tmp_path / "s.yaml"))],
        env=_env(), check=True, capture_output=True,
    )  # fmt: skip
    wa = load_file(str(Path(single.run.output_dir) / "final" / "model.safetensors"))
    wb = load_file(str(Path(fsdp.run.output_dir) / "final" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)
