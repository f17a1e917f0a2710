"""TRL's GRPOTrainer against this product's GRPO and RLSD steps, on the same machine, alternating.

    python benchmarks/vs_trl.py [--steps 6] [--quick] [--threads 2] [--few-shot 0]

Settings (issue 7): SmolLM2-135M-Instruct in fp32, 2 threads, 4 prompts x 8 generations = 32
completions per optimizer step, max_completion_length 32, temperature 0.6, lr 1e-5, beta 0 (no
reference model; TRL's default loss_type "dapo"), no vLLM (TRL samples with transformers
``generate``, the product with its own decode loop; ``--set rollout.decode=generate`` gives it
``generate`` too), one optimizer step per generation batch, no gradient checkpointing. Process-wide
settings the product makes (glibc keeping freed blocks) apply to TRL's steps as well. Both sides see the SAME prompts: the
product's arithmetic tasks (its chat messages are TRL's conversational "prompt"; step k of every
side gets the product's step-k prompts) and the SAME reward (the product's math-answer verifier).

Alternation: one process holds all three models. TRL's trainer runs its steps, and after each of
its optimizer steps (from its ``on_step_end`` callback, outside TRL's timed step) the product's
GRPO and RLSD steps with the same index run, in alternating order; the global RNG is saved and
restored around them so TRL's sampling stream is its own. Medians are over steps 2..N (step 1 warms
caches and allocators). TRL's own phase timers (its ``profiling_context``) are captured too.

TRL is a benchmark-only dependency: ``pip install -c constraints.txt 'trl==1.16.0'`` (the ``bench``
extra). Targets: product GRPO step <= 0.6 x TRL's; product RLSD step <= 0.7 x TRL's GRPO step.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


from _threads import pin_omp_threads  # noqa: E402

pin_omp_threads()

import torch  # noqa: E402
from _machine import describe  # noqa: E402
from flops import Shape, generation_flops, measure_matmul_rate, training_flops, within  # noqa: E402

TRL_VERSION = "1.16.0"
PRODUCT_PHASES = ["time/generate", "time/verify", "time/teacher", "time/update", "time/step"]


def _need_trl() -> None:
    try:
        import trl
    except ImportError:
        sys.exit(
            "TRL is not installed: it is a benchmark-only dependency.\n"
            f"  .venv/bin/pip install -c constraints.txt 'trl=={TRL_VERSION}'   (the bench extra)"
        )
    if trl.__version__ != TRL_VERSION:
        print(f"warning: TRL {trl.__version__} installed; the issue's reference is {TRL_VERSION}")


class _TrlTimers:
    """Collects TRL's ``profiling_context`` durations (it only forwards them to wandb / mlflow /
    trackio, none of which runs here) into per-step sums."""

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def install(self) -> None:
        from trl.extras import profiling

        timers = self

        def _log_metrics(ctx, duration: float) -> None:
            name = ctx.name.split(".", 1)[-1]  # drop the "GRPOTrainer." prefix
            timers.current[name] = timers.current.get(name, 0.0) + duration

        profiling.ProfilingContext._log_metrics = _log_metrics

    def take(self) -> dict[str, float]:
        out, self.current = self.current, {}
        return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--steps", type=int, default=6, help="optimizer steps per side (median of 2..N)"
    )
    ap.add_argument("--quick", action="store_true", help="2 steps per side (a smoke test)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="bundled name or HF folder")
    ap.add_argument(
        "--few-shot",
        type=int,
        default=0,
        help="worked examples in each prompt (0: one zero-shot user turn, ~88 tokens with "
        "SmolLM2's default system line; the issue's TRL figure used ~62-token prompts)",
    )
    ap.add_argument("--set", dest="sets", action="append", default=[], help="product override")
    ap.add_argument("--output-dir", default="runs/bench-vs-trl")
    args = ap.parse_args()
    steps = 2 if args.quick else args.steps
    if steps < 2:
        ap.error("--steps must be >= 2 (step 1 is warm-up)")
    _need_trl()
    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)

    import transformers
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlsd.configs import DEFAULT_CONFIG
    from rlsd.models import load_policy, load_tokenizer
    from rlsd.train.batch import student_prompt_ids
    from rlsd.train.config import load_config
    from rlsd.train.rewards import score_responses
    from rlsd.train.trainer import local_tasks, setup, train_step

    transformers.logging.set_verbosity_error()
    out_root = Path(args.output_dir)

    # ---- the product's two arms (its own config system)
    overrides = [
        f"model.name_or_path={args.model}",
        "model.dtype=float32",
        "task.generator=arithmetic",
        f"task.arithmetic.few_shot={args.few_shot}",
        "rollout.group_size=8",
        "rollout.prompts_per_step=4",
        "rollout.sampling.max_new_tokens=32",
        "rollout.sampling.temperature=0.6",
        "optim.lr=1e-5",
        f"run.num_threads={args.threads}",
        f"run.steps={steps}",
        "eval.before=false",
        "eval.after=false",
        "eval.num_tasks=0",
        *args.sets,
    ]
    sessions = {}
    for algo in ("grpo", "rlsd"):
        cfg = load_config(
            DEFAULT_CONFIG, [*overrides, f"algo.name={algo}", f"run.output_dir={out_root / algo}"]
        )
        sessions[algo] = setup(cfg, overwrite=True)
    cfg = sessions["grpo"].cfg
    G, P = cfg.rollout.group_size, cfg.rollout.prompts_per_step
    policy_path = load_policy(cfg.model).path or args.model
    tok = sessions["grpo"].policy.tokenizer
    shape = Shape.from_config(sessions["grpo"].model.config)

    # ---- the same prompts for TRL: the product's step-k tasks, in order, unshuffled
    step_tasks = [local_tasks(sessions["grpo"], k) for k in range(steps)]
    by_id = {t.id: t for tasks in step_tasks for t in tasks}
    rows = [{"prompt": t.messages(), "task_id": t.id} for tasks in step_tasks for t in tasks]
    dataset = Dataset.from_list(rows)

    def math_answer(prompts, completions, task_id, **_):
        """The product's reward: its verifier on the completion text (the last '#### N')."""
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return [r.score for r in score_responses(texts, [by_id[i] for i in task_id])]

    trl_args = GRPOConfig(
        output_dir=str(out_root / "trl"),
        per_device_train_batch_size=P * G,
        num_generations=G,
        gradient_accumulation_steps=1,
        max_completion_length=cfg.rollout.sampling.max_new_tokens,
        temperature=cfg.rollout.sampling.temperature,
        learning_rate=cfg.optim.lr,
        lr_scheduler_type="constant",
        weight_decay=cfg.optim.weight_decay,
        max_grad_norm=cfg.optim.grad_clip,
        beta=0.0,
        use_vllm=False,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        max_steps=steps,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        seed=cfg.run.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "sdpa"},
    )

    timers = _TrlTimers()
    timers.install()
    trl_steps: list[dict] = []
    product: dict[str, list[dict]] = {"grpo": [], "rlsd": []}
    trl_tokens: list[dict] = []

    def run_product_steps(k: int) -> None:
        rng = torch.random.get_rng_state()  # the product seeds its own sampling
        order = ("grpo", "rlsd") if k % 2 == 0 else ("rlsd", "grpo")
        for algo in order:
            s = sessions[algo]
            m = train_step(s, k)
            prompts = [len(student_prompt_ids(tok, t)) for t in local_tasks(s, k)]
            m["_flops/train"] = training_flops(
                shape, prompts, s.extra["last_lengths"], G, cfg.run.shared_prefix
            )
            loop = cfg.rollout.decode == "loop"
            rows = prompts if loop else [p for p in prompts for _ in range(G)]
            m["_flops/generate"] = generation_flops(shape, rows, s.extra["last_lengths"], G, loop)
            product[algo].append(m)
            print(
                f"  step {k + 1} {algo:4s}: {m['time/step']:6.2f}s (generate "
                f"{m['time/generate']:.2f}, teacher {m['time/teacher']:.2f}, update "
                f"{m['time/update']:.2f}), {m['response/length_mean']:.1f} tokens/completion, "
                f"reward {m['reward/mean']:.2f}",
                flush=True,
            )
        torch.random.set_rng_state(rng)

    for s in sessions.values():  # record the response lengths of each rollout (for FLOPs)
        engine_generate = s.engine.generate

        def recording(*a, _s=s, _g=engine_generate, **kw):
            batch = _g(*a, **kw)
            _s.extra["last_lengths"] = [len(r) for r in batch.response_ids]
            return batch

        s.engine.generate = recording

    class Alternate(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, args, state, control, **kw):
            timers.take()
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            dt = time.perf_counter() - self.t0
            phases = timers.take()
            k = state.global_step - 1
            trl_steps.append({"time/step": dt, **phases})
            tt = trl_tokens[-1] if trl_tokens else {}
            print(
                f"  step {k + 1} trl : {dt:6.2f}s (generate {phases.get('transformers.generate', 0):.2f}"
                f", loss forward {phases.get('compute_loss', 0):.2f}), "
                f"{tt.get('completion_mean', float('nan')):.1f} tokens/completion, "
                f"reward {tt.get('reward', float('nan')):.2f}",
                flush=True,
            )
            run_product_steps(k)

    trl_tok = load_tokenizer(policy_path)
    trainer = GRPOTrainer(
        model=str(policy_path),
        reward_funcs=[math_answer],
        args=trl_args,
        train_dataset=dataset,
        processing_class=trl_tok,
        callbacks=[Alternate()],
    )
    # Record what TRL actually generated from (prompt ids) and produced (completion lengths).
    gen_single = trainer._generate_single_turn

    def recording_generate(prompt_ids, *a, **kw):
        completion_ids, logprobs = gen_single(prompt_ids, *a, **kw)
        k = len(trl_tokens)
        expected = [student_prompt_ids(tok, t) for t in step_tasks[k]] if k < steps else []
        firsts = [list(prompt_ids[i]) for i in range(0, len(prompt_ids), G)]
        trl_tokens.append(
            {
                "prompts": [len(p) for p in firsts],
                "completions": [len(c) for c in completion_ids],
                "completion_mean": statistics.fmean(len(c) for c in completion_ids),
                "same_prompts": firsts == expected,
            }
        )
        return completion_ids, logprobs

    trainer._generate_single_turn = recording_generate
    reward_fn = trainer.reward_funcs[0]

    def recording_reward(*a, **kw):
        r = reward_fn(*a, **kw)
        if trl_tokens:
            trl_tokens[-1]["reward"] = statistics.fmean(r)
        return r

    recording_reward.__name__ = reward_fn.__name__
    trainer.reward_funcs[0] = recording_reward

    print(f"machine: {describe()}", flush=True)
    rate = measure_matmul_rate()
    print(f"fp32 matmul rate: {rate}", flush=True)
    print(
        f"settings: {args.model} fp32, {P} prompts x G={G} = {P * G} completions/step, "
        f"max_completion_length={cfg.rollout.sampling.max_new_tokens}, temperature "
        f"{cfg.rollout.sampling.temperature}, lr {cfg.optim.lr}, {args.threads} threads; "
        f"TRL {trl.__version__} (transformers {transformers.__version__}, beta 0, loss_type "
        f"{trl_args.loss_type}, no vLLM, no gradient checkpointing); product shared prefix "
        f"{cfg.run.shared_prefix}, stop regex {cfg.rollout.sampling.stop_regex!r}",
        flush=True,
    )
    try:
        import psutil

        print(f"load average at start: {os.getloadavg()}, CPU busy {psutil.cpu_percent(1.0)} %")
    except ImportError:
        print(f"load average at start: {os.getloadavg()}")
    t_all = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t_all
    print(f"load average at end: {os.getloadavg()} (benchmark wall {wall / 60:.1f} min)")
    rate_end = measure_matmul_rate()
    print(f"fp32 matmul rate at end: {rate_end}")
    rate = max(rate, rate_end, key=lambda r: r.best)

    # ---- report
    measured = slice(1, None)  # steps 2..N
    med = statistics.median
    trl_m = trl_steps[measured]
    prod = {a: product[a][measured] for a in product}

    def pm(algo: str, key: str) -> float:
        return med(m[key] for m in prod[algo])

    def tm(key: str) -> float:
        return med(m.get(key, 0.0) for m in trl_m)

    trl_step = tm("time/step")
    trl_gen = tm("transformers.generate")
    trl_prep = tm("_prepare_inputs")
    trl_loss = tm("compute_loss")
    trl_rest = med(
        m["time/step"] - m.get("_prepare_inputs", 0.0) - m.get("compute_loss", 0.0) for m in trl_m
    )
    trl_reward = tm("math_answer")
    print()
    print(f"median seconds per step, steps 2..{steps} ({len(trl_m)} measured per side)")
    w = 36
    print(f"{'':{w}s} {'TRL GRPO':>10s} {'rlsd GRPO':>10s} {'rlsd RLSD':>10s}")

    def row(name: str, t: float | str, g: float | str, r: float | str) -> None:
        cells = [f"{x:10.2f}" if isinstance(x, float) else f"{x:>10s}" for x in (t, g, r)]
        print(f"{name:{w}s} " + " ".join(cells))

    row("step", trl_step, pm("grpo", "time/step"), pm("rlsd", "time/step"))
    row("generate", trl_gen, pm("grpo", "time/generate"), pm("rlsd", "time/generate"))
    row(
        "  rest of TRL _prepare_inputs",
        trl_prep - trl_gen - trl_reward,
        "-",
        "-",
    )
    row("reward / verify", trl_reward, pm("grpo", "time/verify"), pm("rlsd", "time/verify"))
    row("teacher forward", "-", "-", pm("rlsd", "time/teacher"))
    row("loss forward (TRL compute_loss)", trl_loss, "-", "-")
    row("backward + AdamW + rest (TRL)", trl_rest, "-", "-")
    row(
        "update: fwd + bwd + AdamW",
        trl_loss + trl_rest,
        pm("grpo", "time/update"),
        pm("rlsd", "time/update"),
    )
    trl_plen = med(statistics.fmean(t["prompts"]) for t in trl_tokens[measured])
    trl_clen = med(t["completion_mean"] for t in trl_tokens[measured])
    row(
        "tokens/completion (median of means)",
        trl_clen,
        pm("grpo", "response/length_mean"),
        pm("rlsd", "response/length_mean"),
    )
    row(
        "reward mean (median)",
        med(t.get("reward", float("nan")) for t in trl_tokens[measured]),
        pm("grpo", "reward/mean"),
        pm("rlsd", "reward/mean"),
    )
    # Matmul work of the update's forward+backward, from the token counts each side processed.
    trl_train = [
        training_flops(shape, t["prompts"], t["completions"], G, shared_prefix=False)
        for t in trl_tokens[measured]
    ]
    row(
        "update fwd+bwd matmul GFLOP (useful)",
        med(trl_train) / 1e9,
        pm("grpo", "_flops/train") / 1e9,
        pm("rlsd", "_flops/train") / 1e9,
    )
    trl_gen_flops = [
        generation_flops(shape, [p for p in t["prompts"] for _ in range(G)], t["completions"])
        for t in trl_tokens[measured]
    ]
    row(
        "generate: x its arithmetic cost",
        within(
            sum(m.get("transformers.generate", 0.0) for m in trl_m), sum(trl_gen_flops), rate.best
        ),
        within(
            sum(m["time/generate"] for m in prod["grpo"]),
            sum(m["_flops/generate"] for m in prod["grpo"]),
            rate.best,
        ),
        within(
            sum(m["time/generate"] for m in prod["rlsd"]),
            sum(m["_flops/generate"] for m in prod["rlsd"]),
            rate.best,
        ),
    )
    print(
        f"prompt tokens per prompt: {trl_plen:.1f} (TRL and product tokenise the same messages; "
        f"identical ids every step: {all(t['same_prompts'] for t in trl_tokens)})"
    )
    if trl_m and "compute_loss" not in trl_m[0]:
        print(f"TRL timers seen: {sorted(trl_m[0])}")
    print("per-step seconds:")
    print(f"  TRL  {[round(m['time/step'], 1) for m in trl_steps]}")
    for a in ("grpo", "rlsd"):
        print(f"  {a} {[round(m['time/step'], 1) for m in product[a]]}")
    g_ratio = pm("grpo", "time/step") / trl_step
    r_ratio = pm("rlsd", "time/step") / trl_step
    print()
    print(
        f"product GRPO / TRL GRPO step: {g_ratio:.3f}  (target <= 0.60: "
        f"{'met' if g_ratio <= 0.6 else 'MISSED'})"
    )
    print(
        f"product RLSD / TRL GRPO step: {r_ratio:.3f}  (target <= 0.70: "
        f"{'met' if r_ratio <= 0.7 else 'MISSED'})"
    )
    print(
        f"product RLSD / product GRPO step: {pm('rlsd', 'time/step') / pm('grpo', 'time/step'):.3f}"
    )


if __name__ == "__main__":
    main()
