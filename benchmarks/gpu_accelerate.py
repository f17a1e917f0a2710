"""GPU check of the accelerate path: the real ``train()`` prepared by accelerate (FSDP2 when
launched with ``--use_fsdp --fsdp_version 2``, one plain process otherwise) on a random
Qwen2.5-1.5B-sized model in bf16, checkpointed through accelerate's state every step, then
resumed from that state for one more step.

    accelerate launch --num_processes 1 --use_fsdp --fsdp_version 2 \\
        benchmarks/gpu_accelerate.py --tokenizer DIR --out fsdp.json
    python benchmarks/gpu_accelerate.py --tokenizer DIR --out plain.json --compare fsdp.json

Prints the distributed type, what the checkpoint holds (FSDP: a sharded
torch.distributed.checkpoint folder), each step's loss and gradient norm, peak memory, and,
with ``--compare``, the per-step differences from another run of the same steps (bf16: the
rollouts of step 1 are sampled from the same weights, later steps drift by rounding).
accelerate runs FSDP only on accelerators, so on CPU this is a smoke test (``--tiny``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

KEYS = ("actor/loss", "actor/grad_norm", "reward/mean", "response/length_mean")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--arch", choices=["smollm2-1.7b", "qwen2.5-1.5b"], default="qwen2.5-1.5b")
    ap.add_argument("--tiny", action="store_true", help="a tiny model on any device (smoke test)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--out", type=Path, required=True, help="where this run's metrics go (JSON)")
    ap.add_argument("--compare", type=Path, help="another run's --out, to print differences")
    args = ap.parse_args()
    from gpu_step import _toy_verifier, build_random_model

    from rlsd.train.config import load_config
    from rlsd.train.trainer import train

    cuda = torch.cuda.is_available()
    assert cuda or args.tiny, "this check needs a CUDA device (or --tiny)"
    _toy_verifier()
    model_dir = build_random_model(args.tokenizer, args.arch, args.tiny)
    run_dir = Path(tempfile.mkdtemp()) / "run"
    base = [
        f"model.name_or_path={model_dir}",
        f"model.dtype={'bfloat16' if cuda else 'float32'}",
        "algo.name=rlsd",
        "task.verifier=toy-even-length",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.group_size={args.group}",
        f"rollout.sampling.max_new_tokens={args.max_new_tokens}",
        "rollout.sampling.stop_regex=null",
        "run.micro_batch_sequences=32",
        "run.checkpoint_every=1",
        "eval.num_tasks=0",
        f"run.output_dir={run_dir}",
    ]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    first = train(load_config(None, [*base, "run.steps=2"]), show_progress=False)
    from accelerate import PartialState
    from accelerate.utils import DistributedType

    state = PartialState()
    main_proc = state.is_main_process
    ckpt = run_dir / "checkpoints" / "step-000002" / "accelerate"
    if main_proc:
        print(f"distributed type: {state.distributed_type.value}, processes {state.num_processes}")
        held = sorted(p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file())
        print(f"checkpoint step 2 ({len(held)} files): {held[:8]}{' ...' if len(held) > 8 else ''}")
    resumed = train(load_config(None, [*base, "run.steps=3"]), resume=True, show_progress=False)
    if not main_proc:
        return
    rows = resumed.metrics
    assert [r["step"] for r in rows] == [1, 2, 3], [r["step"] for r in rows]
    assert first.metrics[:2] == rows[:2]  # the resumed run kept the first run's two rows
    for r in rows:
        print(f"step {r['step']}: " + ", ".join(f"{k} {r[k]:.5g}" for k in KEYS if k in r))
    if cuda:
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    fsdp = state.distributed_type == DistributedType.FSDP
    args.out.write_text(json.dumps({"fsdp": fsdp, "rows": rows}))
    if args.compare and args.compare.exists():
        other = json.loads(args.compare.read_text())
        print(f"differences from {args.compare} (fsdp={other['fsdp']}):")
        for a, b in zip(rows, other["rows"], strict=False):
            print(
                f"  step {a['step']}: "
                + ", ".join(f"{k} {a[k] - b[k]:+.3g}" for k in KEYS if k in a and k in b)
            )


if __name__ == "__main__":
    main()
