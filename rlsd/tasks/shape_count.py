"""Counting questions over images of simple shapes; the privileged context is the object list.

Each task is one image (PIL, drawn at 4x and downsampled for smooth edges) holding N
non-overlapping shapes -- circles, squares, triangles in a few named colours -- and one question:

* ``total``       -- "How many shapes are in the image?"
* ``kind``        -- "How many triangles are in the image?"
* ``colour``      -- "How many red shapes are in the image?"
* ``colour_kind`` -- "How many red circles are in the image?"

The answer may be 0 (a kind or colour that is absent); most questions name an attribute of an
object in the image. Placement is rejection sampling on integer centres with a clearance
between the shapes' bounding circles, all drawn from seeded streams, so a seed gives the same
pixels and the same digests.

The student prompt is one user message: the question and the instruction to end with
``#### <number>`` (the arithmetic generator's answer format, which ``math-answer`` extracts
first). It holds no image placeholder token: the image is referenced by ``Task.images`` (a
content digest in the :class:`~rlsd.tasks.images.ImageStore` named by ``image_dir``), and the
trainer attaches it to that user message as ``{"type": "image"}`` content, where the model's
processor inserts its own image tokens. The self-teacher additionally sees the object list
(kind, colour, centre) and the count.

Scene identity ("content") is the full object list (kinds, colours, centres, sizes); every task
has its own scene and no scene repeats, so train and held-out are disjoint by content. Held-out
scenes are drawn first, so changing ``n_train`` does not change the held-out set.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlsd.tasks.images import ImageStore, image_store_for
from rlsd.tasks.record import ChatMessage, Task

GENERATOR_VERSION = 1
VERIFIER_NAME = "math-answer"
DOMAIN = "counting"

Kind = Literal["circle", "square", "triangle"]
Colour = Literal["red", "green", "blue", "yellow", "purple", "orange"]
QuestionType = Literal["total", "kind", "colour", "colour_kind"]

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (215, 38, 38),
    "green": (34, 150, 60),
    "blue": (38, 80, 215),
    "yellow": (235, 195, 20),
    "purple": (135, 55, 180),
    "orange": (245, 125, 15),
}
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}

#: Every shape fits in a circle of this many radii around its centre (a square's corners).
BOUND = 1.2
_SUPERSAMPLE = 4

INSTRUCTION = (
    "Look at the image and answer the question. "
    "Give the final answer on its own line as '#### <number>'."
)
FINAL_LINE = "End your reply with '#### <number>'."


class ShapeCountTaskConfig(BaseModel):
    """Configuration of the shape-counting generator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=0, description="Seed; the same seed gives identical tasks.")
    n_train: int = Field(default=256, ge=0, description="Number of training tasks.")
    n_heldout: int = Field(default=64, ge=0, description="Number of held-out tasks.")
    image_size: int = Field(default=224, ge=64, le=1024, description="Width = height, pixels.")
    min_shapes: int = Field(default=1, ge=1, le=30)
    max_shapes: int = Field(default=8, ge=1, le=30)
    kinds: list[Kind] = Field(
        default_factory=lambda: ["circle", "square", "triangle"], min_length=1
    )
    colours: list[Colour] = Field(
        default_factory=lambda: ["red", "green", "blue", "yellow"], min_length=1
    )
    question_types: list[QuestionType] = Field(
        default_factory=lambda: ["total", "kind", "colour", "colour_kind"],
        min_length=1,
        description="Question kinds a scene may be asked (one drawn per scene).",
    )
    min_radius: float = Field(
        default=0.045, gt=0, le=0.25, description="Smallest shape radius, as image fraction."
    )
    max_radius: float = Field(
        default=0.085, gt=0, le=0.25, description="Largest shape radius, as image fraction."
    )
    image_dir: Path | None = Field(
        default=None,
        description="ImageStore root for the images; None = $RLSD_CACHE_DIR/images.",
    )

    @field_validator("kinds", "colours", "question_types")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"values must not repeat: {v}")
        return v

    @model_validator(mode="after")
    def _feasible(self) -> ShapeCountTaskConfig:
        if self.min_shapes > self.max_shapes:
            raise ValueError(f"min_shapes={self.min_shapes} > max_shapes={self.max_shapes}")
        if self.min_radius > self.max_radius:
            raise ValueError(f"min_radius={self.min_radius} > max_radius={self.max_radius}")
        # Random placement jams well before the shapes' bounding discs cover the image.
        covered = self.max_shapes * math.pi * (BOUND * self.max_radius) ** 2
        if covered > 0.45:
            raise ValueError(
                f"{self.max_shapes} shapes of radius up to {self.max_radius} of the image cover "
                f"{covered:.0%} of it; lower max_shapes or max_radius (at most 45%)"
            )
        return self


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    x: int
    y: int
    r: int

    def describe(self) -> str:
        return f"{self.colour} {self.kind} at ({self.x}, {self.y})"

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "colour": self.colour, "x": self.x, "y": self.y, "r": self.r}


@dataclass(frozen=True)
class Question:
    kind: str
    text: str
    answer: int
    solution: str
    target_kind: str | None
    target_colour: str | None


def _place(rng: random.Random, cfg: ShapeCountTaskConfig) -> tuple[Shape, ...]:
    size = cfg.image_size
    r_lo = max(3, round(cfg.min_radius * size))
    r_hi = max(r_lo, round(cfg.max_radius * size))
    gap = max(2, size // 64)
    for _ in range(50):  # restart a jammed scene from scratch
        n = rng.randint(cfg.min_shapes, cfg.max_shapes)
        shapes: list[Shape] = []
        for _ in range(n):
            for _ in range(300):
                r = rng.randint(r_lo, r_hi)
                b = math.ceil(BOUND * r)
                x = rng.randint(b + 1, size - b - 2)
                y = rng.randint(b + 1, size - b - 2)
                if all(
                    math.hypot(x - s.x, y - s.y) >= b + math.ceil(BOUND * s.r) + gap for s in shapes
                ):
                    shapes.append(Shape(rng.choice(cfg.kinds), rng.choice(cfg.colours), x, y, r))
                    break
            else:
                break
        if len(shapes) == n:
            return tuple(shapes)
    raise ValueError(
        f"shape_count generator: could not place {cfg.max_shapes} non-overlapping shapes in "
        f"{size}x{size}; lower max_shapes or max_radius"
    )


def render_scene(shapes: tuple[Shape, ...], size: int) -> Image.Image:
    """Draw ``shapes`` on a white ``size`` x ``size`` RGB image."""
    k = _SUPERSAMPLE
    img = Image.new("RGB", (size * k, size * k), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for s in shapes:
        x, y, r, fill = s.x * k, s.y * k, s.r * k, PALETTE[s.colour]
        if s.kind == "circle":
            draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
        elif s.kind == "square":
            h = 0.84 * r  # corners at 1.19 r: inside BOUND
            draw.rectangle((x - h, y - h, x + h, y + h), fill=fill)
        else:  # equilateral, pointing up, vertices on the radius-r circle (a bit lower, centred)
            cy = y + 0.15 * r
            pts = [
                (x + r * 1.1 * math.cos(a), cy - r * 1.1 * math.sin(a))
                for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)
            ]
            draw.polygon(pts, fill=fill)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def count_matching(
    shapes: tuple[Shape, ...] | list[dict[str, Any]], kind: str | None, colour: str | None
) -> int:
    """How many objects have ``kind`` and ``colour`` (None: any)."""
    n = 0
    for s in shapes:
        k, c = (s["kind"], s["colour"]) if isinstance(s, dict) else (s.kind, s.colour)
        n += (kind is None or k == kind) and (colour is None or c == colour)
    return n


def _numbers(idx: list[int]) -> str:
    words = [str(i) for i in idx]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def make_question(
    shapes: tuple[Shape, ...], qtype: str, rng: random.Random, cfg: ShapeCountTaskConfig
) -> Question:
    """One counting question of ``qtype`` about ``shapes``, with its answer and a worked count."""
    # Mostly ask about an attribute of an object in the image; sometimes about any, so 0 occurs.
    anchor = rng.choice(shapes) if rng.random() < 0.8 else None
    kind = colour = None
    if qtype in ("kind", "colour_kind"):
        kind = anchor.kind if anchor else rng.choice(cfg.kinds)
    if qtype in ("colour", "colour_kind"):
        colour = anchor.colour if anchor else rng.choice(cfg.colours)
    if qtype == "total":
        text, what = "How many shapes are in the image?", "shapes"
    elif qtype == "kind":
        text, what = f"How many {PLURAL[kind]} are in the image?", PLURAL[kind]
    elif qtype == "colour":
        text, what = f"How many {colour} shapes are in the image?", f"{colour} shapes"
    elif qtype == "colour_kind":
        what = f"{colour} {PLURAL[kind]}"
        text = f"How many {what} are in the image?"
    else:
        raise ValueError(f"unknown shape-count question type {qtype!r}")
    idx = [
        i
        for i, s in enumerate(shapes, start=1)
        if (kind is None or s.kind == kind) and (colour is None or s.colour == colour)
    ]
    n = len(idx)
    if qtype == "total":
        solution = f"The list has {n} objects, so the answer is {n}."
    elif n == 0:
        solution = f"No object in the list is one of the {what}, so the answer is 0."
    else:
        solution = (
            f"The {what} are object{'s' if n > 1 else ''} {_numbers(idx)}, so the answer is {n}."
        )
    return Question(qtype, text, n, solution, kind, colour)


def _draw_scenes(cfg: ShapeCountTaskConfig, needed: int) -> list[tuple[Shape, ...]]:
    rng = random.Random(f"shape_count:{cfg.seed}")
    seen: set[tuple[Shape, ...]] = set()
    scenes: list[tuple[Shape, ...]] = []
    for _ in range(20 * needed + 100):
        if len(scenes) == needed:
            break
        scene = _place(rng, cfg)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
    if len(scenes) < needed:
        raise ValueError(
            f"shape_count generator: need {needed} distinct scenes but found {len(scenes)}"
        )
    return scenes


def _task_id(ref: str, question: str, answer: int) -> str:
    digest = hashlib.sha256(f"shape_count|{ref}|{question}|{answer}".encode()).hexdigest()
    return f"shapes-{digest[:16]}"


def generate_shape_count_tasks(
    cfg: ShapeCountTaskConfig | Mapping[str, Any] | None = None,
    *,
    store: ImageStore | None = None,
) -> tuple[list[Task], list[Task]]:
    """Generate ``(train, heldout)`` counting tasks; the images go into the image store.

    Deterministic in ``cfg`` (same config, same images, digests and ids). ``store`` overrides
    ``cfg.image_dir``.
    """
    if cfg is None:
        cfg = ShapeCountTaskConfig()
    elif not isinstance(cfg, ShapeCountTaskConfig):
        cfg = ShapeCountTaskConfig.model_validate(dict(cfg))
    store = store or image_store_for(cfg.image_dir)
    needed = cfg.n_heldout + cfg.n_train
    scenes = _draw_scenes(cfg, needed)

    def make(index: int, split: Literal["train", "heldout"]) -> Task:
        shapes = scenes[index]
        rng = random.Random(f"shape_count:{cfg.seed}:{index}")
        q = make_question(shapes, rng.choice(cfg.question_types), rng, cfg)
        ref = store.put(render_scene(shapes, cfg.image_size))
        listing = "\n".join(f"{i}. {s.describe()}" for i, s in enumerate(shapes, start=1))
        privileged = (
            "Objects (kind, colour, centre x, y in pixels from the top-left):\n"
            f"{listing}\nCount: {q.solution}\n#### {q.answer}"
        )
        return Task(
            id=_task_id(ref, q.text, q.answer),
            prompt=[ChatMessage(role="user", content=f"{INSTRUCTION}\n\n{q.text}\n{FINAL_LINE}")],
            answer=str(q.answer),
            privileged_context=privileged,
            verifier=VERIFIER_NAME,
            images=[ref],
            split=split,
            source=(
                f"generator:shape_count:v{GENERATOR_VERSION} seed={cfg.seed} index={index} "
                f"image_size={cfg.image_size}"
            ),
            metadata={
                "domain": DOMAIN,
                "question": q.text,
                "question_type": q.kind,
                "target_kind": q.target_kind,
                "target_colour": q.target_colour,
                "objects": [s.as_dict() for s in shapes],
                "n_objects": len(shapes),
                "image_size": cfg.image_size,
                "generator_version": GENERATOR_VERSION,
            },
        )

    heldout = [make(i, "heldout") for i in range(cfg.n_heldout)]
    train = [make(i, "train") for i in range(cfg.n_heldout, needed)]
    return train, heldout


__all__ = [
    "PALETTE",
    "Shape",
    "ShapeCountTaskConfig",
    "count_matching",
    "generate_shape_count_tasks",
    "make_question",
    "render_scene",
]
