"""Training-curve and phase-time PNGs for the MLflow reports.

Pure renderers: they read ``metrics.jsonl`` rows (as :class:`rlsd.train.metrics.JsonlSink`
writes them: ``{"step": k, "reward/mean": ..., "time/generate": ...}``, NaN/inf as ``null``)
and write PNG files. Nothing here talks to MLflow; the report code logs the files.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas instead of
pyplot, so rendering never needs a display, never switches the process-wide backend (a
notebook importing this keeps its own), and leaves no global figure state behind.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "ARM_COLOURS",
    "DEFAULT_CURVE_METRICS",
    "PIPELINE_CURVE_METRICS",
    "PHASES",
    "ArmSource",
    "MetricsFileWarning",
    "arm_colours",
    "load_metric_rows",
    "mean_phase_times",
    "phase_times_figure",
    "plot_phase_times",
    "plot_training_curves",
    "training_curves_figure",
]

ArmSource = Path | str | Sequence[Mapping[str, Any]]
"""A metrics.jsonl path, a run directory holding one, or rows already loaded."""

DEFAULT_CURVE_METRICS: tuple[str, ...] = ("reward/mean", "eval/accuracy", "actor/entropy")
#: the pipeline's panels: the defaults plus the share of groups with no learning signal
PIPELINE_CURVE_METRICS: tuple[str, ...] = (*DEFAULT_CURVE_METRICS, "groups/zero_variance_frac")

METRIC_LABELS: dict[str, str] = {
    "reward/mean": "Train reward (mean)",
    "reward/std": "Train reward (std)",
    "accuracy": "Train pass rate",
    "eval/accuracy": "Held-out accuracy",
    "actor/entropy": "Policy entropy (nats/token)",
    "actor/loss": "Policy loss",
    "actor/grad_norm": "Gradient norm",
    "actor/approx_kl": "Approx. KL to rollout policy",
    "groups/zero_variance_frac": "Zero-variance groups (fraction)",
    "response/length_mean": "Response length (tokens, mean)",
    "response/clipped_frac": "Truncated responses (fraction)",
    "rlsd/lambda": "RLSD teacher share λ",
    "rlsd/weight_mean": "RLSD weight w (mean, clipped)",
    "rlsd/weight_std": "RLSD weight w (std, clipped)",
    "rlsd/weight_clip_frac": "RLSD weight clip fraction",
    "rlsd/delta_mean": "Teacher−student log-ratio Δ (mean)",
    "perf/tokens_per_s": "Throughput (tokens/s)",
    "time/step": "Seconds per step",
}

# Fixed colours for the arms the product trains, so RLSD is the same green in every report.
ARM_COLOURS: dict[str, str] = {
    "rlsd": "#1b9e77",
    "grpo": "#d95f02",
    "opsd": "#7570b3",
    "grpo+opsd": "#e7298a",
    "opd": "#66a61e",
    "base": "#666666",
}
_SPARE_COLOURS = ("#1f78b4", "#e6ab02", "#a6761d", "#fb9a99", "#6a3d9a", "#b15928", "#17becf")

# (metrics key, bar label). The trainer calls sampling "generate"; reports say "rollout".
PHASES: tuple[tuple[str, str], ...] = (
    ("time/generate", "rollout"),
    ("time/verify", "verify"),
    ("time/teacher", "teacher"),
    ("time/old_logprob", "old log-prob"),
    ("time/update", "update"),
)
_PHASE_COLOURS = {
    "rollout": "#4e79a7",
    "verify": "#f28e2b",
    "teacher": "#59a14f",
    "old log-prob": "#edc948",
    "update": "#e15759",
    "other": "#bab0ac",
}
_OTHER_PHASE = "other"

_DPI = 100


class MetricsFileWarning(UserWarning):
    """A metrics file (or a line of it) could not be read and was skipped."""


# --------------------------------------------------------------------------------------------
# Loading


def load_metric_rows(source: ArmSource) -> list[dict[str, Any]]:
    """Rows of one arm, sorted by step, one per step.

    Tolerant by design, because reports are rendered for crashed runs too: a missing file, an
    unreadable line (a kill mid-write tears the last one) or a row without a numeric ``step``
    is skipped with a :class:`MetricsFileWarning`. If a step occurs twice the later row wins,
    matching what a resumed run means.
    """
    if isinstance(source, str | os.PathLike):
        raw = _read_jsonl_rows(_metrics_path(Path(source)))
        where = str(source)
    else:
        raw = list(source)
        where = "rows"
    by_step: dict[int, dict[str, Any]] = {}
    for i, row in enumerate(raw):
        step = _as_step(row.get("step")) if isinstance(row, Mapping) else None
        if step is None:
            warnings.warn(
                f"{where}: row {i} has no numeric 'step'; skipped", MetricsFileWarning, stacklevel=2
            )
            continue
        by_step[step] = {**row, "step": step}
    return [by_step[k] for k in sorted(by_step)]


def _metrics_path(path: Path) -> Path:
    return path / "metrics.jsonl" if path.is_dir() else path


def _read_jsonl_rows(path: Path) -> list[Any]:
    try:
        # Bytes first: a torn write can also cut a multi-byte character in half.
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        warnings.warn(f"{path}: cannot read metrics ({exc})", MetricsFileWarning, stacklevel=3)
        return []
    rows: list[Any] = []
    lines = text.splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            hint = " (truncated last line of a killed run?)" if n == len(lines) else ""
            warnings.warn(
                f"{path}:{n}: unparseable metrics line skipped{hint}",
                MetricsFileWarning,
                stacklevel=3,
            )
    return rows


def _as_step(v: Any) -> int | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, float) and not v.is_integer():
        return None
    return int(v)


def _as_value(v: Any) -> float | None:
    # bool is an int subclass but never a metric; null is how the sink writes NaN/inf.
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def _series(rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for row in rows:
        v = _as_value(row.get(metric))
        if v is not None:
            steps.append(row["step"])
            values.append(v)
    return steps, values


def _eval_file_points(source: ArmSource, rows: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Held-out accuracy from ``eval_before.json``/``eval_after.json`` beside the metrics file.

    The trainer evaluates before and after training by default but only logs ``eval/accuracy``
    into the rows when ``eval.every`` is set, so without these files most runs would have no
    accuracy curve at all. Before-training is drawn at step 0, after-training at the last step.
    """
    if not isinstance(source, str | os.PathLike):
        return {}
    run_dir = _metrics_path(Path(source)).parent
    points: dict[int, float] = {}
    for name, step in (
        ("eval_before.json", 0),
        ("eval_after.json", rows[-1]["step"] if rows else None),
    ):
        f = run_dir / name
        if step is None or not f.is_file():
            continue
        try:
            acc = _as_value(json.loads(f.read_text()).get("accuracy"))
        except (OSError, ValueError, AttributeError) as exc:
            warnings.warn(f"{f}: unreadable evaluation ({exc})", MetricsFileWarning, stacklevel=3)
            continue
        if acc is not None:
            points[step] = acc
    return points


# --------------------------------------------------------------------------------------------
# Colours


def arm_colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per arm: fixed for known algorithms, stable-hashed for others.

    The hash (not the arm's position) keeps an unknown arm's colour the same across figures and
    reports; a clash inside one figure moves the later arm to the next free spare colour.
    """
    out: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        c = ARM_COLOURS.get(name.strip().lower())
        if c is not None:
            out[name] = c
            used.add(c)
    for name in names:
        if name in out:
            continue
        start = zlib.crc32(name.strip().lower().encode()) % len(_SPARE_COLOURS)
        for k in range(len(_SPARE_COLOURS)):
            c = _SPARE_COLOURS[(start + k) % len(_SPARE_COLOURS)]
            if c not in used:
                break
        else:
            c = _SPARE_COLOURS[start]  # more arms than colours: a repeat beats failing
        out[name] = c
        used.add(c)
    return out


# --------------------------------------------------------------------------------------------
# Training curves


def training_curves_figure(
    arms: Mapping[str, ArmSource],
    metrics: Sequence[str] = DEFAULT_CURVE_METRICS,
    *,
    title: str | None = None,
    eval_files: bool = True,
) -> Figure:
    """The figure behind :func:`plot_training_curves`: one axes per metric that has data.

    Returned for callers (and tests) that want to inspect or restyle it before saving.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    loaded = {name: load_metric_rows(src) for name, src in arms.items()}
    colours = arm_colours(list(arms))
    panels: list[tuple[str, list[tuple[str, list[int], list[float]]]]] = []
    for metric in dict.fromkeys(metrics):  # a metric requested twice is drawn once
        lines = []
        for name, rows in loaded.items():
            steps, values = _series(rows, metric)
            if metric == "eval/accuracy" and eval_files:
                merged = {
                    **_eval_file_points(arms[name], rows),
                    **dict(zip(steps, values, strict=True)),
                }
                steps = sorted(merged)
                values = [merged[s] for s in steps]
            if steps:
                lines.append((name, steps, values))
        if lines:
            panels.append((metric, lines))

    if not panels:
        fig = Figure(figsize=(6.0, 3.0), dpi=_DPI, layout="constrained")
        ax = fig.add_subplot()
        ax.set_axis_off()
        wanted = ", ".join(metrics) or "none"
        ax.text(
            0.5, 0.5, f"No data for the requested metrics\n({wanted})", ha="center", va="center"
        )
        if title:
            fig.suptitle(title)
        return fig

    ncols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 3.6 * nrows + 0.6), dpi=_DPI, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[len(panels) :]:
        fig.delaxes(ax)
    drawn: dict[str, None] = {}
    for ax, (metric, lines) in zip(grid, panels, strict=False):
        for name, steps, values in lines:
            # Sparse series (evaluations, short runs) are unreadable as bare lines.
            marker = "o" if len(steps) <= 30 else None
            ax.plot(steps, values, color=colours[name], marker=marker, markersize=3.5, lw=1.6)
            drawn[name] = None
        ax.set_title(METRIC_LABELS.get(metric, metric), fontsize=11)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric, fontsize=9)
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=colours[n], lw=2.0, label=n) for n in drawn]
    fig.legend(
        handles=handles, loc="outside upper center", ncols=max(1, len(handles)), frameon=False
    )
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(
    arms: Mapping[str, ArmSource],
    out_path: Path | str,
    metrics: Sequence[str] = DEFAULT_CURVE_METRICS,
    *,
    title: str | None = None,
    eval_files: bool = True,
) -> Path:
    """Write one PNG with a panel per metric against step and a line per arm.

    ``arms`` maps an arm name (``"rlsd"``, ``"grpo"``, ``"opsd"``, ...) to its metrics.jsonl,
    its run directory, or rows already loaded. ``metrics`` defaults to train reward, held-out
    accuracy and policy entropy; pass more names (e.g. ``"rlsd/weight_clip_frac"``) to add
    panels. An arm lacking a metric is left out of that panel, and a panel no arm has data for
    is omitted; if nothing at all has data the PNG says so instead of failing the report.
    With ``eval_files`` the held-out accuracy also takes ``eval_before.json`` (step 0) and
    ``eval_after.json`` (last step) from beside each metrics file given as a path.
    """
    fig = training_curves_figure(arms, metrics, title=title, eval_files=eval_files)
    return _save_png(fig, Path(out_path))


# --------------------------------------------------------------------------------------------
# Phase times


def mean_phase_times(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean seconds per step for each phase the rows carry, keyed by the bar label.

    ``other`` is the rest of ``time/step`` (teacher sync, batching, logging), so a bar's height
    is the real step time. Phases that are zero throughout (``old log-prob`` is, on-policy) are
    dropped by the figure, not here, so numbers stay comparable across arms.
    """
    out: dict[str, float] = {}
    for key, label in PHASES:
        _, values = _series(rows, key)
        if values:
            out[label] = sum(values) / len(values)
    _, totals = _series(rows, "time/step")
    if totals and out:
        out[_OTHER_PHASE] = max(0.0, sum(totals) / len(totals) - sum(out.values()))
    return out


def phase_times_figure(arms: Mapping[str, ArmSource], *, title: str | None = None) -> Figure | None:
    """Stacked bars of mean seconds per phase, one bar per arm; None when no arm has timings."""
    from matplotlib.figure import Figure

    means = {name: mean_phase_times(load_metric_rows(src)) for name, src in arms.items()}
    means = {name: m for name, m in means.items() if m}
    if not means:
        return None
    order = [label for _, label in PHASES] + [_OTHER_PHASE]
    phases = [p for p in order if any(m.get(p, 0.0) > 0.0 for m in means.values())]
    names = list(means)
    fig = Figure(figsize=(max(4.5, 1.6 * len(names) + 2.5), 4.2), dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    bottoms = [0.0] * len(names)
    for phase in phases:
        heights = [means[n].get(phase, 0.0) for n in names]
        ax.bar(names, heights, bottom=bottoms, color=_PHASE_COLOURS[phase], label=phase, width=0.6)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    for x, total in enumerate(bottoms):
        ax.annotate(
            f"{total:.2f} s",
            (x, total),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_ylim(0, max(bottoms) * 1.15 if max(bottoms) > 0 else 1.0)
    ax.set_ylabel("mean seconds per optimizer step")
    ax.set_xlabel("arm")
    ax.set_title(title or "Time per step by phase")
    if phases:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="phase")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def plot_phase_times(
    arms: Mapping[str, ArmSource], out_path: Path | str, *, title: str | None = None
) -> Path | None:
    """Write the phase-time bar chart; returns None (and writes nothing) without timings."""
    fig = phase_times_figure(arms, title=title)
    return None if fig is None else _save_png(fig, Path(out_path))


# --------------------------------------------------------------------------------------------


def _save_png(fig: Figure, out_path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: a report uploader must never pick up a half-written PNG.
    tmp = out_path.with_name(out_path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=_DPI)
    tmp.replace(out_path)
    return out_path
