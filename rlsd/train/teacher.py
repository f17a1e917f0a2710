"""The self-teacher: the policy itself (live) or a frozen copy refreshed every N steps."""

from __future__ import annotations

import copy

from torch import nn


class SelfTeacher:
    """Holds the module that scores responses with privileged context in its prompt.

    sync_interval 0: the live policy (no extra memory; its log-probs are detached anyway).
    sync_interval N: a frozen copy, refreshed from the policy at steps 0, N, 2N, ...
    """

    def __init__(self, policy: nn.Module, sync_interval: int) -> None:
        self.sync_interval = sync_interval
        self.policy = policy
        self.frozen: nn.Module | None = None
        if sync_interval > 0:
            self.frozen = copy.deepcopy(policy)
            self.frozen.requires_grad_(False)
            self.frozen.eval()

    @property
    def module(self) -> nn.Module:
        return self.frozen if self.frozen is not None else self.policy

    def maybe_sync(self, step: int) -> bool:
        """Refresh the frozen copy at the start of step ``step`` (0-based); True if it did."""
        if self.frozen is None or step % self.sync_interval != 0:
            return False
        self.frozen.load_state_dict(self.policy.state_dict())
        return True
