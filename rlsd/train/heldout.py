"""The evaluation stage: greedy held-out accuracy of one model (base, an arm, the champion) on
the snapshot's held-out tasks, with the sandboxed verifiers. Every model of a pipeline run is
evaluated on the same tasks, so the gate can pair them task by task."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from rlsd.tables import TextTable
from rlsd.tasks.record import Task
from rlsd.train.config import TrainConfig
from rlsd.train.data import eval_subset

if TYPE_CHECKING:
    from rlsd.context.snapshot import Snapshot
    from rlsd.train.arms import ArmOutcome


class HeldoutScore(BaseModel):
    score: float
    domain: str
    passed: bool


class EvalOutcome(BaseModel):
    name: str
    version: str  # what was evaluated: "base:<path>", "run:<id>", "models:/<name>/<v>"
    accuracy: float
    tasks: dict[str, HeldoutScore]
    #: per task: id, domain, passed, score, detail, response (the logged eval table)
    rows: list[dict[str, Any]] = []
    run_id: str = ""

    def per_domain(self) -> dict[str, float]:
        by: dict[str, list[float]] = {}
        for t in self.tasks.values():
            by.setdefault(t.domain, []).append(t.score)
        return {d: sum(v) / len(v) for d, v in by.items()}


def heldout_tasks(snapshot: Snapshot, domains: list[str] | None, n: int) -> list[Task]:
    tasks = eval_subset(snapshot.split("heldout", domains), n)
    if not tasks:
        raise ValueError(f"snapshot {snapshot.path} has no held-out tasks in domains {domains}")
    return tasks


def evaluate_model(
    name: str,
    model_path: str,
    version: str,
    tcfg: TrainConfig,
    snapshot: Snapshot,
    tasks: list[Task],
) -> EvalOutcome:
    """Greedy held-out accuracy of the model at ``model_path`` under the arms' settings."""
    from rlsd.models import load_policy
    from rlsd.models.config import ModelConfig
    from rlsd.train.evaluate import evaluate
    from rlsd.train.prompts import PromptEncoder

    mcfg = ModelConfig.model_validate({**tcfg.model.model_dump(), "name_or_path": model_path})
    policy = load_policy(mcfg)
    res = evaluate(
        policy.model,
        policy.tokenizer,
        tasks,
        tcfg.eval.max_new_tokens,
        tcfg.rollout.max_batch_sequences,
        tcfg.rollout.sampling.stop_regex,
        tcfg.task.verifier,
        prompts=PromptEncoder(policy, [snapshot.image_store]),
    )
    del policy
    domain_of = {t.id: t.metadata.get("domain", "") for t in tasks}
    rows = [{**r, "domain": domain_of[r["id"]]} for r in res.rows]
    return EvalOutcome(
        name=name,
        version=version,
        accuracy=res.accuracy,
        tasks={
            r["id"]: HeldoutScore(
                score=float(r["score"]), domain=r["domain"] or "default", passed=bool(r["passed"])
            )
            for r in rows
        },
        rows=rows,
    )


def comparison_table(evals: list[EvalOutcome], arms: list[ArmOutcome]) -> TextTable:
    by_arm = {a.arm: a for a in arms}
    rows = []
    for e in evals:
        a = by_arm.get(e.name)
        s = a.summary if a else None
        rows.append([
            e.name, f"{100 * e.accuracy:.1f} %", len(e.tasks),
            f"{s.train_reward_first:.2f} → {s.train_reward_last:.2f}" if s else "—",
            f"{s.seconds_per_step:.1f}" if s else "—", e.version,
        ])  # fmt: skip
    headers = ["model", "accuracy", "tasks", "train reward", "s/step", "version"]
    return TextTable(headers, rows, "Held-out comparison", frozenset({"model", "version"}))
