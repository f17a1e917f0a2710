from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsd.gate import TaskMismatchError, domain_means, paired_bootstrap
from rlsd.gate import bootstrap as bootstrap_module


def _arms(a: list[float], b: list[float]) -> tuple[dict[str, float], dict[str, float]]:
    return {f"t{i}": x for i, x in enumerate(a)}, {f"t{i}": x for i, x in enumerate(b)}


def _binary(n: int, p: float, seed: int) -> list[float]:
    return np.random.default_rng(seed).binomial(1, p, size=n).astype(float).tolist()


def test_identical_arms_give_zero_and_an_interval_containing_it() -> None:
    scores = _binary(64, 0.4, seed=1)
    a, b = _arms(scores, scores)
    ci = paired_bootstrap(a, b, samples=2000, seed=0)
    assert ci.point == 0.0
    assert ci.lower <= 0.0 <= ci.upper
    assert (ci.lower, ci.upper) == (0.0, 0.0)  # paired: every resampled difference is 0
    assert ci.n == 64 and ci.samples == 2000 and ci.confidence == 0.95


def test_a_candidate_right_on_strictly_more_tasks_has_a_positive_gain() -> None:
    base = _binary(64, 0.4, seed=2)
    better = list(base)
    wrong = [i for i, x in enumerate(base) if x == 0.0]
    for i in wrong[:8]:  # right on 8 more tasks, wrong on none the baseline got right
        better[i] = 1.0
    a, b = _arms(better, base)
    ci = paired_bootstrap(a, b, samples=2000, seed=0)
    assert ci.point == pytest.approx(8 / 64)
    assert ci.lower > 0.0 and ci.upper <= 8 / 64 * 3
    # and the reverse comparison is its mirror image
    rev = paired_bootstrap(b, a, samples=2000, seed=0)
    assert rev.point == pytest.approx(-ci.point)
    assert rev.upper < 0.0


def test_the_interval_shrinks_with_more_tasks() -> None:
    def width(n: int) -> float:
        a, b = _arms(_binary(n, 0.6, seed=3), _binary(n, 0.5, seed=4))
        ci = paired_bootstrap(a, b, samples=2000, seed=0)
        return ci.upper - ci.lower

    w40, w400, w4000 = width(40), width(400), width(4000)
    assert w40 > w400 > w4000
    assert w40 / w4000 == pytest.approx(10.0, rel=0.35)  # ~ 1 / sqrt(n)


def test_interval_matches_the_normal_approximation_on_many_tasks() -> None:
    a, b = _arms(_binary(2000, 0.6, seed=5), _binary(2000, 0.5, seed=6))
    ci = paired_bootstrap(a, b, confidence=0.9, samples=4000, seed=0)
    d = np.array(list(a.values())) - np.array(list(b.values()))
    se = d.std() / math.sqrt(d.size)
    assert ci.lower == pytest.approx(d.mean() - 1.6449 * se, abs=0.15 * se)
    assert ci.upper == pytest.approx(d.mean() + 1.6449 * se, abs=0.15 * se)


def test_deterministic_by_seed_and_independent_of_mapping_order() -> None:
    a, b = _arms(_binary(50, 0.6, seed=7), _binary(50, 0.5, seed=8))
    first = paired_bootstrap(a, b, samples=1000, seed=42)
    assert paired_bootstrap(a, b, samples=1000, seed=42) == first
    shuffled_a = dict(reversed(list(a.items())))
    assert paired_bootstrap(shuffled_a, b, samples=1000, seed=42) == first
    assert paired_bootstrap(a, b, samples=1000, seed=43) != first


def test_mismatched_task_ids_are_named() -> None:
    a = {"t1": 1.0, "t2": 0.0, "only-cand": 1.0}
    b = {"t1": 1.0, "t2": 1.0, "only-ctrl": 0.0}
    with pytest.raises(TaskMismatchError) as exc:
        paired_bootstrap(a, b, a_name="candidate", b_name="control")
    msg = str(exc.value)
    assert "only in candidate: ['only-cand']" in msg
    assert "only in control: ['only-ctrl']" in msg


def test_many_mismatched_ids_are_listed_in_part() -> None:
    a = {f"a{i:02d}": 1.0 for i in range(30)}
    with pytest.raises(TaskMismatchError, match=r"30 only in a: .*\(\+20 more\)"):
        paired_bootstrap(a, {"x": 1.0})


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(TaskMismatchError, match="no eval tasks"):
        paired_bootstrap({}, {})
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap({"t": float("nan")}, {"t": 0.0})
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap({"t": 1.0}, {"t": 0.0}, confidence=1.0)


def test_resampling_in_blocks_gives_the_same_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _arms(_binary(300, 0.6, seed=9), _binary(300, 0.5, seed=10))
    whole = paired_bootstrap(a, b, samples=3000, seed=0)
    monkeypatch.setattr(bootstrap_module, "_BLOCK_ELEMENTS", 300 * 7)  # blocks of 7 resamples
    blocked = paired_bootstrap(a, b, samples=3000, seed=0)
    assert blocked.point == whole.point
    assert blocked.lower == pytest.approx(whole.lower, abs=0.01)
    assert blocked.upper == pytest.approx(whole.upper, abs=0.01)


def test_domain_means() -> None:
    scores = {"a": 1.0, "b": 0.0, "c": 1.0, "d": 0.5}
    domains = {"a": "x", "b": "x", "c": "y", "d": "y"}
    out = domain_means(scores, domains)
    assert list(out) == ["x", "y"]
    assert (out["x"].n, out["x"].mean) == (2, 0.5)
    assert (out["y"].n, out["y"].mean) == (2, 0.75)


scores_st = st.lists(
    st.tuples(
        st.floats(0.0, 1.0, allow_nan=False),
        st.floats(0.0, 1.0, allow_nan=False),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=40, deadline=None)
@given(pairs=scores_st, seed=st.integers(0, 2**32 - 1))
def test_interval_lies_within_the_observed_differences(
    pairs: list[tuple[float, float]], seed: int
) -> None:
    a, b = _arms([p[0] for p in pairs], [p[1] for p in pairs])
    ci = paired_bootstrap(a, b, samples=200, seed=seed)
    d = [x - y for x, y in pairs]
    tol = 1e-12
    assert min(d) - tol <= ci.lower <= ci.upper <= max(d) + tol
    assert min(d) - tol <= ci.point <= max(d) + tol


@settings(max_examples=40, deadline=None)
@given(
    pairs=scores_st,
    shift=st.floats(-0.5, 0.5, allow_nan=False),
    seed=st.integers(0, 1000),
)
def test_shifting_the_candidate_shifts_the_interval(
    pairs: list[tuple[float, float]], shift: float, seed: int
) -> None:
    a, b = _arms([p[0] for p in pairs], [p[1] for p in pairs])
    moved = {k: v + shift for k, v in a.items()}
    ci = paired_bootstrap(a, b, samples=200, seed=seed)
    ci2 = paired_bootstrap(moved, b, samples=200, seed=seed)
    assert ci2.point == pytest.approx(ci.point + shift, abs=1e-9)
    assert ci2.lower == pytest.approx(ci.lower + shift, abs=1e-9)
    assert ci2.upper == pytest.approx(ci.upper + shift, abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(pairs=scores_st, seed=st.integers(0, 1000))
def test_swapping_the_arms_mirrors_the_interval(
    pairs: list[tuple[float, float]], seed: int
) -> None:
    a, b = _arms([p[0] for p in pairs], [p[1] for p in pairs])
    ci = paired_bootstrap(a, b, samples=200, seed=seed)
    rev = paired_bootstrap(b, a, samples=200, seed=seed)
    assert rev.point == pytest.approx(-ci.point, abs=1e-12)
    assert rev.lower == pytest.approx(-ci.upper, abs=1e-12)
    assert rev.upper == pytest.approx(-ci.lower, abs=1e-12)
