"""The study's report (``report.md``) and plots, from the finished runs' small outputs.

Everything is recomputed from ``results/`` each time, so a study resumed over several sessions
always reports every finished pair; a study still running says how many runs it is missing and
analyses only the seeds every arm has finished (so every difference stays paired).
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import fmean

from rlsd.study.config import StudyDesign, design_digest
from rlsd.study.runner import cpu_seconds, load_curves, load_scores, run_keys
from rlsd.study.stats import ArmStats, StudyStats, bootstrap_ci_single, summarise
from rlsd.tables import md_table

# Metric names in the trainer's per-step rows; the first present is used.
ENTROPY_KEYS = ("actor/entropy",)
LENGTH_KEYS = ("response/length_mean",)
CLIP_KEYS = {
    "credit tokens (A≠0)": ("rlsd/weight_clip_frac",),
    "all response tokens": ("rlsd/weight_clip_frac_all",),
}
DELTA_KEYS = ("rlsd/delta_mean",)


def _complete_seeds(scores: dict, design: StudyDesign) -> list[int]:
    return [s for s in design.seeds if all(s in scores.get(a, {}) for a in design.arms)]


def _metric(rows: list[dict], keys: tuple[str, ...]) -> list[tuple[int, float]]:
    for key in keys:
        pts = [(int(r["step"]), float(r[key])) for r in rows if key in r and r.get(key) is not None]
        if pts:
            return pts
    return []


def _window_mean(curves: dict[int, list[dict]], keys: tuple[str, ...], last: int) -> float | None:
    """Mean over seeds of the metric's mean over the last ``last`` steps."""
    per_seed = []
    for rows in curves.values():
        pts = _metric(rows, keys)
        if pts:
            per_seed.append(fmean(v for _, v in pts[-last:]))
    return fmean(per_seed) if per_seed else None


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{100 * x:.1f} %" if pct else f"{x:.3f}"


def write_report(design: StudyDesign, study_dir: Path) -> str:
    """Write ``report.md`` and ``plots/`` for the runs finished so far; return the Markdown."""
    scores = load_scores(study_dir, design)
    curves = load_curves(study_dir, design)
    total = len(run_keys(design))
    done = sum(len(v) for v in scores.values())
    seeds = _complete_seeds(scores, design)
    arms = list(design.arms)
    if not seeds:
        # no seed has every arm yet: compare the arms that share finished seeds with the baseline
        base = set(scores.get(design.baseline, {}))
        arms = [a for a in design.arms if a == design.baseline or base & set(scores.get(a, {}))]
        seeds = sorted(set.intersection(*(set(scores.get(a, {})) for a in arms))) if base else []
        if len(arms) < 2:
            seeds = []
    out = [f"# Study `{design.name}`", ""]
    if design.description:
        out += [design.description, ""]
    out += [
        md_table(
            ["design", ""],
            [
                ["digest (pre-registered)", f"`{design_digest(design)}`"],
                [
                    "arms",
                    "; ".join(
                        f"**{a}**: " + ", ".join(f"{k}={v}" for k, v in o.items())
                        for a, o in design.arms.items()
                    ),
                ],
                [
                    "shared overrides",
                    ", ".join(f"{k}={v}" for k, v in design.overrides.items()) or "—",
                ],
                ["seeds (paired)", ", ".join(map(str, design.seeds))],
                ["steps; evaluations", f"{design.steps}; greedy at {design.eval_steps}"],
                ["held-out problems", str(design.eval_tasks)],
                [
                    "primary endpoint",
                    f"{design.endpoint.arm} − {design.endpoint.versus}, "
                    f"{design.endpoint.metric} at step {design.steps}; claim "
                    f"supported if the interval's lower bound > "
                    f"{100 * design.endpoint.threshold:+.1f} pts",
                ],
                ["runs finished", f"{done} of {total}"],
                ["CPU time (finished runs)", f"{cpu_seconds(study_dir, design) / 3600:.2f} h"],
            ],
        ),  # fmt: skip
    ]
    if not seeds:
        out += ["_No seed has finished every arm yet: nothing to compare._", ""]
        return _write(study_dir, out)
    paired = {a: {s: scores[a][s] for s in seeds} for a in arms}
    stats = summarise(paired, baseline=design.baseline, samples=design.bootstrap_samples,
                      confidence=design.confidence, seed=design.bootstrap_seed)  # fmt: skip
    if len(seeds) < len(design.seeds) or len(arms) < len(design.arms):
        out += [f"**Incomplete:** analysed arms {arms}, seeds {seeds} of {design.seeds}; "
                "every interval below will change as the other runs finish.", ""]  # fmt: skip
    out += _results_table(design, stats, curves)
    out += _endpoint(design, stats, complete=done == total)
    out += _per_seed(design, stats)
    out += _curves_table(design, stats)
    _plots(design, stats, paired, curves, study_dir / "plots")
    out += ["## Plots", "", "![accuracy](plots/accuracy.png)",
            "![paired differences](plots/paired_difference.png)",
            "![entropy](plots/entropy.png)", "![clip fraction](plots/clip_fraction.png)", ""]  # fmt: skip
    return _write(study_dir, out)


def _write(study_dir: Path, lines: list[str]) -> str:
    text = "\n".join(lines) + "\n"
    study_dir.mkdir(parents=True, exist_ok=True)
    tmp = study_dir / "report.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(study_dir / "report.md")
    return text


def _results_table(design: StudyDesign, stats: StudyStats, curves: dict) -> list[str]:
    window = max(1, design.eval_every)
    rows = []
    for arm, a in stats.arms.items():
        final = a.comparisons[-1] if a.comparisons else None
        c = curves.get(arm, {})
        rows.append([
            arm,
            a.final_accuracy.describe(),
            final.bootstrap.describe() if final else "(baseline)",
            final.t.describe() if final else "—",
            "never" if a.steps_to_threshold is None else str(a.steps_to_threshold),
            _fmt(_window_mean(c, ENTROPY_KEYS, window)),
            _fmt(_window_mean(c, LENGTH_KEYS, window)),
            " / ".join(_fmt(_window_mean(c, k, window), pct=True) for k in CLIP_KEYS.values()),
            _fmt(_window_mean(c, DELTA_KEYS, window)),
        ])  # fmt: skip
    return [
        "## Result", "",
        f"Final step {stats.steps[-1]}; {len(stats.seeds)} seed(s) × {stats.n_problems} problems; "
        f"{int(100 * stats.confidence)} % intervals. Steps-to-threshold: the first evaluation at "
        f"which the arm's mean accuracy reaches {design.baseline}'s final "
        f"{100 * stats.threshold:.1f} %. Entropy, length, clip fraction and Δ: mean of the last "
        f"{window} steps.", "",
        md_table(["arm", "final accuracy", f"Δ vs {design.baseline} (hierarchical bootstrap)",
                  "Δ (t over seeds)", "steps to threshold", "entropy", "response tokens",
                  "weight-clip fraction (A≠0 / all tokens)", "mean Δ log-prob"], rows),
    ]  # fmt: skip


def _endpoint(design: StudyDesign, stats: StudyStats, *, complete: bool) -> list[str]:
    e = design.endpoint
    if e.arm not in stats.arms:
        return ["## Primary endpoint", "", f"_{e.arm} has not finished a paired seed yet._", ""]
    arm: ArmStats = stats.arms[e.arm]
    if e.versus != stats.baseline or not arm.comparisons:
        return ["## Primary endpoint", "", f"_{e.arm} vs {e.versus}: see the table._", ""]
    ci = arm.comparisons[-1].bootstrap
    supported = ci.low > e.threshold
    if not complete:
        # a verdict is for the registered design: 1 seed's interval holds no training noise
        return ["## Primary endpoint", "",
                f"**Interim, not a verdict** (the design is not complete): {e.arm} − {e.versus} "
                f"at step {arm.final_step} so far: {ci.describe()}.", ""]  # fmt: skip
    lines = ["## Primary endpoint", "",
             f"{e.arm} − {e.versus} at step {arm.final_step}: {ci.describe()}. "
             + ("**Supported**: the lower bound exceeds the threshold."
                if supported else "**Not supported**: the interval's lower bound does not "
                f"exceed {100 * e.threshold:+.1f} pts.")]  # fmt: skip
    if ci.includes_zero:
        lines.append("The interval includes zero: this design cannot tell the arms apart.")
    if arm.mde is not None:
        lines.append(f"With {len(stats.seeds)} seed(s) × {stats.n_problems} problems the design "
                     f"had {int(100 * arm.mde.power)} % power to detect a difference of "
                     f"{100 * arm.mde.value:.1f} pts ({arm.mde.basis}).")  # fmt: skip
    return [*lines, ""]


def _per_seed(design: StudyDesign, stats: StudyStats) -> list[str]:
    rows = [[arm, *(f"{100 * a.per_seed_final[s]:.1f} %" for s in stats.seeds)]
            for arm, a in stats.arms.items()]  # fmt: skip
    return ["## Every seed (final accuracy)", "",
            md_table(["arm", *(f"seed {s}" for s in stats.seeds)], rows)]  # fmt: skip


def _curves_table(design: StudyDesign, stats: StudyStats) -> list[str]:
    rows = []
    for arm, a in stats.arms.items():
        for c in a.comparisons:
            rows.append([arm, c.step, f"{100 * a.curve[c.step]:.1f} %",
                         ", ".join(f"{100 * v:+.1f}" for v in c.per_seed.values()),
                         c.bootstrap.describe(), c.t.describe()])  # fmt: skip
    return ["## Paired differences at every evaluation", "",
            md_table(["arm", "step", "accuracy", "per-seed Δ (pts)", "bootstrap", "t"], rows)]  # fmt: skip


def _plots(design: StudyDesign, stats: StudyStats, scores: dict, curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    steps = stats.steps
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for arm in scores:
        cis = [bootstrap_ci_single(scores, arm, s, samples=2000, seed=design.bootstrap_seed,
                                   confidence=design.confidence) for s in steps]  # fmt: skip
        ax.plot(steps, [100 * c.estimate for c in cis], marker="o", label=arm)
        ax.fill_between(steps, [100 * c.low for c in cis], [100 * c.high for c in cis], alpha=0.15)
    ax.set(xlabel="optimizer step", ylabel="held-out accuracy (%)",
           title=f"{design.name}: accuracy ({int(100 * design.confidence)} % bands)")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.axhline(0, color="grey", lw=0.8)
    for i, (arm, a) in enumerate(stats.arms.items()):
        if not a.comparisons:
            continue
        xs = [c.step + (i - 1) * 0.6 for c in a.comparisons]
        mid = [100 * c.bootstrap.estimate for c in a.comparisons]
        lo = [m - 100 * c.bootstrap.low for m, c in zip(mid, a.comparisons, strict=True)]
        hi = [100 * c.bootstrap.high - m for m, c in zip(mid, a.comparisons, strict=True)]
        ax.errorbar(
            xs, mid, yerr=[lo, hi], marker="o", capsize=3, label=f"{arm} − {design.baseline}"
        )
    ax.set(xlabel="optimizer step", ylabel="paired difference (pts)",
           title="paired differences, hierarchical bootstrap intervals")  # fmt: skip
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "paired_difference.png", dpi=110)
    plt.close(fig)

    for name, keys, ylabel in (("entropy", ENTROPY_KEYS, "policy entropy (nats/token)"),
                               ("clip_fraction", CLIP_KEYS["all response tokens"]
                                + CLIP_KEYS["credit tokens (A≠0)"], "weight-clip fraction")):  # fmt: skip
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for arm in scores:
            per_seed = [_metric(rows, keys) for rows in curves.get(arm, {}).values()]
            per_seed = [p for p in per_seed if p]
            if not per_seed:
                continue
            n = min(len(p) for p in per_seed)
            xs = [p[0] for p in per_seed[0][:n]]
            ax.plot(xs, [fmean(p[i][1] for p in per_seed) for i in range(n)], label=arm)
        ax.set(xlabel="optimizer step", ylabel=ylabel, title=f"{ylabel} (mean over seeds)")
        if ax.lines:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
