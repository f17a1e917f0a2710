"""Bar-chart questions with exact integer answers; the privileged context is the data table.

Each task is one small bar chart (matplotlib, Agg, drawn on a private ``Figure`` -- no pyplot
global state) with N labelled bars of distinct integer values, and one question:

* ``value``  -- "What is the value of the bar labelled 'plum'?"
* ``max``    -- "What is the largest value shown in the chart?"
* ``argmax`` -- "Which bar is the tallest?" with numbered options ("1) fig 2) plum 3) pear");
  the gold answer is the option *number*, because the ``math-answer`` verifier only compares
  numbers (option order is drawn per chart, so the number is not the bar's position)
* ``diff``   -- "How much larger is the value of 'plum' than the value of 'fig'?"

Values are distinct within a chart, so the tallest bar is unique and every difference is > 0.

The student prompt is one user message: the question and the instruction to end with
``#### <number>`` (the arithmetic generator's answer format, which ``math-answer`` extracts
first). It holds no image placeholder token: the chart is referenced by ``Task.images`` (a
content digest in the :class:`~rlsd.tasks.images.ImageStore` named by ``image_dir``), and the
trainer attaches it to that user message as ``{"type": "image"}`` content, where the model's
processor inserts its own image tokens. The self-teacher additionally sees the data table
("label | value" lines) and a one-line worked solution.

Chart identity ("content") is the ordered (labels, values) table; train and held-out are
disjoint by it (no chart appears twice anywhere). Held-out charts are drawn first, so changing
``n_train`` does not change the held-out set. Title and colour are cosmetic.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlsd.tasks.images import ImageStore, image_store_for
from rlsd.tasks.record import ChatMessage, Task

GENERATOR_VERSION = 1
VERIFIER_NAME = "math-answer"
DOMAIN = "chart"

QuestionType = Literal["value", "max", "argmax", "diff"]

INSTRUCTION = (
    "Look at the bar chart in the image and answer the question. "
    "Give the final answer on its own line as '#### <number>'."
)
FINAL_LINE = "End your reply with '#### <number>'."

LABELS: tuple[str, ...] = (
    "apple", "pear", "plum", "kiwi", "lime", "fig", "date", "grape",
    "melon", "peach", "lemon", "mango", "berry", "cherry", "olive", "guava",
)  # fmt: skip
_TITLES: tuple[str, ...] = (
    "Fruit sold", "Boxes packed", "Orders", "Votes", "Stock", "Harvest", "Sales", "Requests",
)  # fmt: skip
_COLOURS: tuple[str, ...] = (
    "#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#64b5cd",
)  # fmt: skip


class BarChartTaskConfig(BaseModel):
    """Configuration of the bar-chart generator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=0, description="Seed; the same seed gives identical tasks.")
    n_train: int = Field(default=256, ge=0, description="Number of training tasks.")
    n_heldout: int = Field(default=64, ge=0, description="Number of held-out tasks.")
    image_size: int = Field(
        default=224, ge=96, le=1024, description="Width and height of each chart in pixels."
    )
    min_bars: int = Field(default=3, ge=2, le=len(LABELS))
    max_bars: int = Field(default=6, ge=2, le=len(LABELS))
    min_value: int = Field(default=1, ge=0, description="Smallest bar value.")
    max_value: int = Field(default=20, ge=1, le=10_000, description="Largest bar value.")
    question_types: list[QuestionType] = Field(
        default_factory=lambda: ["value", "max", "argmax", "diff"],
        min_length=1,
        description="Question kinds a chart may be asked (one drawn per chart).",
    )
    show_values: bool = Field(
        default=True,
        description="Print each bar's value above it (otherwise the model reads the y axis).",
    )
    image_dir: Path | None = Field(
        default=None,
        description="ImageStore root for the charts; None = $RLSD_CACHE_DIR/images.",
    )

    @field_validator("question_types")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"question_types must not repeat: {v}")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> BarChartTaskConfig:
        if self.min_bars > self.max_bars:
            raise ValueError(f"min_bars={self.min_bars} > max_bars={self.max_bars}")
        if self.max_value - self.min_value + 1 < self.max_bars:
            raise ValueError(
                f"values {self.min_value}..{self.max_value} cannot give {self.max_bars} "
                "distinct bar values; widen the range or lower max_bars"
            )
        return self


@dataclass(frozen=True)
class Chart:
    labels: tuple[str, ...]
    values: tuple[int, ...]

    @property
    def key(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        return (self.labels, self.values)

    def table(self) -> str:
        rows = "\n".join(
            f"{lab} | {val}" for lab, val in zip(self.labels, self.values, strict=True)
        )
        return f"Data table (bar | value):\n{rows}"

    def value_of(self, label: str) -> int:
        return self.values[self.labels.index(label)]


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: int
    solution: str
    options: tuple[str, ...] = ()
    bars: tuple[str, ...] = ()


def _draw_chart(rng: random.Random, cfg: BarChartTaskConfig) -> Chart:
    n = rng.randint(cfg.min_bars, cfg.max_bars)
    labels = tuple(rng.sample(LABELS, n))
    values = tuple(rng.sample(range(cfg.min_value, cfg.max_value + 1), n))
    return Chart(labels, values)


def _options_text(options: tuple[str, ...]) -> str:
    return " ".join(f"{i}) {o}" for i, o in enumerate(options, start=1))


def make_question(chart: Chart, kind: str, rng: random.Random) -> Question:
    """One question of ``kind`` about ``chart``, its answer and a one-line worked solution."""
    if kind == "value":
        label = rng.choice(chart.labels)
        v = chart.value_of(label)
        return Question(
            kind,
            f"What is the value of the bar labelled '{label}'?",
            v,
            f"The bar '{label}' has value {v}, so the answer is {v}.",
            bars=(label,),
        )
    top = max(range(len(chart.values)), key=chart.values.__getitem__)
    top_label, top_value = chart.labels[top], chart.values[top]
    if kind == "max":
        return Question(
            kind,
            "What is the largest value shown in the chart?",
            top_value,
            f"The tallest bar is '{top_label}' with value {top_value}, so the answer is "
            f"{top_value}.",
            bars=(top_label,),
        )
    if kind == "argmax":
        options = list(chart.labels)
        rng.shuffle(options)
        number = options.index(top_label) + 1
        return Question(
            kind,
            "Which bar is the tallest? Answer with the option number: "
            + _options_text(tuple(options)),
            number,
            f"The tallest bar is '{top_label}' (value {top_value}), which is option {number}, "
            f"so the answer is {number}.",
            options=tuple(options),
            bars=(top_label,),
        )
    if kind == "diff":
        a, b = rng.sample(chart.labels, 2)
        va, vb = chart.value_of(a), chart.value_of(b)
        if va < vb:
            a, b, va, vb = b, a, vb, va
        d = va - vb
        return Question(
            kind,
            f"How much larger is the value of '{a}' than the value of '{b}'?",
            d,
            f"'{a}' has value {va} and '{b}' has value {vb}: {va} - {vb} = {d}, so the answer "
            f"is {d}.",
            bars=(a, b),
        )
    raise ValueError(f"unknown bar-chart question type {kind!r}")


def render_chart(
    chart: Chart, *, size: int, title: str, colour: str, show_values: bool
) -> Image.Image:
    """Draw ``chart`` as a ``size`` x ``size`` RGB image (Agg canvas, no pyplot state)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    dpi = 100
    fig = Figure(figsize=(size / dpi, size / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    fs = max(6.0, size / 30)
    crowded = len(chart.labels) >= 5  # slant the labels so long ones do not run together
    bottom = 0.19 if crowded else 0.13
    ax = fig.add_axes((0.14, bottom, 0.82, 0.89 - bottom))
    xs = list(range(len(chart.labels)))
    ax.bar(xs, chart.values, color=colour, width=0.65, zorder=2)
    ax.set_xticks(xs, chart.labels, fontsize=fs * 0.9)
    if crowded:
        for tick in ax.get_xticklabels():
            tick.set_rotation(35)
            tick.set_horizontalalignment("right")
            tick.set_rotation_mode("anchor")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="y", labelsize=fs * 0.9)
    top = max(chart.values)
    ax.set_ylim(0, top * 1.18 + 1)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if show_values:
        for x, v in zip(xs, chart.values, strict=True):
            ax.text(x, v + top * 0.02, str(v), ha="center", va="bottom", fontsize=fs)
    ax.set_title(title, fontsize=fs * 1.1)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = Image.fromarray(rgba[..., :3].copy(), mode="RGB")
    if img.size != (size, size):  # float inches * dpi can round a pixel off
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    return img


def _task_id(ref: str, question: str, answer: int) -> str:
    digest = hashlib.sha256(f"bar_chart|{ref}|{question}|{answer}".encode()).hexdigest()
    return f"chart-{digest[:16]}"


def _draw_charts(cfg: BarChartTaskConfig, needed: int) -> list[Chart]:
    rng = random.Random(f"bar_chart:{cfg.seed}")
    seen: set[tuple] = set()
    charts: list[Chart] = []
    for _ in range(50 * needed + 1000):
        if len(charts) == needed:
            break
        chart = _draw_chart(rng, cfg)
        if chart.key in seen:
            continue
        seen.add(chart.key)
        charts.append(chart)
    if len(charts) < needed:
        raise ValueError(
            f"bar_chart generator: need {needed} distinct charts (n_train={cfg.n_train} + "
            f"n_heldout={cfg.n_heldout}) but bars {cfg.min_bars}-{cfg.max_bars} with values "
            f"{cfg.min_value}..{cfg.max_value} gave only about {len(charts)}; widen the ranges"
        )
    return charts


def generate_bar_chart_tasks(
    cfg: BarChartTaskConfig | Mapping[str, Any] | None = None,
    *,
    store: ImageStore | None = None,
) -> tuple[list[Task], list[Task]]:
    """Generate ``(train, heldout)`` bar-chart tasks; the charts go into the image store.

    Deterministic in ``cfg`` (same config, same images, digests and ids). ``store`` overrides
    ``cfg.image_dir``.
    """
    if cfg is None:
        cfg = BarChartTaskConfig()
    elif not isinstance(cfg, BarChartTaskConfig):
        cfg = BarChartTaskConfig.model_validate(dict(cfg))
    store = store or image_store_for(cfg.image_dir)
    needed = cfg.n_heldout + cfg.n_train
    charts = _draw_charts(cfg, needed)

    def make(index: int, split: Literal["train", "heldout"]) -> Task:
        chart = charts[index]
        # Everything past the chart's identity comes from a per-chart stream.
        rng = random.Random(f"bar_chart:{cfg.seed}:{index}")
        q = make_question(chart, rng.choice(cfg.question_types), rng)
        title = rng.choice(_TITLES)
        colour = rng.choice(_COLOURS)
        image = render_chart(
            chart, size=cfg.image_size, title=title, colour=colour, show_values=cfg.show_values
        )
        ref = store.put(image)
        privileged = f"{chart.table()}\nSolution: {q.solution}\n#### {q.answer}"
        return Task(
            id=_task_id(ref, q.text, q.answer),
            prompt=[ChatMessage(role="user", content=f"{INSTRUCTION}\n\n{q.text}\n{FINAL_LINE}")],
            answer=str(q.answer),
            privileged_context=privileged,
            verifier=VERIFIER_NAME,
            images=[ref],
            split=split,
            source=(
                f"generator:bar_chart:v{GENERATOR_VERSION} seed={cfg.seed} index={index} "
                f"image_size={cfg.image_size}"
            ),
            metadata={
                "domain": DOMAIN,
                "question": q.text,
                "question_type": q.kind,
                "labels": list(chart.labels),
                "values": list(chart.values),
                "bars": list(q.bars),
                "options": list(q.options),
                "title": title,
                "image_size": cfg.image_size,
                "show_values": cfg.show_values,
                "generator_version": GENERATOR_VERSION,
            },
        )

    heldout = [make(i, "heldout") for i in range(cfg.n_heldout)]
    train = [make(i, "train") for i in range(cfg.n_heldout, needed)]
    return train, heldout


__all__ = [
    "BarChartTaskConfig",
    "Chart",
    "generate_bar_chart_tasks",
    "make_question",
    "render_chart",
]
