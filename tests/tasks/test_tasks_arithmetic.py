import ast
import operator
import re
from collections import Counter

import pytest
from pydantic import ValidationError

from rlsd.tasks import (
    TASK_CONFIGS,
    TASK_GENERATORS,
    ArithmeticTaskConfig,
    UnknownTaskGeneratorError,
    generate_arithmetic_tasks,
    generate_tasks,
)
from rlsd.verify import get_verifier

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def evaluate(expr: str) -> int:
    """Evaluate a +,-,* integer expression without eval()."""

    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise AssertionError(f"unexpected node {ast.dump(node)}")

    return ev(ast.parse(expr, mode="eval"))


CONFIGS = [
    ArithmeticTaskConfig(),
    ArithmeticTaskConfig(prompt_style="inline", seed=3),
    ArithmeticTaskConfig(difficulty=2, operations=["add", "sub", "mul"], n_train=200, seed=7),
    ArithmeticTaskConfig(num_operands=3, operations=["sub"], n_train=100, n_heldout=40),
    ArithmeticTaskConfig(
        difficulty=2, num_operands=4, allow_negative=True, operations=["sub", "mul"], n_train=150
    ),
    ArithmeticTaskConfig(few_shot=0, n_train=50, n_heldout=10),
    ArithmeticTaskConfig(few_shot=3, n_train=50, n_heldout=10),
]


@pytest.fixture(scope="module", params=range(len(CONFIGS)))
def generated(request):
    cfg = CONFIGS[request.param]
    return cfg, generate_arithmetic_tasks(cfg)


def test_counts_and_splits(generated):
    cfg, (train, heldout) = generated
    assert len(train) == cfg.n_train and len(heldout) == cfg.n_heldout
    assert {t.split for t in train} <= {"train"} and {t.split for t in heldout} <= {"heldout"}
    assert all(t.verifier == "math-answer" for t in train + heldout)
    assert all(t.source.startswith("generator:arithmetic:v1 seed=") for t in train + heldout)


def test_deterministic(generated):
    cfg, tasks = generated
    assert generate_arithmetic_tasks(cfg) == tasks
    assert generate_arithmetic_tasks(cfg.model_dump()) == tasks  # a plain mapping works too


def test_no_duplicates_and_disjoint(generated):
    _, (train, heldout) = generated
    for split in (train, heldout):
        assert len({t.id for t in split}) == len(split)
        assert len({t.metadata["question"] for t in split}) == len(split)
        keys = [_problem_key(t) for t in split]
        assert len(set(keys)) == len(keys)
    assert not {t.id for t in train} & {t.id for t in heldout}
    assert not {t.metadata["question"] for t in train} & {t.metadata["question"] for t in heldout}
    assert not {_problem_key(t) for t in train} & {_problem_key(t) for t in heldout}


def _problem_key(task):
    """Content with the cosmetic names/objects masked out (what the generator dedupes on)."""
    m = task.metadata
    masked = re.sub(r"\b[A-Z][a-z]+\b", "N", m["question"])
    masked = re.sub(r"(\d+) [a-z]+s?\. ", r"\1 OBJ. ", masked)
    masked = re.sub(r"How many [a-z]+ ", "How many OBJ ", masked)
    return m["scenario"], m["expression"], masked


def test_few_shot_examples_are_not_tasks(generated):
    cfg, (train, heldout) = generated
    questions = {t.metadata["question"] for t in train + heldout}
    for t in train + heldout:
        if cfg.prompt_style == "chat":
            assert len(t.prompt) == 2 * cfg.few_shot + 1
            assert [m.role for m in t.prompt[-1:]] == ["user"]
        shown = "\n".join(m.content for m in t.prompt)
        others = [q for q in questions if q in shown and q != t.metadata["question"]]
        assert not others, "a task's question appears as another task's worked example"


def test_prompts_never_contain_privileged_context(generated):
    _, (train, heldout) = generated
    for t in train + heldout:
        assert t.privileged_context
        for m in t.prompt:
            assert t.privileged_context not in m.content
        assert t.metadata["question"] in t.prompt[-1].content
        assert t.prompt[-1].content.rstrip().endswith("End your reply with '#### <number>'.")


def test_answers_are_correct(generated):
    cfg, (train, heldout) = generated
    for t in train + heldout:
        expr = t.metadata["expression"]
        assert int(t.answer) == evaluate(expr)
        assert t.privileged_context.endswith(f"\n#### {t.answer}")
        operands = t.metadata["operands"]
        assert len(operands) == cfg.num_operands
        lo = 1 if cfg.difficulty == 1 else 10 ** (cfg.difficulty - 1)
        assert all(lo <= x < 10**cfg.difficulty for x in operands)
        assert set(t.metadata["operations"]) <= set(cfg.operations)
        # Every step of the worked solution is right.
        for a, op, b, r in re.findall(r"(-?\d+) ([-+*]) (\d+) = (-?\d+)", t.privileged_context):
            assert evaluate(f"{a} {op} {b}") == int(r)


def test_no_negatives_unless_allowed(generated):
    cfg, (train, heldout) = generated
    for t in train + heldout:
        steps = re.findall(r"= (-?\d+)", t.privileged_context)
        if not cfg.allow_negative:
            assert all(int(v) >= 0 for v in steps)
        elif any(int(v) < 0 for v in steps):
            assert t.metadata["scenario"] == "score"  # no negative apples


def test_worked_solution_passes_the_verifier(generated):
    _, (train, heldout) = generated
    tasks = train + heldout
    results = get_verifier("math-answer").verify([t.privileged_context for t in tasks], tasks)
    assert all(r.passed for r in results)


def test_seed_changes_tasks_and_ids_are_content_hashes():
    a_train, a_held = generate_arithmetic_tasks(ArithmeticTaskConfig(seed=0))
    b_train, b_held = generate_arithmetic_tasks(ArithmeticTaskConfig(seed=1))
    assert [t.id for t in a_held] != [t.id for t in b_held]
    # Same question text => same id, whatever config produced it.
    by_q = {t.metadata["question"]: t.id for t in a_train + a_held}
    for t in b_train + b_held:
        if t.metadata["question"] in by_q:
            assert by_q[t.metadata["question"]] == t.id
    assert all(re.fullmatch(r"arith-[0-9a-f]{16}", t.id) for t in a_train)


def test_heldout_does_not_depend_on_n_train():
    _, h1 = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=10))
    _, h2 = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=300))
    assert h1 == h2


def test_example_from_the_brief_format():
    train, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=64, n_heldout=0))
    t = next(t for t in train if t.metadata["operations"] == ["add"])
    assert re.fullmatch(
        r"\w+ starts with .* and .*: \d+ \+ \d+ = \d+\.\n#### \d+", t.privileged_context
    )


def test_too_many_requested_raises_clear_error():
    # 1-digit add/sub with two operands has a few hundred distinct problems.
    with pytest.raises(ValueError, match=r"need \d+ distinct problems.*allows only \d+"):
        generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=5000))
    with pytest.raises(ValueError, match="distinct problems"):
        generate_arithmetic_tasks(ArithmeticTaskConfig(operations=["mul"], n_train=100))


def test_exact_capacity_is_reachable():
    cfg = ArithmeticTaskConfig(operations=["mul"], n_train=0, n_heldout=0, few_shot=0)
    # 81 operand pairs x 2 scenarios x 1 phrasing; 162 - 64 held-out - 4 few-shot pool = 94 left
    train, _ = generate_arithmetic_tasks(cfg.model_copy(update={"n_train": 162}))
    assert len({t.metadata["question"] for t in train}) == 162


def test_config_validation():
    with pytest.raises(ValidationError):
        ArithmeticTaskConfig(operations=["div"])
    with pytest.raises(ValidationError):
        ArithmeticTaskConfig(operations=[])
    with pytest.raises(ValidationError):
        ArithmeticTaskConfig(operations=["add", "add"])
    with pytest.raises(ValidationError):
        ArithmeticTaskConfig(difficulty=0)
    with pytest.raises(ValidationError):
        ArithmeticTaskConfig(num_operands=1)
    with pytest.raises(ValidationError):
        ArithmeticTaskConfig(n_trian=3)  # typo is an error, not silently ignored
    for name, field in ArithmeticTaskConfig.model_fields.items():
        assert field.description, name


def test_registry():
    assert TASK_GENERATORS["arithmetic"] is generate_arithmetic_tasks
    assert TASK_CONFIGS["arithmetic"] is ArithmeticTaskConfig
    train, heldout = generate_tasks("arithmetic", {"n_train": 8, "n_heldout": 4})
    assert (len(train), len(heldout)) == (8, 4)
    with pytest.raises(UnknownTaskGeneratorError, match="known generators: arithmetic"):
        generate_tasks("geometry")
    counts = Counter(t.metadata["scenario"] for t in train)
    assert set(counts) <= {"items", "score"}
