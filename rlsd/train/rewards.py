"""Rewards through the verifier interface: each task names its verifier."""

from __future__ import annotations

from collections.abc import Sequence

from rlsd.tasks.record import Task
from rlsd.verify import VerifyResult, get_verifier


def score_responses(
    texts: Sequence[str], tasks: Sequence[Task], verifier_override: str | None = None
) -> list[VerifyResult]:
    """One result per response, batching the responses that share a verifier."""
    if len(texts) != len(tasks):
        raise ValueError(f"{len(texts)} responses for {len(tasks)} tasks")
    results: list[VerifyResult | None] = [None] * len(texts)
    by_verifier: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        by_verifier.setdefault(verifier_override or task.verifier, []).append(i)
    for name, rows in by_verifier.items():
        verifier = get_verifier(name)
        out = verifier.verify([texts[i] for i in rows], [tasks[i] for i in rows])
        for i, r in zip(rows, out, strict=True):
            results[i] = r
    return results  # type: ignore[return-value]
