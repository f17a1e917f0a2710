"""Deterministic arithmetic word problems with worked solutions as privileged context.

Each problem is a short story ("Maria has 7 apples. She buys 3 more. ...") evaluated step by
step, left to right. The student sees a chat prompt with worked examples and the question;
the self-teacher additionally sees the worked solution of *this* problem.

Prompt calibration (SmolLM2-135M-Instruct, greedy, 64 held-out add/sub problems):
``prompt_style="chat"`` (examples as earlier user/assistant turns, the default) gives 44-50 %
at difficulty 1 over seeds 0-2 and 17 % at difficulty 2, with ~23-token replies that end in
"#### n" and stop; ``"inline"`` (one user message) gives 33 % / 11 % and rambles to the token
limit; zero-shot gives 34 %, mostly through the verifier's last-number fallback.

Problem identity ("content") is the tuple (scenario, phrasing of every step, operations,
operands). Names and objects are cosmetic: two stories that differ only in "Maria/apples" vs
"Tom/pens" are the *same* problem. Train, held-out and the few-shot pool are disjoint by that
content key, and no key repeats inside a split.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlsd.tasks.record import ChatMessage, Task

GENERATOR_VERSION = 1
VERIFIER_NAME = "math-answer"

Operation = Literal["add", "sub", "mul"]

_SYMBOL = {"add": "+", "sub": "-", "mul": "*"}

# Above this many raw (operands x operations) combinations the generator samples instead of
# enumerating every problem.
_ENUMERATE_LIMIT = 200_000

# Cosmetic material. (name, subject pronoun, object pronoun).
_PEOPLE: tuple[tuple[str, str, str], ...] = (
    ("Maria", "she", "her"),
    ("Tom", "he", "him"),
    ("Aisha", "she", "her"),
    ("Lucas", "he", "him"),
    ("Mei", "she", "her"),
    ("Omar", "he", "him"),
    ("Sofia", "she", "her"),
    ("Ben", "he", "him"),
    ("Priya", "she", "her"),
    ("Diego", "he", "him"),
    ("Emma", "she", "her"),
    ("Kofi", "he", "him"),
)
# (singular, plural)
_OBJECTS: tuple[tuple[str, str], ...] = (
    ("apple", "apples"),
    ("pencil", "pencils"),
    ("sticker", "stickers"),
    ("marble", "marbles"),
    ("book", "books"),
    ("cookie", "cookies"),
    ("coin", "coins"),
    ("shell", "shells"),
    ("card", "cards"),
    ("stamp", "stamps"),
)

# Step phrasings per scenario and operation: verb phrases in the third person, formatted with
# {b} (the operand) and {friend}. The question sentence is "<Pronoun> <phrase>." and the
# worked-solution step is "... <pronoun> <phrase>: <lhs> <op> <b> = <result>."
_ITEMS_STEPS: dict[str, tuple[str, ...]] = {
    "add": ("buys {b} more", "finds {b} more", "gets {b} more from {friend}"),
    "sub": ("gives {b} to {friend}", "loses {b}", "sells {b}"),
    "mul": ("ends up with {b} times as many",),
}
_SCORE_STEPS: dict[str, tuple[str, ...]] = {
    "add": ("wins {b} points", "earns {b} points"),
    "sub": ("loses {b} points", "gets a penalty of {b} points"),
    "mul": ("gets the score multiplied by {b}",),
}
_SCENARIOS: dict[str, dict[str, tuple[str, ...]]] = {"items": _ITEMS_STEPS, "score": _SCORE_STEPS}

INSTRUCTION = (
    "Solve the math word problem. Give the final answer on its own line as '#### <number>'."
)
FINAL_LINE = "End your reply with '#### <number>'."


class ArithmeticTaskConfig(BaseModel):
    """Configuration of the arithmetic word-problem generator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    difficulty: int = Field(
        default=1,
        ge=1,
        le=6,
        description="Number of digits of every operand (1 = operands 1-9, 2 = 10-99, ...).",
    )
    operations: list[Operation] = Field(
        default_factory=lambda: ["add", "sub"],
        min_length=1,
        description="Operations a step may use; each problem draws its steps from these.",
    )
    num_operands: int = Field(
        default=2, ge=2, le=6, description="Operands per problem (num_operands - 1 steps)."
    )
    allow_negative: bool = Field(
        default=False,
        description="Allow negative intermediate / final results (told as a points score).",
    )
    seed: int = Field(default=0, description="Seed; the same seed gives identical tasks.")
    n_train: int = Field(default=256, ge=0, description="Number of training tasks.")
    n_heldout: int = Field(default=64, ge=0, description="Number of held-out evaluation tasks.")
    prompt_style: Literal["chat", "inline"] = Field(
        default="chat",
        description="How worked examples are shown: 'chat' = earlier user/assistant turns "
        "(each example answered by the assistant); 'inline' = one user message holding the "
        "examples and then the question.",
    )
    few_shot: int = Field(
        default=1,
        ge=0,
        le=8,
        description="Worked examples in each student prompt (drawn from a reserved pool that "
        "is disjoint from both splits).",
    )

    @field_validator("operations")
    @classmethod
    def _unique_operations(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"operations must not repeat: {v}")
        return v


# --------------------------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class _Problem:
    scenario: str
    ops: tuple[str, ...]
    operands: tuple[int, ...]
    phrasings: tuple[int, ...]

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.scenario, self.ops, self.operands, self.phrasings)

    def values(self) -> list[int]:
        """Running values: the start, then the result after every step."""
        out = [self.operands[0]]
        for op, b in zip(self.ops, self.operands[1:], strict=True):
            out.append(_apply(op, out[-1], b))
        return out

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def expression(self) -> str:
        """Fully parenthesised left-to-right expression, e.g. '((7 + 3) - 2)'."""
        expr = str(self.operands[0])
        for op, b in zip(self.ops, self.operands[1:], strict=True):
            expr = f"({expr} {_SYMBOL[op]} {b})"
        return expr


@dataclass(frozen=True)
class _Rendered:
    question: str
    solution: str


def _apply(op: str, a: int, b: int) -> int:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    return a * b


def _operand_range(difficulty: int) -> tuple[int, int]:
    lo = 1 if difficulty == 1 else 10 ** (difficulty - 1)
    return lo, 10**difficulty - 1


def _scenario_ok(scenario: str, values: list[int], allow_negative: bool) -> bool:
    if min(values) >= 0:
        return True
    # A negative count of apples makes no sense: negatives are only told as a points score.
    return allow_negative and scenario == "score"


def _variants(ops: tuple[str, ...], values: list[int], allow_negative: bool) -> list[tuple]:
    """All (scenario, phrasings) a valid expression can be told with."""
    out: list[tuple] = []
    for scenario, steps in _SCENARIOS.items():
        if not _scenario_ok(scenario, values, allow_negative):
            continue
        for phrasings in itertools.product(*(range(len(steps[op])) for op in ops)):
            out.append((scenario, tuple(phrasings)))
    return out


def _enumerate(cfg: ArithmeticTaskConfig) -> list[_Problem]:
    lo, hi = _operand_range(cfg.difficulty)
    problems: list[_Problem] = []
    for ops in itertools.product(cfg.operations, repeat=cfg.num_operands - 1):
        for operands in itertools.product(range(lo, hi + 1), repeat=cfg.num_operands):
            values = [operands[0]]
            for op, b in zip(ops, operands[1:], strict=True):
                values.append(_apply(op, values[-1], b))
            for scenario, phrasings in _variants(ops, values, cfg.allow_negative):
                problems.append(_Problem(scenario, ops, operands, phrasings))
    return problems


def _sample_one(rng: random.Random, cfg: ArithmeticTaskConfig) -> _Problem | None:
    lo, hi = _operand_range(cfg.difficulty)
    ops = tuple(rng.choice(cfg.operations) for _ in range(cfg.num_operands - 1))
    operands = [rng.randint(lo, hi)]
    cur = operands[0]
    for op in ops:
        if op == "sub" and not cfg.allow_negative:
            if cur < lo:
                return None
            b = rng.randint(lo, min(hi, cur))
        else:
            b = rng.randint(lo, hi)
        operands.append(b)
        cur = _apply(op, cur, b)
    problem = _Problem("items", ops, tuple(operands), ())
    variants = _variants(ops, problem.values(), cfg.allow_negative)
    if not variants:
        return None
    scenario, phrasings = rng.choice(variants)
    return _Problem(scenario, ops, tuple(operands), phrasings)


def _raw_space(cfg: ArithmeticTaskConfig) -> int:
    lo, hi = _operand_range(cfg.difficulty)
    return (hi - lo + 1) ** cfg.num_operands * len(cfg.operations) ** (cfg.num_operands - 1)


def _capacity_error(cfg: ArithmeticTaskConfig, needed: int, available: int | str) -> ValueError:
    return ValueError(
        f"arithmetic generator: need {needed} distinct problems (n_train={cfg.n_train} + "
        f"n_heldout={cfg.n_heldout} + few-shot pool={_pool_size(cfg)}) but "
        f"difficulty={cfg.difficulty}, operations={list(cfg.operations)}, "
        f"num_operands={cfg.num_operands}, allow_negative={cfg.allow_negative} allows only "
        f"{available}; lower n_train/n_heldout or raise difficulty/num_operands/operations"
    )


def _pool_size(cfg: ArithmeticTaskConfig) -> int:
    """Reserved few-shot problems: a few per shot so prompts vary between tasks."""
    return 0 if cfg.few_shot == 0 else 4 * cfg.few_shot


def _draw_problems(cfg: ArithmeticTaskConfig, needed: int) -> list[_Problem]:
    """`needed` distinct problems (by content key), in a seed-determined order."""
    rng = random.Random(cfg.seed)
    if _raw_space(cfg) <= _ENUMERATE_LIMIT:
        problems = _enumerate(cfg)
        if len(problems) < needed:
            raise _capacity_error(cfg, needed, len(problems))
        rng.shuffle(problems)
        return problems[:needed]
    seen: set[tuple] = set()
    problems = []
    max_attempts = 100 * needed + 100_000
    for _ in range(max_attempts):
        if len(problems) == needed:
            break
        p = _sample_one(rng, cfg)
        if p is None or p.key in seen:
            continue
        seen.add(p.key)
        problems.append(p)
    if len(problems) < needed:
        raise _capacity_error(cfg, needed, f"about {len(problems)} (sampling stalled)")
    return problems


# --------------------------------------------------------------------------------------------
# Rendering


def _count(n: int, singular: str, plural: str) -> str:
    return f"{n} {singular if n == 1 else plural}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _render(problem: _Problem, rng: random.Random) -> _Rendered:
    """Question and worked solution; names and objects are drawn from `rng` (cosmetic)."""
    people = rng.sample(_PEOPLE, 2)
    (name, subj, _obj_pron), (friend, _, _) = people
    singular, plural = rng.choice(_OBJECTS)
    steps = _SCENARIOS[problem.scenario]
    values = problem.values()
    a = problem.operands[0]

    if problem.scenario == "items":
        opening = f"{name} has {_count(a, singular, plural)}."
        start = f"{name} starts with {_count(a, singular, plural)}"
        question_end = f"How many {plural} does {name} have now?"
    else:
        opening = f"{name} has a score of {_count(a, 'point', 'points')}."
        start = f"{name} starts with a score of {_count(a, 'point', 'points')}"
        question_end = f"What is {name}'s score now?"

    sentences = [opening]
    worked: list[str] = []
    for i, (op, b, k) in enumerate(
        zip(problem.ops, problem.operands[1:], problem.phrasings, strict=True)
    ):
        phrase = steps[op][k].format(b=b, friend=friend)
        sentences.append(f"{_cap(subj)} {phrase}.")
        arithmetic = f"{values[i]} {_SYMBOL[op]} {b} = {values[i + 1]}"
        if i == 0:
            worked.append(f"{start} and {phrase}: {arithmetic}.")
        else:
            worked.append(f"Then {subj} {phrase}: {arithmetic}.")
    sentences.append(question_end)
    solution = " ".join(worked) + f"\n#### {problem.answer}"
    return _Rendered(question=" ".join(sentences), solution=solution)


def _user_turn(question: str) -> str:
    return f"{INSTRUCTION}\n\n{question}\n{FINAL_LINE}"


def _student_prompt(
    question: str, shots: list[_Rendered], style: Literal["chat", "inline"]
) -> list[ChatMessage]:
    """The chat messages the student sees: worked examples, then the question."""
    if style == "chat":
        messages: list[ChatMessage] = []
        for shot in shots:
            messages.append(ChatMessage(role="user", content=_user_turn(shot.question)))
            messages.append(ChatMessage(role="assistant", content=shot.solution))
        messages.append(ChatMessage(role="user", content=_user_turn(question)))
        return messages
    parts = [INSTRUCTION, ""]
    for shot in shots:
        parts += [f"Example question: {shot.question}", f"Example answer: {shot.solution}", ""]
    parts += ["Now solve this problem.", f"Question: {question}", FINAL_LINE]
    return [ChatMessage(role="user", content="\n".join(parts))]


def _task_id(question: str, answer: int) -> str:
    digest = hashlib.sha256(f"arithmetic|{question}|{answer}".encode()).hexdigest()
    return f"arith-{digest[:16]}"


def generate_arithmetic_tasks(
    cfg: ArithmeticTaskConfig | Mapping[str, Any] | None = None,
) -> tuple[list[Task], list[Task]]:
    """Generate ``(train, heldout)`` arithmetic word-problem tasks.

    Deterministic in ``cfg`` (same config, same tasks and ids). Train, held-out and the
    few-shot pool are disjoint by problem content; raises ``ValueError`` when the difficulty
    does not allow as many distinct problems as requested.
    """
    if cfg is None:
        cfg = ArithmeticTaskConfig()
    elif not isinstance(cfg, ArithmeticTaskConfig):
        cfg = ArithmeticTaskConfig.model_validate(dict(cfg))

    pool_n = _pool_size(cfg)
    needed = pool_n + cfg.n_heldout + cfg.n_train
    problems = _draw_problems(cfg, needed)

    # Cosmetics come from their own stream so they never change which problems are drawn.
    cosmetic = random.Random(f"arithmetic-cosmetics:{cfg.seed}")
    rendered = [_render(p, cosmetic) for p in problems]

    pool = rendered[:pool_n]
    source = (
        f"generator:arithmetic:v{GENERATOR_VERSION} seed={cfg.seed} "
        f"difficulty={cfg.difficulty} operations={','.join(cfg.operations)} "
        f"num_operands={cfg.num_operands} allow_negative={cfg.allow_negative}"
    )

    def make(index: int, split: Literal["train", "heldout"]) -> Task:
        problem, text = problems[index], rendered[index]
        shots: list[_Rendered] = []
        if pool:
            start = int(hashlib.sha256(text.question.encode()).hexdigest()[:8], 16)
            shots = [pool[(start + j) % len(pool)] for j in range(cfg.few_shot)]
        return Task(
            id=_task_id(text.question, problem.answer),
            prompt=_student_prompt(text.question, shots, cfg.prompt_style),
            answer=str(problem.answer),
            privileged_context=text.solution,
            verifier=VERIFIER_NAME,
            split=split,
            source=source,
            metadata={
                "question": text.question,
                "expression": problem.expression(),
                "operands": list(problem.operands),
                "operations": list(problem.ops),
                "scenario": problem.scenario,
                "difficulty": cfg.difficulty,
                "few_shot": cfg.few_shot,
                "prompt_style": cfg.prompt_style,
                "generator_version": GENERATOR_VERSION,
            },
        )

    heldout = [make(i, "heldout") for i in range(pool_n, pool_n + cfg.n_heldout)]
    train = [make(i, "train") for i in range(pool_n + cfg.n_heldout, needed)]
    return train, heldout
