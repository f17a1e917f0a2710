"""GPU check: GRPO and RLSD steps of the real trainer in bf16 on a randomly initialised model with
the layer sizes of SmolLM2-1.7B (hidden 2048, 24 layers, 32 heads, vocab 49152) or, with
``--arch qwen2.5-1.5b``, of Qwen2.5-1.5B (hidden 1536, 28 layers, 12 heads / 2 KV heads,
vocab 151936).

    python benchmarks/gpu_step.py --tokenizer DIR [--arch qwen2.5-1.5b] [--steps 2] [--prompts 8]

Random weights learn nothing; the point is that every phase runs on CUDA in bf16 at a realistic
size, and what each phase costs there. Rewards come from a length-parity toy verifier so the
update has signal. Prints time per phase, peak GPU memory and the RLSD/GRPO step-time ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402


def _toy_verifier() -> None:
    from rlsd.tasks import Task
    from rlsd.verify import VerifyResult, register_verifier

    class EvenLength:
        name = "toy-even-length"

        def verify(self, responses: Sequence[str], tasks: Sequence[Task]) -> list[VerifyResult]:
            return [
                VerifyResult(passed=len(r) % 2 == 0, score=float(len(r) % 2 == 0))
                for r in responses
            ]

    register_verifier("toy-even-length", EvenLength, replace=True)


def build_random_model(tokenizer_dir: str, arch: str, tiny: bool) -> Path:
    """A randomly initialised ``arch``-sized model (bf16) with the given tokenizer, saved to a
    temporary folder; returns the folder."""
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    model_dir = Path(tempfile.mkdtemp()) / f"random-{arch}"
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    }
    qwen = arch == "qwen2.5-1.5b"
    model_cls = Qwen2ForCausalLM if qwen else LlamaForCausalLM
    if qwen:
        cfg = Qwen2Config(
            vocab_size=max(len(tok), 151936),
            hidden_size=64 if tiny else 1536,
            intermediate_size=128 if tiny else 8960,
            num_hidden_layers=2 if tiny else 28,
            num_attention_heads=4 if tiny else 12,
            num_key_value_heads=2,
            max_position_embeddings=32768,
            tie_word_embeddings=True,
            **ids,
        )
    else:
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=64 if tiny else 2048,
            intermediate_size=128 if tiny else 8192,
            num_hidden_layers=2 if tiny else 24,
            num_attention_heads=4 if tiny else 32,
            num_key_value_heads=4 if tiny else 32,
            max_position_embeddings=8192,
            tie_word_embeddings=True,
            **ids,
        )
    torch.manual_seed(0)
    with torch.device(device):
        model = model_cls(cfg).to(torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    del model
    if cuda:
        torch.cuda.empty_cache()
    print(f"model: random {arch}, {n_params / 1e9:.2f} B parameters, bf16", flush=True)
    return model_dir


def run_arms(overrides: list[str], steps: int, cuda: bool) -> dict[str, list[dict]]:
    """GRPO then RLSD, ``steps`` timed steps each after one warm-up step; prints every step."""
    from rlsd.train.config import load_config
    from rlsd.train.trainer import setup, train_step

    times: dict[str, list[dict]] = {}
    for algo in ("grpo", "rlsd"):
        out = Path(tempfile.mkdtemp())
        s = setup(
            load_config(None, [*overrides, f"algo.name={algo}", f"run.output_dir={out}"]),
            overwrite=True,
        )
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        rows = []
        for step in range(steps + 1):
            m = train_step(s, step)
            print(
                f"  {algo} step {step}: "
                + ", ".join(
                    f"{k.removeprefix('time/')} {m[k]:.2f}s"
                    for k in ("time/generate", "time/teacher", "time/update", "time/step")
                )
                + f", {m['response/length_mean']:.0f} tokens/response, "
                f"grad norm {m['actor/grad_norm']:.3g}",
                flush=True,
            )
            if step > 0:
                rows.append(m)
        if cuda:
            peak = torch.cuda.max_memory_allocated() / 2**30
            print(f"  {algo}: peak GPU memory {peak:.1f} GiB", flush=True)
        times[algo] = rows
        del s
        if cuda:
            torch.cuda.empty_cache()
    return times


def print_medians(times: dict[str, list[dict]]) -> dict[str, dict[str, float]]:
    med = {
        a: {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith("time/")}
        for a, rows in times.items()
    }
    for k in ("time/generate", "time/teacher", "time/update", "time/step"):
        print(
            f"median {k.removeprefix('time/'):9s} grpo {med['grpo'][k]:7.2f}s  "
            f"rlsd {med['rlsd'][k]:7.2f}s"
        )
    print(f"RLSD/GRPO step-time ratio: {med['rlsd']['time/step'] / med['grpo']['time/step']:.3f}")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokenizer", required=True, help="a folder with the SmolLM2 tokenizer files")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--tiny", action="store_true", help="a tiny model on any device (smoke test)")
    ap.add_argument("--arch", choices=["smollm2-1.7b", "qwen2.5-1.5b"], default="smollm2-1.7b")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    args = ap.parse_args()
    from _machine import describe

    cuda = torch.cuda.is_available()
    assert cuda or args.tiny, "this check needs a CUDA device (or --tiny)"
    print("machine:", describe(), flush=True)
    _toy_verifier()
    model_dir = build_random_model(args.tokenizer, args.arch, args.tiny)

    overrides = [
        f"model.name_or_path={model_dir}",
        f"model.dtype={'bfloat16' if cuda else 'float32'}",
        "task.verifier=toy-even-length",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        f"rollout.sampling.max_new_tokens={args.max_new_tokens}",
        "rollout.sampling.temperature=1.0",
        "rollout.sampling.stop_regex=null",
        "rollout.max_batch_sequences=128",
        "run.micro_batch_sequences=64",
        "eval.num_tasks=0",
        f"run.steps={args.steps + 1}",
        *args.sets,
    ]
    times = run_arms(overrides, args.steps, cuda)
    med = print_medians(times)
    print(f"teacher / update: {med['rlsd']['time/teacher'] / med['rlsd']['time/update']:.3f}")


if __name__ == "__main__":
    main()
