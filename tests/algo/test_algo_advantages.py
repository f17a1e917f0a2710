"""GRPO / Dr. GRPO advantages and the estimator registry."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsd.algo import (
    ADVANTAGE_ESTIMATORS,
    get_advantage_estimator,
    grpo_advantages,
    register_advantage_estimator,
)


def test_grpo_hand_example_two_groups():
    # group [1, 0]: mean 0.5, unbiased std sqrt(0.5) = 0.70710678
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # 0.70710578...
    out = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([a, -a, -a, a]), rtol=0, atol=1e-7)
    assert abs(a - 0.7071058) < 1e-6


def test_grpo_hand_example_group_of_four():
    # [1, 1, 1, 0]: mean 0.75, deviations [.25, .25, .25, -.75], var = 0.75/3 = 0.25, std 0.5
    out = grpo_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0]), group_size=4)
    d = 0.5 + 1e-6
    torch.testing.assert_close(out, torch.tensor([0.25 / d, 0.25 / d, 0.25 / d, -0.75 / d]))
    torch.testing.assert_close(out, torch.tensor([0.499999, 0.499999, 0.499999, -1.499997]))


def test_dr_grpo_hand_example():
    out = grpo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=2, normalize_std=False)
    assert torch.equal(out, torch.tensor([0.5, -0.5, -0.5, 0.5]))
    out = grpo_advantages(torch.tensor([0.2, 0.8, 0.5]), group_size=3, normalize_std=False)
    torch.testing.assert_close(out, torch.tensor([-0.3, 0.3, 0.0]))


def test_equal_rewards_give_exact_zero():
    # 0.1 * 3 / 3 != 0.1 in float arithmetic; the result must still be exactly 0.
    r = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0, 0.5])
    for normalize in (True, False):
        out = grpo_advantages(r, group_size=3, normalize_std=normalize)
        assert torch.equal(out[:3], torch.zeros(3))
        assert out[3] > 0 > out[4]


@settings(max_examples=60, deadline=None)
@given(
    value=st.floats(-1e3, 1e3, allow_nan=False, width=32),
    group_size=st.integers(1, 9),
    n_groups=st.integers(1, 4),
    normalize=st.booleans(),
)
def test_constant_groups_are_exactly_zero(value, group_size, n_groups, normalize):
    r = torch.full((group_size * n_groups,), value)
    out = grpo_advantages(r, group_size, normalize_std=normalize)
    assert torch.equal(out, torch.zeros_like(r))


def test_group_size_one_gives_zeros():
    assert torch.equal(grpo_advantages(torch.tensor([1.0, 0.0, 0.3]), 1), torch.zeros(3))


def test_grpo_is_detached_float32():
    r = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    out = grpo_advantages(r, 2)
    assert out.dtype == torch.float32 and not out.requires_grad
    ints = grpo_advantages(torch.tensor([1, 0, 1, 1]), 2, normalize_std=False)
    assert torch.equal(ints, torch.tensor([0.5, -0.5, 0.0, 0.0]))


def test_grpo_errors_name_the_values():
    with pytest.raises(ValueError, match=r"N=5.*group_size=2"):
        grpo_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="group_size must be >= 1, got 0"):
        grpo_advantages(torch.zeros(4), 0)
    with pytest.raises(ValueError, match="1-D"):
        grpo_advantages(torch.zeros(2, 2), 2)


def test_registry_lookup_and_errors():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    assert torch.equal(ADVANTAGE_ESTIMATORS["grpo"](r, 2), grpo_advantages(r, 2))
    assert torch.equal(
        get_advantage_estimator("dr_grpo")(r, 2), grpo_advantages(r, 2, normalize_std=False)
    )
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'gae'.*dr_grpo.*grpo"):
        get_advantage_estimator("gae")
    with pytest.raises(ValueError, match="already registered"):

        @register_advantage_estimator("grpo")
        def other(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
            return rewards
