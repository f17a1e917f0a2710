"""Sequence-level advantages from verifier rewards (GRPO and Dr. GRPO).

The verifier only says how good each whole response is; comparing a response with
its siblings from the same prompt (its group) turns that into a signed signal that
needs no value network.
"""

from __future__ import annotations

import torch

from rlsd.algo.registry import register_advantage_estimator

GRPO_STD_EPS = 1e-6


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, normalize_std: bool = True
) -> torch.Tensor:
    """Group-relative advantage ``A_i = (R_i - mean_G) / (std_G + 1e-6)``.

    Groups are contiguous blocks of ``group_size`` responses (all rollouts of one
    prompt side by side). ``std`` is the unbiased ``torch.std``. With
    ``normalize_std=False`` this is Dr. GRPO (``R - mean``), which drops the std
    division because it up-weights near-solved and near-failed prompts.

    A group whose rewards are all equal carries no signal about which response was
    better, so it gets exactly 0 (forced, not left to rounding of the mean). A group of
    size 1 has no siblings to compare with, so all advantages are 0.

    The result is float32 and detached: advantages are targets, never differentiated.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n = rewards.shape[0]
    if n % group_size != 0:
        raise ValueError(f"number of rewards N={n} is not a multiple of group_size={group_size}")
    r = rewards.detach().to(torch.float32)
    if group_size == 1 or n == 0:
        return torch.zeros_like(r)
    grouped = r.view(-1, group_size)
    centered = grouped - grouped.mean(dim=1, keepdim=True)
    all_equal = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)
    centered = torch.where(all_equal, torch.zeros_like(centered), centered)
    if normalize_std:
        centered = centered / (grouped.std(dim=1, keepdim=True) + GRPO_STD_EPS)
    return centered.reshape(n)


@register_advantage_estimator("grpo")
def grpo_estimator(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Config name ``grpo``: mean-centred, std-normalised group advantage."""
    return grpo_advantages(rewards, group_size, normalize_std=True)


@register_advantage_estimator("dr_grpo")
def dr_grpo_estimator(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Config name ``dr_grpo``: mean-centred only (no std division)."""
    return grpo_advantages(rewards, group_size, normalize_std=False)
