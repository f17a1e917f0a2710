"""Name -> function registry of advantage estimators, so a config string picks one.

The idea follows veRL's ``core_algos.py``: the trainer never imports a specific
estimator; it looks one up by the name written in the run config (``algo.advantage``).
Adding a variant is then one decorated function, and an unknown name fails with the list
of names that do exist instead of a ``KeyError`` deep inside training. Losses are not
looked up on their own: each training method (:mod:`rlsd.algo.methods`, ``algo.name``)
says how its loss is formed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch


class AdvantageEstimator(Protocol):
    """Maps per-response rewards ``[N]`` (contiguous groups) to advantages ``[N]``."""

    def __call__(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor: ...


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}

_F = TypeVar("_F", bound=Callable[..., Any])


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[_F], _F]:
    def decorator(fn: _F) -> _F:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = fn
        return fn

    return decorator


def register_advantage_estimator(name: str) -> Callable[[_F], _F]:
    """Decorator: make ``fn(rewards, group_size)`` selectable as ``name`` in configs."""
    return _register(ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; valid: {sorted(table)}") from None


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """Look up an estimator by config name; unknown names list the valid ones."""
    return _lookup(ADVANTAGE_ESTIMATORS, "advantage estimator", name)
