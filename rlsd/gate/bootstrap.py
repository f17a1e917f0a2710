"""Paired bootstrap of the difference of mean score between two arms on the same eval tasks.

Both arms answer the same tasks, so the task-level differences are resampled together (a paired
bootstrap): the shared difficulty of a task cancels and the interval is much narrower than that
of two independent means. The interval is the two-sided percentile interval; the gate reads its
lower bound, i.e. a one-sided bound at ``1 - (1 - confidence) / 2``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# Resample indices are drawn in blocks of at most this many elements, so 10^4 tasks x 10^4
# resamples never need a 10^8-element index matrix.
_BLOCK_ELEMENTS = 4_000_000
_SHOW_IDS = 10


class TaskMismatchError(ValueError):
    """Two arms were not evaluated on the same tasks (or disagree on a task's domain)."""


@dataclass(frozen=True)
class BootstrapCI:
    """Mean difference (a - b) with its paired-bootstrap interval."""

    point: float
    lower: float
    upper: float
    n: int
    confidence: float
    samples: int


@dataclass(frozen=True)
class DomainMean:
    n: int
    mean: float


def _some(ids: set[str]) -> str:
    shown = sorted(ids)[:_SHOW_IDS]
    more = len(ids) - len(shown)
    return repr(shown) + (f" (+{more} more)" if more else "")


def check_same_tasks(
    a: Mapping[str, object], b: Mapping[str, object], a_name: str = "a", b_name: str = "b"
) -> list[str]:
    """The shared task ids, sorted; :class:`TaskMismatchError` naming the ids that differ."""
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} only in {a_name}: {_some(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} only in {b_name}: {_some(only_b)}")
        raise TaskMismatchError(
            f"{a_name} and {b_name} were not evaluated on the same tasks; " + "; ".join(parts)
        )
    if not a:
        raise TaskMismatchError(f"{a_name} and {b_name} have no eval tasks")
    # Sorted, so the pairing -- and hence every resample -- ignores the mappings' order.
    return sorted(a)


def paired_bootstrap(
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    confidence: float = 0.95,
    samples: int = 5000,
    seed: int = 0,
    a_name: str = "a",
    b_name: str = "b",
) -> BootstrapCI:
    """Bootstrap interval of mean(a) - mean(b), pairing the scores by task id."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    ids = check_same_tasks(a, b, a_name, b_name)
    diff = np.array([a[i] for i in ids], dtype=np.float64) - np.array(
        [b[i] for i in ids], dtype=np.float64
    )
    if not np.all(np.isfinite(diff)):
        raise ValueError("scores must be finite numbers")
    n = diff.size
    rng = np.random.default_rng(seed)
    means = np.empty(samples, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, samples, block):
        m = min(block, samples - start)
        idx = rng.integers(0, n, size=(m, n))
        means[start : start + m] = diff[idx].mean(axis=1)
    alpha = 1.0 - confidence
    lower, upper = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapCI(
        point=float(diff.mean()),
        lower=float(lower),
        upper=float(upper),
        n=n,
        confidence=confidence,
        samples=samples,
    )


def domain_means(scores: Mapping[str, float], domains: Mapping[str, str]) -> dict[str, DomainMean]:
    """Mean score per domain (domains sorted by name)."""
    grouped: dict[str, list[float]] = {}
    for task_id, score in scores.items():
        grouped.setdefault(domains[task_id], []).append(float(score))
    return {d: DomainMean(n=len(v), mean=float(np.mean(v))) for d, v in sorted(grouped.items())}
