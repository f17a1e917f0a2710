"""One process, DDP or FSDP through accelerate: the module accelerate prepares, and the few
places where the three differ.

accelerate prepares :class:`PolicyLoss`, not the causal LM itself, because the trainer never
calls the LM's own ``forward`` in an update: it runs the body for hidden states and applies the
output head in chunks (:mod:`rlsd.algo.logprobs`), so logits over the vocabulary are never
materialised. DDP arms its gradient all-reduce only in the prepared module's ``forward``, and
FSDP gathers a parameter shard only inside it; so the whole micro-batch loss -- body, head and
method -- runs inside ``PolicyLoss.forward``.

Losses are normalised by global token and sequence counts, so the global gradient is the *sum*
of the ranks' gradients; DDP and FSDP average, so the backward is scaled by the world size
(exact in floating point: a power of two for 2, 4, 8 processes), and N processes give the same
update as one process with the same global batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import nn

log = logging.getLogger("rlsd.train")


class ShardingError(ValueError):
    """A configuration the sharded (FSDP) path does not take, named with what to do instead."""


class PolicyLoss(nn.Module):
    """The module accelerate prepares: the policy, and a forward that runs ``compute(policy)``
    -- one micro-batch's hidden states and method loss -- inside the prepared module."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        # accelerate's FSDP auto-wrap shards per decoder layer by the model's own list
        self._no_split_modules = getattr(policy, "_no_split_modules", None)

    def forward(self, compute: Callable[[nn.Module], Any]) -> Any:
        return compute(self.policy)


def make_accelerator() -> Accelerator:
    """The run's accelerator, from ``accelerate launch``'s environment (one process without it).

    accelerate shards with FSDP only on accelerators: on CPU a launch that asks for FSDP runs
    DDP. That is said here, once, rather than discovered in the run's memory use."""
    acc = Accelerator(cpu=not torch.cuda.is_available())
    if fsdp_requested() and not is_fsdp(acc):
        log.warning(
            "FSDP was requested (ACCELERATE_USE_FSDP=true) but accelerate runs FSDP only on "
            "accelerators; this %s run is %s, with every parameter replicated",
            acc.device.type,
            acc.distributed_type.value,
        )
    return acc


def fsdp_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def is_fsdp(acc: Accelerator) -> bool:
    return acc.distributed_type == DistributedType.FSDP


def check_sharding(
    acc: Accelerator, *, frozen_teacher: bool, distribution_teacher: bool, engine: str
) -> None:
    """Refuse, before anything is loaded, what the FSDP path does not take."""
    if not is_fsdp(acc):
        return
    if not acc.is_fsdp2:
        raise ShardingError(
            "FSDP version 1 is not supported: set fsdp_version: 2 in the accelerate config "
            "(or --fsdp_version 2); FSDP2 shards per parameter and checkpoints through "
            "torch.distributed.checkpoint"
        )
    if frozen_teacher:
        raise ShardingError(
            "teacher.sync_interval > 0 keeps an unsharded frozen copy of the policy on every "
            "rank, which defeats FSDP: use the live self-teacher (teacher.sync_interval: 0) or "
            "DDP"
        )
    if distribution_teacher:
        raise ShardingError(
            "methods that distil the teacher's whole distribution (opsd) hand its output head "
            "to the loss outside the sharded forward: train them with DDP"
        )
    if engine != "hf":
        raise ShardingError(f"rollout.engine={engine!r} is single-process; use 'hf' with FSDP")


@contextmanager
def full_parameters(acc: Accelerator, prepared: nn.Module) -> Iterator[None]:
    """Every parameter whole on every rank for the duration (no-op unless FSDP): rollouts, the
    teacher pass and evaluation call the policy outside ``PolicyLoss.forward``.

    Resharding after each layer's forward is switched off meanwhile, or every decoding step
    would all-gather the model again."""
    if not is_fsdp(acc):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in prepared.modules() if isinstance(m, FSDPModule)]
    for m in units:
        m.set_reshard_after_forward(False, recurse=False)
        m.unshard()
    try:
        yield
    finally:
        for m in units:
            m.reshard()
            m.set_reshard_after_forward(True, recurse=False)


def backward(acc: Accelerator, loss: torch.Tensor) -> None:
    """Backward a loss normalised by global counts: DDP and FSDP average gradients over ranks,
    the update needs their sum."""
    acc.backward(loss * acc.num_processes if acc.num_processes > 1 else loss)


def clip_grad_norm(acc: Accelerator, params: list[nn.Parameter], max_norm: float) -> float:
    """The global gradient norm before clipping (every rank gets the same value)."""
    norm = acc.clip_grad_norm_(params, max_norm)
    if hasattr(norm, "full_tensor"):  # FSDP2: a DTensor over the mesh
        norm = norm.full_tensor()
    return float(norm)


def touch_all(module: nn.Module) -> torch.Tensor:
    """A zero loss that reaches every trainable parameter: a rank with no tokens in a step
    still takes part in the gradient all-reduce (DDP would otherwise wait for it forever)."""
    return sum((p.sum() for p in module.parameters() if p.requires_grad), torch.zeros(())) * 0.0


def full_policy_state(acc: Accelerator, prepared: nn.Module) -> dict[str, torch.Tensor] | None:
    """The policy's full state dict on the main process (None elsewhere), gathered from the
    shards under FSDP; what the final model folder is written from."""
    state = acc.get_state_dict(prepared)  # collective under FSDP: every rank calls it
    if not acc.is_main_process or state is None:
        return None
    prefix = "policy."
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
