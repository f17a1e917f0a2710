"""Training-curve and phase-time PNGs: read back, panel counts, torn lines, missing metrics."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from rlsd.tracking.plots import (
    ARM_COLOURS,
    MetricsFileWarning,
    arm_colours,
    load_metric_rows,
    mean_phase_times,
    phase_times_figure,
    plot_phase_times,
    plot_training_curves,
    training_curves_figure,
)
from rlsd.train.metrics import JsonlSink

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _step_metrics(algo: str, step: int) -> dict[str, float]:
    """A subset of trainer.step_metrics' keys with plausible values for a small run."""
    m = {
        "reward/mean": 0.4 + 0.03 * step,
        "reward/std": 0.49,
        "accuracy": 0.4 + 0.03 * step,
        "groups/zero_variance_frac": 0.125,
        "response/length_mean": 27.0,
        "actor/loss": 0.02,
        "actor/entropy": 0.30 - (0.004 if algo == "rlsd" else 0.01) * step,
        "actor/grad_norm": 1.7,
        "rlsd/lambda": 0.5 * max(0.0, 1 - step / 50) if algo == "rlsd" else 0.0,
        "time/generate": 21.0,
        "time/verify": 0.0004,
        "time/teacher": 13.6 if algo != "grpo" else 0.0,
        "time/old_logprob": 0.0,
        "time/update": 27.0,
    }
    if algo == "rlsd":
        m |= {"rlsd/weight_mean": 1.003, "rlsd/weight_clip_frac": 0.05, "rlsd/weight_std": 0.11}
    m["time/step"] = sum(v for k, v in m.items() if k.startswith("time/")) + 0.4
    return m


def _write_run(run_dir, algo: str, steps: int = 6, eval_every: int = 0) -> None:
    sink = JsonlSink(run_dir / "metrics.jsonl")
    for done in range(1, steps + 1):
        m = _step_metrics(algo, done)
        if eval_every and done % eval_every == 0 and done < steps:
            m |= {"eval/accuracy": 0.5 + 0.02 * done, "eval/num_tasks": 64.0}
        sink.log(done, m)
    sink.close()


@pytest.fixture
def runs(tmp_path):
    for algo in ("rlsd", "grpo"):
        _write_run(tmp_path / algo, algo, eval_every=2)
    (tmp_path / "rlsd" / "eval_before.json").write_text(json.dumps({"accuracy": 0.44}))
    (tmp_path / "rlsd" / "eval_after.json").write_text(json.dumps({"accuracy": 0.72}))
    return tmp_path


def _png_size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_curves_png_has_a_panel_per_metric_and_a_line_per_arm(runs, tmp_path):
    arms = {"rlsd": runs / "rlsd" / "metrics.jsonl", "grpo": runs / "grpo"}  # file or run dir
    out = plot_training_curves(arms, tmp_path / "out" / "curves.png")
    assert out == tmp_path / "out" / "curves.png"
    # Three panels in one row at 100 dpi: 15 x 4.2 inches.
    assert _png_size(out) == (1500, 420)

    fig = training_curves_figure(arms)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Train reward (mean)", "Held-out accuracy", "Policy entropy (nats/token)"]
    for ax in fig.axes:
        assert ax.get_xlabel() == "optimizer step"
        assert len(ax.lines) == 2
        assert {tuple(line.get_color() for line in ax.lines)} == {
            (ARM_COLOURS["rlsd"], ARM_COLOURS["grpo"])
        }
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["rlsd", "grpo"]
    # Held-out accuracy: in-run evaluations plus eval_before (step 0) / eval_after (last step).
    acc_rlsd, acc_grpo = fig.axes[1].lines
    assert list(acc_rlsd.get_xdata()) == [0, 2, 4, 6]
    assert list(acc_rlsd.get_ydata()) == pytest.approx([0.44, 0.54, 0.58, 0.72])
    assert list(acc_grpo.get_xdata()) == [2, 4]


def test_missing_metric_skips_the_arm_and_empty_panel_is_omitted(runs):
    arms = {"rlsd": runs / "rlsd", "grpo": runs / "grpo"}
    fig = training_curves_figure(
        arms, ("reward/mean", "rlsd/weight_clip_frac", "no/such_metric", "reward/mean")
    )
    assert [ax.get_title() for ax in fig.axes] == [
        "Train reward (mean)",
        "RLSD weight clip fraction",
    ]
    (clip_line,) = fig.axes[1].lines  # GRPO has no RLSD weight statistics
    assert clip_line.get_color() == ARM_COLOURS["rlsd"]


def test_truncated_last_line_and_nulls_are_tolerated(runs, tmp_path):
    path = runs / "grpo" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[2]["actor/entropy"] = None  # how JsonlSink writes NaN
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 7, "reward/me')
    with pytest.warns(MetricsFileWarning, match=r"metrics.jsonl:7: .*truncated"):
        loaded = load_metric_rows(path)
    assert [r["step"] for r in loaded] == [1, 2, 3, 4, 5, 6]
    with pytest.warns(MetricsFileWarning):
        fig = training_curves_figure({"grpo": path}, ("actor/entropy",))
    assert list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 4, 5, 6]
    with pytest.warns(MetricsFileWarning):
        out = plot_training_curves({"grpo": path, "rlsd": runs / "rlsd"}, tmp_path / "c.png")
    assert _png_size(out)[0] > 0


def test_empty_missing_or_dataless_inputs_still_write_a_png(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.warns(MetricsFileWarning, match="cannot read"):
        fig = training_curves_figure({"rlsd": empty, "grpo": tmp_path / "nope.jsonl"})
    assert len(fig.axes) == 1 and not fig.axes[0].axison  # the "no data" placeholder
    with pytest.warns(MetricsFileWarning):
        out = plot_training_curves({"rlsd": empty, "grpo": tmp_path / "x"}, tmp_path / "p.png")
    assert _png_size(out) == (600, 300)
    assert plot_phase_times({"rlsd": empty}, tmp_path / "phases.png") is None
    assert not (tmp_path / "phases.png").exists()


def test_loaded_rows_are_accepted_sorted_and_deduplicated():
    rows = [
        {"step": 2, "reward/mean": 0.5},
        {"step": 1, "reward/mean": 0.25},
        {"step": 2, "reward/mean": 0.75},  # a resumed run re-logging step 2: the later row wins
        {"reward/mean": 1.0},
    ]
    with pytest.warns(MetricsFileWarning, match="no numeric 'step'"):
        loaded = load_metric_rows(rows)
    assert [(r["step"], r["reward/mean"]) for r in loaded] == [(1, 0.25), (2, 0.75)]
    fig = training_curves_figure({"opsd": loaded}, ("reward/mean",))
    assert fig.axes[0].lines[0].get_color() == ARM_COLOURS["opsd"]


def test_arm_colours_are_stable_and_distinct():
    names = ["rlsd", "GRPO", "opsd", "rlsd-lam0.3", "rlsd-lam0.1"]
    c = arm_colours(names)
    assert c["rlsd"] == ARM_COLOURS["rlsd"] and c["GRPO"] == ARM_COLOURS["grpo"]
    assert len(set(c.values())) == len(names)
    assert (
        arm_colours(["rlsd-lam0.3"])["rlsd-lam0.3"]
        == arm_colours(["x", "rlsd-lam0.3"])["rlsd-lam0.3"]
    )


def test_phase_times_stack_to_the_step_time(runs, tmp_path):
    rows = load_metric_rows(runs / "rlsd")
    means = mean_phase_times(rows)
    assert set(means) == {"rollout", "verify", "teacher", "old log-prob", "update", "other"}
    assert means["other"] == pytest.approx(0.4)
    assert sum(means.values()) == pytest.approx(sum(r["time/step"] for r in rows) / len(rows))

    arms = {"rlsd": runs / "rlsd", "grpo": runs / "grpo"}
    fig = phase_times_figure(arms)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["rollout", "verify", "teacher", "update", "other"]  # all-zero phase dropped
    assert [t.get_text() for t in ax.get_xticklabels()] == ["rlsd", "grpo"]
    tops = {}
    for patch in ax.patches:
        x = round(patch.get_x() + patch.get_width() / 2)
        tops[x] = max(tops.get(x, 0.0), patch.get_y() + patch.get_height())
    assert tops[0] == pytest.approx(means["rollout"] + means["verify"] + means["teacher"] + 27.4)
    assert tops[1] == pytest.approx(21.0 + 0.0004 + 27.0 + 0.4)
    out = plot_phase_times(arms, tmp_path / "phases.png")
    w, h = _png_size(out)
    assert (w, h) == (math.ceil(max(4.5, 1.6 * 2 + 2.5) * 100), 420)
