"""How the training part of a step grows with the prompt, with and without shared-prefix training.

    python benchmarks/prompt_sweep.py [--lengths 0 256 512 1024] [--reps 2] [--quick] [--threads 2]

Enterprise prompts carry long fixed context (few-shot examples, schemas, policies). Here every task
prompt of the arithmetic generator gets the same long system preamble (worked examples of other
problems) sized so that the student prompt is about L tokens (L = 0: the task's own prompt). For
each L, one real rollout's responses (sampled once at the unpadded prompt, G = 8; the responses'
content does not change the cost of scoring them) are scored by the product's own phases:

* GRPO update (forward + backward + AdamW) and
* RLSD teacher forward (prompt + privileged solution, no gradient) + RLSD update,

with ``run.shared_prefix`` true (each group's prompt encoded once) and false (encoded G times),
alternating. The rollout is timed too, with the product's decode loop (each
group's prompt prefilled once) against transformers' ``generate`` (prefilled once per row);
``--no-generation`` skips it. Micro-batches hold one group (8 sequences) by default
(the trainer's smallest: micro-batches hold whole groups). Where the plain path's update would not
fit in memory (an estimate against MemAvailable; at 1024-token prompts and G = 8 it needs more than
this 24 GB machine has) its cell is skipped and says so; the shared path and the teachers still run.
Printed: median seconds per phase, the plain/shared speed-up, and the speed-up that the matmul FLOP
counts predict (flops.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


from _threads import pin_omp_threads  # noqa: E402

pin_omp_threads()

import torch  # noqa: E402
from _machine import describe  # noqa: E402
from flops import Shape, scoring_forward_flops, training_flops  # noqa: E402

from rlsd import algo  # noqa: E402
from rlsd.configs import DEFAULT_CONFIG  # noqa: E402
from rlsd.rollout import HFGenerateEngine, RolloutBatch  # noqa: E402
from rlsd.tasks import Task  # noqa: E402
from rlsd.tasks.record import ChatMessage  # noqa: E402
from rlsd.train.batch import student_prompt_ids, teacher_prompt_ids  # noqa: E402
from rlsd.train.config import load_config  # noqa: E402
from rlsd.train.forward import ResponseIndex  # noqa: E402
from rlsd.train.rewards import score_responses  # noqa: E402
from rlsd.train.trainer import (  # noqa: E402
    Session,
    local_tasks,
    rollout_phase,
    setup,
    teacher_phase,
    update_phase,
)

PREAMBLE_HEAD = (
    "You are the arithmetic assistant of an education company. House style: read the problem, "
    "compute step by step, and finish with the final answer on its own line as '#### <number>'. "
    "Here are worked examples from our curriculum.\n\n"
)


def _preamble_source(tasks: list[Task]) -> str:
    parts = [PREAMBLE_HEAD]
    for t in tasks:
        question = t.metadata.get("question", t.prompt[-1].content)
        parts.append(f"Example problem: {question}\nExample solution: {t.privileged_context}\n\n")
    return "".join(parts)


def padded_tasks(tasks: list[Task], source_ids: list[int], tokenizer, target: int) -> list[Task]:
    """``tasks`` with one shared system preamble, sized so their mean prompt is ~``target``."""
    if target <= 0:
        return list(tasks)

    def with_preamble(k: int) -> list[Task]:
        text = tokenizer.decode(source_ids[:k])
        return [
            t.model_copy(update={"prompt": [ChatMessage(role="system", content=text), *t.prompt]})
            for t in tasks
        ]

    def mean_len(ts: list[Task]) -> float:
        return statistics.fmean(len(student_prompt_ids(tokenizer, t)) for t in ts)

    k = max(1, target - round(mean_len(with_preamble(1))))
    for _ in range(4):  # decode / re-encode is not exactly additive: converge in a few rounds
        if k > len(source_ids):
            raise ValueError(f"preamble source too short for {target} prompt tokens")
        delta = target - round(mean_len(with_preamble(k)))
        if delta == 0:
            break
        k = max(1, k + delta)
    return with_preamble(k)


def plain_update_bytes(shape: Shape, micro_batch: int, width: int) -> float:
    """A rough upper estimate of the plain path's peak training memory for one micro-batch of
    ``micro_batch`` rows of ``width`` tokens: activations kept for backward (about 10 x hidden +
    4 x intermediate floats per token and layer) plus attention probabilities and their gradient
    (heads x width^2 floats per row and layer, CPU SDPA's math path). Calibrated loosely: 1024-token
    prompts at G = 8 were killed at 19 GB RSS on this 24 GB machine."""
    act = micro_batch * width * shape.layers * (10 * shape.hidden + 4 * shape.intermediate) * 4
    attn = micro_batch * shape.heads * width * width * shape.layers * 4 * 2
    return float(act + attn)


def available_bytes() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def _timed(fn, *a, **kw):
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--lengths",
        type=int,
        nargs="+",
        default=[0, 256, 512, 1024],
        help="student prompt tokens (0 = the task's own prompt, no preamble)",
    )
    ap.add_argument("--reps", type=int, default=2, help="measurements per cell (median)")
    ap.add_argument("--quick", action="store_true", help="lengths 0 256, 1 rep, 8 new tokens")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--prompts", type=int, default=4, help="prompts (groups) per step")
    ap.add_argument("--group", type=int, default=8, help="G")
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per fwd/bwd chunk")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="config override")
    ap.add_argument("--output-dir", default="runs/bench-prompt-sweep")
    ap.add_argument(
        "--no-generation",
        action="store_true",
        help="skip the rollout column (the decode loop, each prompt prefilled once per group, "
        "against transformers' generate, which prefills it once per row)",
    )
    ap.add_argument(
        "--force",
        action="store_true",
        help="run plain-path updates even where they are estimated not to fit in memory",
    )
    args = ap.parse_args()
    if args.quick:
        args.lengths, args.reps, args.max_new_tokens = [0, 256], 1, 8
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    overrides = [
        f"model.name_or_path={args.model}",
        "task.arithmetic.few_shot=0",
        f"rollout.group_size={args.group}",
        f"rollout.prompts_per_step={args.prompts}",
        f"rollout.sampling.max_new_tokens={args.max_new_tokens}",
        "rollout.sampling.temperature=0.6",
        f"run.micro_batch_sequences={args.micro_batch}",
        f"run.num_threads={args.threads}",
        "eval.before=false",
        "eval.after=false",
        "eval.num_tasks=0",
        *args.sets,
    ]
    sessions: dict[str, Session] = {}
    for name in ("grpo", "rlsd"):
        cfg = load_config(
            DEFAULT_CONFIG,
            [*overrides, f"algo.name={name}", f"run.output_dir={args.output_dir}/{name}"],
        )
        sessions[name] = setup(cfg, overwrite=True)
    s_grpo, s_rlsd = sessions["grpo"], sessions["rlsd"]
    cfg = s_grpo.cfg
    G = cfg.rollout.group_size
    tok = s_grpo.policy.tokenizer
    shape = Shape.from_config(s_grpo.model.config)

    print(f"machine: {describe()}")
    print(f"load average at start: {os.getloadavg()}")
    tasks = local_tasks(s_grpo, 0)
    rollout, t_gen = _timed(rollout_phase, s_grpo, tasks, 0)
    responses = rollout.response_ids
    group_tasks = [t for t in tasks for _ in range(G)]
    rewards = torch.tensor(
        [r.score for r in score_responses(rollout.texts, group_tasks, cfg.task.verifier)]
    )
    advantages = algo.get_advantage_estimator(cfg.algo.advantage)(rewards, G)
    if not bool((advantages != 0).any()):  # only the cost matters: give the loss a gradient
        advantages = torch.tensor([1.0 if i % 2 else -1.0 for i in range(len(responses))])
    index = ResponseIndex.build(responses)
    lam = algo.lambda_schedule(0, cfg.algo.lam0, cfg.algo.lambda_decay_steps)
    mean_resp = statistics.fmean(len(r) for r in responses)
    print(
        f"settings: {args.model}, {len(tasks)} prompts x G={G}, responses from one rollout "
        f"({mean_resp:.1f} tokens mean, max {max(len(r) for r in responses)}; sampled in "
        f"{t_gen:.1f}s at the unpadded prompt), micro-batch {cfg.run.micro_batch_sequences} "
        f"sequences, {args.threads} threads, {args.reps} rep(s) per cell"
    )

    _, heldout = s_grpo.train_tasks, s_grpo.heldout_tasks
    source = tok(_preamble_source(heldout * 4), add_special_tokens=False)["input_ids"]

    results = []
    for target in args.lengths:
        ptasks = padded_tasks(tasks, source, tok, target)
        prompt_ids = [student_prompt_ids(tok, t) for t in ptasks]
        teacher_lens = [
            len(teacher_prompt_ids(tok, t, cfg.teacher.prompt_template)) for t in ptasks
        ]
        batch = RolloutBatch(
            prompt_ids=prompt_ids,
            response_ids=responses,
            texts=rollout.texts,
            truncated=rollout.truncated,
            group_size=G,
            settings=rollout.settings,
        )
        cell: dict[tuple[bool, str], list[float]] = {}
        width = max(len(p) for p in prompt_ids) + max(len(r) for r in responses)
        need = plain_update_bytes(shape, max(G, cfg.run.micro_batch_sequences // G * G), width)
        plain_fits = args.force or need < 0.7 * available_bytes()
        for rep in range(args.reps):
            order = (True, False) if rep % 2 == 0 else (False, True)
            for shared in order:
                for s in (s_grpo, s_rlsd):
                    s.cfg.run.shared_prefix = shared
                t_out, t = _timed(teacher_phase, s_rlsd, ptasks, batch, index)
                cell.setdefault((shared, "rlsd teacher"), []).append(t)
                if not args.no_generation:
                    engine = HFGenerateEngine(
                        s_grpo.model,
                        tok,
                        cfg.rollout.max_batch_sequences,
                        decode="loop" if shared else "generate",
                    )
                    _, t = _timed(engine.generate, prompt_ids, G, rollout.settings, seed=rep)
                    cell.setdefault((shared, "generate"), []).append(t)
                if not shared and not plain_fits:
                    print(
                        f"  L={target}: plain update skipped: needs ~{need / 2**30:.0f} GiB, "
                        f"{available_bytes() / 2**30:.0f} GiB available (--force runs it)",
                        flush=True,
                    )
                    continue
                _, t = _timed(update_phase, s_grpo, ptasks, batch, advantages, None, index, lam)
                cell.setdefault((shared, "grpo update"), []).append(t)
                _, t = _timed(update_phase, s_rlsd, ptasks, batch, advantages, t_out, index, lam)
                cell.setdefault((shared, "rlsd update"), []).append(t)
                print(
                    f"  L={target or 'task'} ({statistics.fmean(len(p) for p in prompt_ids):.0f} "
                    f"tokens) shared={shared}: grpo update "
                    f"{cell[(shared, 'grpo update')][-1]:.2f}s, rlsd teacher "
                    f"{cell[(shared, 'rlsd teacher')][-1]:.2f}s, rlsd update {t:.2f}s",
                    flush=True,
                )
        plens = [len(p) for p in prompt_ids]
        resp_lens = [len(r) for r in responses]
        flops = {
            (sh, "update"): training_flops(shape, plens, resp_lens, G, sh) for sh in (True, False)
        }
        for sh in (True, False):
            flops[(sh, "teacher")] = scoring_forward_flops(shape, teacher_lens, resp_lens, G, sh)
        med = {k: statistics.median(v) for k, v in cell.items()}
        results.append((statistics.fmean(plens), statistics.fmean(teacher_lens), med, flops))
    for s in (s_grpo, s_rlsd):
        s.cfg.run.shared_prefix = True

    print()
    print(
        "median seconds, training part of a step (the rollout is timed below); "
        "speed-up = plain / shared; 'FLOP ratio' = plain / shared matmul FLOPs"
    )
    head = (
        f"{'prompt':>6s} {'teacher':>7s} | {'GRPO update':^23s} | {'RLSD teacher':^23s} | "
        f"{'RLSD update':^23s} | {'RLSD teacher+update':^23s}"
    )
    sub = f"{'tokens':>6s} {'prompt':>7s} | " + " | ".join(
        f"{'shared':>6s} {'plain':>6s} {'speed-up':>9s}" for _ in range(4)
    )
    print(head)
    print(sub)
    nan = float("nan")
    for plen, tlen, med, _ in results:
        cells = []
        for key in ("grpo update", "rlsd teacher", "rlsd update"):
            a, b = med[(True, key)], med.get((False, key), nan)
            cells.append(
                f"{a:6.2f} {b:6.2f} {b / a:8.2f}x" if b == b else f"{a:6.2f}   (OOM)        "
            )
        a = med[(True, "rlsd teacher")] + med[(True, "rlsd update")]
        b = med[(False, "rlsd teacher")] + med.get((False, "rlsd update"), nan)
        cells.append(f"{a:6.2f} {b:6.2f} {b / a:8.2f}x" if b == b else f"{a:6.2f}   (OOM)        ")
        print(f"{plen:6.0f} {tlen:7.0f} | " + " | ".join(cells))
    print()
    print(f"{'prompt':>6s} | {'update FLOP ratio':>17s} | {'teacher FLOP ratio':>18s} | ", end="")
    print(f"{'GRPO update GFLOP/s shared / plain':>34s}")
    for plen, _, med, flops in results:
        ur = flops[(False, "update")] / flops[(True, "update")]
        tr = flops[(False, "teacher")] / flops[(True, "teacher")]
        rs = flops[(True, "update")] / med[(True, "grpo update")] / 1e9
        rp = flops[(False, "update")] / med.get((False, "grpo update"), nan) / 1e9
        print(f"{plen:6.0f} | {ur:16.2f}x | {tr:17.2f}x | {rs:15.1f} / {rp:.1f}")
    if not args.no_generation:
        print()
        print(
            f"rollout of {len(tasks)} prompts x G={G} (max {rollout.settings.max_new_tokens} new "
            "tokens), median seconds: the decode loop prefills each prompt once per group, "
            "transformers' generate once per row"
        )
        print(f"{'prompt':>6s} | {'decode loop':>11s} | {'generate':>9s} | {'speed-up':>8s}")
        for plen, _, med, _ in results:
            a, b = med[(True, "generate")], med[(False, "generate")]
            print(f"{plen:6.0f} | {a:10.2f}s | {b:8.2f}s | {b / a:7.2f}x")
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
