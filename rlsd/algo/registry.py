"""Name -> function registries, so a config string picks the algorithm.

The idea follows veRL's ``core_algos.py``: the trainer never imports a specific
estimator or loss; it looks one up by the name written in the run config. Adding a
variant is then one decorated function, and an unknown name fails with the list of
names that do exist instead of a ``KeyError`` deep inside training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch


class AdvantageEstimator(Protocol):
    """Maps per-response rewards ``[N]`` (contiguous groups) to advantages ``[N]``."""

    def __call__(self, rewards: torch.Tensor, group_size: int) -> torch.Tensor: ...


class PolicyLoss(Protocol):
    """Maps token log-probs and advantages to ``(scalar loss, stats)``.

    Same call convention as :func:`rlsd.algo.ppo.ppo_clip_loss`.
    """

    def __call__(
        self,
        logprobs: torch.Tensor,
        old_logprobs: torch.Tensor,
        token_advantages: torch.Tensor,
        mask: torch.Tensor,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {}
POLICY_LOSSES: dict[str, PolicyLoss] = {}

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


def register_policy_loss(name: str) -> Callable[[_F], _F]:
    """Decorator: make a policy loss selectable as ``name`` in configs."""
    return _register(POLICY_LOSSES, "policy loss", name)


def _lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; valid: {sorted(table)}") from None


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """Look up an estimator by config name; unknown names list the valid ones."""
    return _lookup(ADVANTAGE_ESTIMATORS, "advantage estimator", name)


def get_policy_loss(name: str) -> PolicyLoss:
    """Look up a policy loss by config name; unknown names list the valid ones."""
    return _lookup(POLICY_LOSSES, "policy loss", name)
