"""GRPO and RLSD steps with identical settings: time per phase and the RLSD/GRPO step-time ratio.

    python benchmarks/step_time.py [--steps 3] [--model smollm2-135m-instruct] [--set key=value ...]

Both arms start from the same weights and see the same prompts and sampling seeds; their steps
alternate so that machine noise hits both alike. Printed, not asserted. Target: RLSD <= 1.15x GRPO.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _machine import describe  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from rlsd.configs import DEFAULT_CONFIG  # noqa: E402
from rlsd.train.config import load_config  # noqa: E402
from rlsd.train.trainer import setup, train_step  # noqa: E402

PHASES = [
    "time/generate",
    "time/verify",
    "time/teacher",
    "time/old_logprob",
    "time/update",
    "time/step",
]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--steps", type=int, default=3, help="measured steps per arm (after 1 warm-up)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    ap.add_argument("--output-dir", default="runs/bench-step-time")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    overrides = [
        f"model.name_or_path={args.model}",
        "rollout.sampling.max_new_tokens=32",
        "eval.num_tasks=0",
        f"run.steps={args.steps + 1}",
        *args.sets,
    ]
    sessions = {}
    for algo in ("grpo", "rlsd"):
        cfg = load_config(
            DEFAULT_CONFIG,
            [*overrides, f"algo.name={algo}", f"run.output_dir={args.output_dir}/{algo}"],
        )
        sessions[algo] = setup(cfg, overwrite=True)
    cfg = sessions["rlsd"].cfg
    console.print(f"[bold]machine[/bold] {describe()}")
    console.print(
        f"[bold]settings[/bold] {cfg.model.name_or_path}, {cfg.rollout.prompts_per_step} prompts x "
        f"G={cfg.rollout.group_size}, max_new_tokens={cfg.rollout.sampling.max_new_tokens}, "
        f"temperature {cfg.rollout.sampling.temperature}, shared prefix "
        f"{cfg.run.shared_prefix}, micro-batch {cfg.run.micro_batch_sequences}"
    )
    times: dict[str, list[dict]] = {"grpo": [], "rlsd": []}
    for step in range(args.steps + 1):
        for algo in ("grpo", "rlsd"):
            m = train_step(sessions[algo], step)
            if step > 0:  # step 0 warms allocator and caches
                times[algo].append(m)
            console.print(
                f"  step {step} {algo}: {m['time/step']:.2f}s (generate {m['time/generate']:.2f}, "
                f"teacher {m['time/teacher']:.2f}, update {m['time/update']:.2f}), "
                f"{m['response/length_mean']:.1f} tokens/response, reward {m['reward/mean']:.2f}"
            )
    table = Table(title="median seconds per phase")
    table.add_column("phase")
    for algo in ("grpo", "rlsd"):
        table.add_column(algo, justify="right")
    table.add_column("rlsd - grpo", justify="right")
    med = {a: {p: statistics.median(m[p] for m in times[a]) for p in PHASES} for a in times}
    for p in PHASES:
        table.add_row(
            p.removeprefix("time/"),
            f"{med['grpo'][p]:.2f}",
            f"{med['rlsd'][p]:.2f}",
            f"{med['rlsd'][p] - med['grpo'][p]:+.2f}",
        )
    console.print(table)
    # Generation lengths differ between arms after their first update; the ratio that isolates
    # the method's own cost compares the training work (teacher + update) per response token.
    ratio = med["rlsd"]["time/step"] / med["grpo"]["time/step"]
    tok = {a: statistics.median(m["response/length_mean"] for m in times[a]) for a in times}
    train_cost = {a: (med[a]["time/teacher"] + med[a]["time/update"]) / tok[a] for a in times}
    console.print(f"RLSD/GRPO step-time ratio: [bold]{ratio:.3f}[/bold] (target <= 1.15)")
    console.print(
        f"RLSD/GRPO training time per response token (teacher + update): "
        f"{train_cost['rlsd'] / train_cost['grpo']:.3f}"
    )
    # Both arms run the same update computation; what RLSD adds by construction is the teacher.
    structural = (med["grpo"]["time/step"] + med["rlsd"]["time/teacher"]) / med["grpo"]["time/step"]
    console.print(f"(GRPO step + RLSD teacher pass) / GRPO step: [bold]{structural:.3f}[/bold]")
    console.print(
        f"teacher pass = {100 * med['rlsd']['time/teacher'] / med['rlsd']['time/step']:.1f} % of an "
        f"RLSD step"
    )


if __name__ == "__main__":
    main()
