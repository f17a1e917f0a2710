"""The benchmarks still run (on the tiny model, a few seconds); their figures are printed, not
asserted here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

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
        "--matmul-size",
        "512",
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
    assert "of the matmul rate" in out.stdout and "of its arithmetic cost" in out.stdout


# --------------------------------------------------------------------------------------------
# FLOP accounting (benchmarks/flops.py) against direct counts on a tiny model


def _flops_module():
    import importlib.util

    name = "bench_flops"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "flops.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up while the class is built
    spec.loader.exec_module(mod)
    return mod


def _tiny_llama():
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=320,
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        attn_implementation="eager",  # attention as plain bmm, which FlopCounterMode counts
    )
    return cfg, LlamaForCausalLM(cfg)


def test_flop_counter_parameters_match_the_linear_layers():
    import torch

    flops = _flops_module()
    cfg, model = _tiny_llama()
    shape = flops.Shape.from_config(cfg)
    linear = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    assert shape.decoder_matmul_params + shape.head_params == linear
    # every decoder Linear is a layer matmul; the head is the only other one
    head = model.get_output_embeddings()
    assert shape.head_params == head.in_features * head.out_features


def test_flop_counter_agrees_with_torch_flop_counter_forward_and_backward():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    flops = _flops_module()
    cfg, model = _tiny_llama()
    shape = flops.Shape.from_config(cfg)
    batch, length = 3, 29
    ids = torch.randint(0, cfg.vocab_size, (batch, length))
    with FlopCounterMode(display=False) as fwd:
        logits = model(input_ids=ids).logits
    # eager attention computes every (query, key) pair, masked ones included: count non-causal
    expected = batch * flops.forward_flops(shape, length, causal=False)
    assert fwd.get_total_flops() == expected
    with FlopCounterMode(display=False) as bwd:
        logits.float().pow(2).mean().backward()
    assert bwd.get_total_flops() == 2 * expected  # backward = 2 x forward


def test_flop_counter_shared_prefix_saves_exactly_the_repeated_prompt():
    flops = _flops_module()
    cfg, _ = _tiny_llama()
    shape = flops.Shape.from_config(cfg)
    prompts, G = [40, 55], 4
    responses = [7, 1, 12, 9, 3, 8, 5, 10]
    plain = flops.scoring_forward_flops(shape, prompts, responses, G, shared_prefix=False)
    shared = flops.scoring_forward_flops(shape, prompts, responses, G, shared_prefix=True)
    # the same attention pairs and logits; the prompt's tokens run once instead of G times
    saved = sum((G - 1) * 2 * shape.decoder_matmul_params * p for p in prompts)
    saved_attn = sum((G - 1) * shape.attention_flops_per_pair * p * (p + 1) // 2 for p in prompts)
    assert plain - shared == saved + saved_attn
    assert flops.training_flops(shape, prompts, responses, G, True) == 3 * shared
    # generation of a row = one forward over prompt + response - 1 with logits where it samples
    rows = [p for p in prompts for _ in range(G)]
    assert flops.generation_flops(shape, rows, responses) == plain
    # prefilled once per group, the prompt's repeats are not counted; the logits at the
    # prompt's last position are computed once per group, not once per row
    once = flops.generation_flops(shape, prompts, responses, G, shared_prefix=True)
    head_repeats = sum(G - 1 for _ in prompts) * 2 * shape.head_params
    assert plain - once == saved + saved_attn + head_repeats


def test_matmul_rate_is_measured():
    flops = _flops_module()
    rate = flops.measure_matmul_rate(64, 64, 64, reps=2)
    assert rate.best >= rate.median > 0


def test_leak_guard_benchmark_runs_quick():
    cmd = [sys.executable, str(REPO / "benchmarks" / "leak_guard.py"), "--quick"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "new x" in out.stdout
    # where the old check finished, both gave the same findings
    assert " True" in out.stdout and " False" not in out.stdout


def test_prompt_sweep_runs_quick_on_the_tiny_model(tiny_model_dir, tmp_path):
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "prompt_sweep.py"),
        "--quick",
        "--model",
        str(tiny_model_dir),
        "--output-dir",
        str(tmp_path),
        "--prompts",
        "2",
        "--group",
        "4",
        "--threads",
        "1",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "speed-up" in out.stdout and "FLOP ratio" in out.stdout


@pytest.mark.slow
def test_vs_trl_runs_quick_with_the_real_model(tmp_path):
    """Minutes: TRL's GRPOTrainer and the product's GRPO / RLSD, 2 steps each, on SmolLM2."""
    pytest.importorskip("trl", reason="benchmark-only dependency (the bench extra)")
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "vs_trl.py"),
        "--quick",
        "--output-dir",
        str(tmp_path),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=str(REPO))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "product GRPO / TRL GRPO step" in out.stdout
    assert "product RLSD / TRL GRPO step" in out.stdout
    assert "identical ids every step: True" in out.stdout


def test_gpu_accelerate_check_runs_tiny_on_cpu(tmp_path):
    # The GPU check of the accelerate path (run_gpu_checks.sh) still runs: train, accelerate
    # checkpoint, resume, metrics compared with another run's (itself, here).
    from rlsd.models.loader import bundled_model_dir

    tok, _ = bundled_model_dir()
    script = str(REPO / "benchmarks" / "gpu_accelerate.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    args = ["--tokenizer", str(tok), "--tiny", "--prompts", "2", "--group", "2",
            "--max-new-tokens", "8"]  # fmt: skip
    first = subprocess.run(
        [sys.executable, script, *args, "--out", str(tmp_path / "a.json")],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    assert "distributed type: NO" in first.stdout and "step 3:" in first.stdout
    again = subprocess.run(
        [sys.executable, script, *args, "--out", str(tmp_path / "b.json"),
         "--compare", str(tmp_path / "a.json")],
        capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert "step 1: actor/loss +0" in again.stdout, again.stdout


@pytest.mark.vllm
def test_rollout_engines_benchmark_runs_on_a_tiny_model(tmp_path):
    """benchmarks/rollout_engines.py (vLLM beside the HF engines): the vLLM lane only."""
    pytest.importorskip("vllm")
    from rlsd.models.tiny import make_tiny_model

    # head size 32: one that vLLM's CPU attention takes (see tests/rollout/conftest.py)
    model = make_tiny_model(tmp_path / "tiny", hidden_size=64, num_heads=2, num_kv_heads=1)
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "rollout_engines.py"),
        "--reps",
        "1",
        "--model",
        str(model),
        "--kv-cache-gib",
        "0.25",
        "--set",
        "rollout.prompts_per_step=2",
        "--set",
        "rollout.group_size=2",
        "--set",
        "rollout.sampling.max_new_tokens=4",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), COLUMNS="200")
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rollout batch time" in out.stdout and "tokens / s" in out.stdout
