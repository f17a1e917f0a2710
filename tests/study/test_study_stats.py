from __future__ import annotations

import math
import time

import numpy as np
import pytest

from rlsd.gate import paired_bootstrap
from rlsd.study.stats import (
    Interval,
    StudyStats,
    bootstrap_ci_single,
    hierarchical_bootstrap_ci,
    mean_curve,
    minimum_detectable_effect,
    paired_differences,
    regularized_incomplete_beta,
    steps_to_match_baseline,
    steps_to_threshold,
    student_t_quantile,
    summarise,
    t_interval,
    validate_scores,
)

# Tabulated quantiles (any statistics textbook's t and z tables, 3-4 digits).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 9: 2.262, 30: 2.042}
T_80 = {1: 1.376, 2: 1.061, 4: 0.941}
Z_975, Z_80 = 1.960, 0.8416


def _run(row: list[int]) -> dict[str, float]:
    """One evaluation: problem p{i} -> score."""
    return {f"p{i}": float(v) for i, v in enumerate(row)}


# 2 arms x 2 seeds x 4 problems, steps 0 and 10; accuracies in the comments.
HAND = {
    "grpo": {
        0: {0: _run([0, 0, 1, 0]), 10: _run([1, 0, 1, 0])},  # 0.25, 0.50
        1: {0: _run([0, 1, 0, 0]), 10: _run([1, 1, 0, 0])},  # 0.25, 0.50
    },
    "rlsd": {
        0: {0: _run([1, 0, 1, 0]), 10: _run([1, 1, 1, 0])},  # 0.50, 0.75
        1: {0: _run([1, 1, 0, 0]), 10: _run([1, 1, 1, 1])},  # 0.50, 1.00
    },
}


def _synthetic(
    *,
    n_seeds: int,
    n_problems: int,
    delta: float,
    seed_sd: float = 0.0,
    seed_shifts: list[float] | None = None,
    seed: int = 0,
) -> dict:
    """Two arms sharing each (seed, problem)'s uniform draw U: baseline = U < q_p, arm = U < q_p +
    delta + a_s. The population mean difference is exactly ``delta`` (q_p + shifts stay inside
    (0, 1), and the seed shifts a_s have mean 0)."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.3, 0.6, n_problems)
    a = np.asarray(seed_shifts) if seed_shifts is not None else rng.normal(0, seed_sd, n_seeds)
    u = rng.uniform(size=(n_seeds, n_problems))
    base = (u < q).astype(float)
    arm = (u < q + delta + a[:, None]).astype(float)
    ids = [f"p{i}" for i in range(n_problems)]
    return {
        name: {s: {0: dict(zip(ids, m[s].tolist(), strict=True))} for s in range(n_seeds)}
        for name, m in (("grpo", base), ("rlsd", arm))
    }


def _width(iv: Interval) -> float:
    return iv.high - iv.low


# ---------------------------------------------------------------------------- hand-computed


def test_paired_differences_of_the_hand_example() -> None:
    diffs = paired_differences(HAND, "rlsd", "grpo")
    assert [d.step for d in diffs] == [0, 10]
    assert diffs[0].per_seed == {0: 0.25, 1: 0.25}
    assert diffs[0].mean == 0.25
    assert (diffs[0].arm_accuracy, diffs[0].baseline_accuracy) == (0.5, 0.25)
    assert diffs[1].per_seed == {0: 0.25, 1: 0.5}
    assert diffs[1].mean == 0.375
    assert (diffs[1].arm_accuracy, diffs[1].baseline_accuracy) == (0.875, 0.5)
    assert mean_curve(HAND, "rlsd") == {0: 0.5, 10: 0.875}


def test_t_interval_against_the_tabulated_quantile() -> None:
    # Step 10 of the hand example: per-seed diffs 0.25, 0.5 -> mean 0.375, sd 0.25/sqrt(2),
    # SE = sd/sqrt(2) = 0.125, half-width t_{0.975,1} * 0.125 = 12.706 * 0.125 = 1.58825.
    iv = t_interval([0.25, 0.5])
    assert iv.estimate == 0.375
    assert iv.low == pytest.approx(0.375 - 1.58825, abs=1e-4)
    assert iv.high == pytest.approx(0.375 + 1.58825, abs=1e-4)
    assert (iv.n, iv.method, iv.includes_zero) == (2, "t over seeds", True)
    # 3 seeds: mean 0.04, sd 0.02, half-width 4.303 * 0.02 / sqrt(3) = 0.049687.
    iv = t_interval([0.02, 0.04, 0.06])
    assert iv.low == pytest.approx(0.04 - 0.049687, abs=1e-5)
    assert iv.high == pytest.approx(0.04 + 0.049687, abs=1e-5)
    # 90%: t_{0.95,2} = 2.920 -> half-width 2.920 * 0.011547 = 0.033717
    assert t_interval([0.02, 0.04, 0.06], 0.90).high == pytest.approx(0.073717, abs=1e-5)


def test_t_interval_with_one_seed_says_it_cannot_be_computed() -> None:
    iv = t_interval([0.1])
    assert (iv.low, iv.high, iv.estimate, iv.n) == (-math.inf, math.inf, 0.1, 1)
    assert iv.note is not None and "cannot be computed" in iv.note
    assert iv.describe() == (
        "+10.0 pts [−∞, +∞] (t over seeds, 1 seed) — includes zero; cannot be computed: one "
        "seed gives no estimate of the seed-to-seed spread"
    )
    with pytest.raises(ValueError):
        t_interval([])


def test_t_interval_of_seeds_that_agree_has_zero_width_and_says_so() -> None:
    iv = t_interval([0.25, 0.25])
    assert (iv.low, iv.high) == (0.25, 0.25)
    assert iv.note is not None and "zero width" in iv.note


def test_bootstrap_of_identical_seeds_matches_the_binomial_distribution() -> None:
    # Step 0 of the hand example: both seeds' per-problem differences are [1, 0, 0, 0]. With
    # shared problem draws every replicate's mean is k/4, k ~ Binomial(4, 1/4) the draws of
    # problem 0: P(k=0) = 0.316, P(k<=2) = 0.949, P(k<=3) = 0.996 -> 95% interval [0, 0.75].
    shared = hierarchical_bootstrap_ci(HAND, "rlsd", "grpo", 0, samples=100_000, seed=3)
    assert (shared.low, shared.high, shared.estimate) == (0.0, 0.75, 0.25)
    # Per-seed draws: the mean is K/8, K ~ Binomial(8, 1/4): P(K<=4) = 0.9727, P(K<=5) =
    # 0.9958 -> [0, 0.625], narrower although two copies of one seed carry no extra information.
    nested = hierarchical_bootstrap_ci(
        HAND, "rlsd", "grpo", 0, samples=100_000, seed=3, problem_resampling="per_seed"
    )
    assert (nested.low, nested.high) == (0.0, 0.625)
    assert nested.method == "hierarchical bootstrap, per-seed problems"


def test_bootstrap_of_two_seeds_one_problem_is_the_seed_distribution() -> None:
    # Seed 0 differs by 0, seed 1 by 1 on the single problem: resampled means are 0, 0.5, 1 with
    # probabilities 1/4, 1/2, 1/4 -> [0, 1]; with the seeds held fixed the mean is always 0.5.
    scores = {
        "grpo": {0: {0: {"p": 0.0}}, 1: {0: {"p": 0.0}}},
        "rlsd": {0: {0: {"p": 0.0}}, 1: {0: {"p": 1.0}}},
    }
    iv = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=5000)
    assert (iv.low, iv.high, iv.estimate) == (0.0, 1.0, 0.5)
    fixed = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=5000, resample_seeds=False)
    assert (fixed.low, fixed.high) == (0.5, 0.5)
    assert fixed.method == "problem bootstrap, seeds fixed"


def test_single_arm_bootstrap_of_the_hand_example() -> None:
    iv = bootstrap_ci_single(HAND, "rlsd", 10, samples=20_000)
    assert iv.estimate == 0.875
    assert iv.quantity == "accuracy"
    assert 0.5 <= iv.low < 0.875 < iv.high <= 1.0
    # grpo's runs at step 10 score 2/4 each; a constant arm gives a degenerate interval
    constant = {"grpo": {s: {0: _run([1, 1, 1, 1])} for s in range(3)}}
    c = bootstrap_ci_single(constant, "grpo", 0, samples=100)
    assert (c.low, c.high, c.estimate) == (1.0, 1.0, 1.0)


def test_minimum_detectable_effect_by_hand() -> None:
    # seed level, 3 seeds, sd 0.02: (t_{.975,2} + t_{.8,2}) * 0.02 / sqrt(3)
    expected = (T_975[2] + T_80[2]) * 0.02 / math.sqrt(3)  # 0.06194
    assert minimum_detectable_effect(seed_sd=0.02, n_seeds=3) == pytest.approx(expected, rel=2e-4)
    assert minimum_detectable_effect([0.02, 0.04, 0.06]) == pytest.approx(expected, rel=2e-4)
    # one seed, problem level: (z_{.975} + z_{.8}) * sqrt(d / N), d = 0.1, N = 256
    expected_1 = (Z_975 + Z_80) * math.sqrt(0.1 / 256)  # 0.05537
    got = minimum_detectable_effect(discordant_fraction=0.1, n_problems=256)
    assert got == pytest.approx(expected_1, rel=2e-4)
    # more power, or more seeds at the same sd, moves it the right way
    assert minimum_detectable_effect(seed_sd=0.02, n_seeds=3, power=0.9) > expected
    assert minimum_detectable_effect(seed_sd=0.02, n_seeds=10) < expected


def test_minimum_detectable_effect_rejects_an_ambiguous_or_impossible_basis() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        minimum_detectable_effect([0.1, 0.2], seed_sd=0.1, n_seeds=2)
    with pytest.raises(ValueError, match="discordant_fraction"):
        minimum_detectable_effect([0.1])
    with pytest.raises(ValueError, match="n_seeds"):
        minimum_detectable_effect([0.1, 0.2, 0.3], n_seeds=2)
    with pytest.raises(ValueError, match="n_problems"):
        minimum_detectable_effect(discordant_fraction=0.1)


# ---------------------------------------------------------------------------- quantiles


def test_student_t_quantile_matches_the_tables() -> None:
    for df, t in T_975.items():
        assert student_t_quantile(0.975, df) == pytest.approx(t, abs=6e-4), df
    for df, t in T_80.items():
        assert student_t_quantile(0.8, df) == pytest.approx(t, abs=6e-4), df
    assert student_t_quantile(0.995, 3) == pytest.approx(5.841, abs=6e-4)
    assert student_t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-6)  # -> normal
    assert student_t_quantile(0.025, 4) == -student_t_quantile(0.975, 4)
    assert student_t_quantile(0.5, 3) == 0.0


def test_student_t_quantile_matches_closed_forms() -> None:
    # df = 1 is Cauchy: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p)).
    for p in (0.6, 0.8, 0.975, 0.999):
        assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        closed = (2 * p - 1) / math.sqrt(2 * p * (1 - p))
        assert student_t_quantile(p, 2) == pytest.approx(closed, rel=1e-10)
    # I_x(1, b) = 1 - (1 - x)^b
    assert regularized_incomplete_beta(1.0, 3.0, 0.2) == pytest.approx(1 - 0.8**3, rel=1e-12)


def test_student_t_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for p in (0.6, 0.9, 0.975, 0.995, 0.9999):
        for df in (1, 2, 3, 7, 29, 0.5, 250, 1e6):
            assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_covers_the_true_difference_and_narrows_with_more_problems() -> None:
    hits = 0
    reps = 40
    for r in range(reps):
        scores = _synthetic(n_seeds=8, n_problems=400, delta=0.05, seed_sd=0.02, seed=100 + r)
        iv = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=1000, seed=r)
        hits += iv.low <= 0.05 <= iv.high
    # nominal 95%; 34/40 leaves room for Monte-Carlo luck while catching a broken interval
    # (the problems-only bootstrap covers ~70% here, see the seed tests)
    assert hits >= 34, hits
    small = _synthetic(n_seeds=3, n_problems=250, delta=0.05)
    large = _synthetic(n_seeds=3, n_problems=4000, delta=0.05)
    w_small = _width(hierarchical_bootstrap_ci(small, "rlsd", "grpo", 0, samples=2000))
    w_large = _width(hierarchical_bootstrap_ci(large, "rlsd", "grpo", 0, samples=2000))
    assert w_large < 0.4 * w_small  # 16x the problems: 1/4 the width


def test_pairing_narrows_the_interval_when_the_arms_share_problem_noise() -> None:
    scores = _synthetic(n_seeds=3, n_problems=400, delta=0.05)
    paired = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=4000)
    # An unpaired interval of the difference is about as wide as the two arms' own intervals
    # combined in quadrature.
    w_arm = _width(bootstrap_ci_single(scores, "rlsd", 0, samples=4000))
    w_base = _width(bootstrap_ci_single(scores, "grpo", 0, samples=4000))
    unpaired = math.hypot(w_arm, w_base)
    assert _width(paired) < 0.5 * unpaired
    assert paired.estimate == pytest.approx(
        np.mean(list(paired_differences(scores, "rlsd", "grpo")[0].per_seed.values()))
    )


def test_with_one_seed_the_seed_level_collapses() -> None:
    scores = _synthetic(n_seeds=1, n_problems=300, delta=0.05)
    hier = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=3000, seed=7)
    fixed = hierarchical_bootstrap_ci(
        scores, "rlsd", "grpo", 0, samples=3000, seed=7, resample_seeds=False
    )
    assert (hier.low, hier.high, hier.estimate) == (fixed.low, fixed.high, fixed.estimate)
    # and it agrees with the gate's independent paired bootstrap of the same 300 pairs
    gate = paired_bootstrap(scores["rlsd"][0][0], scores["grpo"][0][0], samples=3000, seed=1)
    assert gate.point == pytest.approx(hier.estimate)
    assert _width(hier) == pytest.approx(gate.upper - gate.lower, rel=0.15)


def test_seeds_that_disagree_widen_the_interval_beyond_the_problems_only_one() -> None:
    scores = _synthetic(n_seeds=4, n_problems=400, delta=0.05, seed_shifts=[0.1, -0.05, 0.0, 0.08])
    hier = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=4000)
    fixed = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=4000, resample_seeds=False)
    assert _width(hier) > 1.5 * _width(fixed)


def test_copies_of_one_seed_add_no_information_with_shared_problem_draws() -> None:
    one = _synthetic(n_seeds=1, n_problems=400, delta=0.05)
    copies = {arm: {s: runs[0] for s in range(3)} for arm, runs in one.items()}
    w_one = _width(hierarchical_bootstrap_ci(one, "rlsd", "grpo", 0, samples=4000))
    w_shared = _width(hierarchical_bootstrap_ci(copies, "rlsd", "grpo", 0, samples=4000))
    w_nested = _width(
        hierarchical_bootstrap_ci(
            copies, "rlsd", "grpo", 0, samples=4000, problem_resampling="per_seed"
        )
    )
    assert w_shared == pytest.approx(w_one, rel=0.1)
    assert w_nested < 0.75 * w_one  # ~1/sqrt(3): the nested scheme's overconfidence


def test_bootstrap_is_fast_enough() -> None:
    rng = np.random.default_rng(0)
    scores = {
        arm: {
            s: {50: {f"p{i}": float(v) for i, v in enumerate(rng.integers(0, 2, 256))}}
            for s in range(3)
        }
        for arm in ("grpo", "rlsd")
    }
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 50, samples=10_000)
        best = min(best, time.perf_counter() - start)
    assert best < 1.0, best


def test_bootstrap_is_deterministic_given_the_seed() -> None:
    scores = _synthetic(n_seeds=3, n_problems=200, delta=0.03)
    a = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=2000, seed=11)
    b = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=2000, seed=11)
    c = hierarchical_bootstrap_ci(scores, "rlsd", "grpo", 0, samples=2000, seed=12)
    assert a == b
    assert (a.low, a.high) != (c.low, c.high)


# ---------------------------------------------------------------------------- thresholds


def test_steps_to_threshold_edge_cases() -> None:
    assert steps_to_threshold({0: 0.1, 10: 0.2, 20: 0.3}, 0.5) is None
    assert steps_to_threshold({0: 0.6, 10: 0.2}, 0.5) == 0
    assert steps_to_threshold({20: 0.5, 0: 0.1, 10: 0.45}, 0.5) == 20  # unsorted input
    assert steps_to_threshold({0: 0.1, 10: 0.7, 20: 0.9}, 0.7) == 10  # equal counts as reached
    assert steps_to_threshold({0: 0.1 + 0.2}, 0.3) == 0  # 0.30000000000000004 vs 0.3, a tie
    with pytest.raises(ValueError):
        steps_to_threshold({}, 0.5)


def test_steps_to_match_the_baselines_final_accuracy() -> None:
    result = steps_to_match_baseline(HAND, baseline="grpo")
    assert (result.threshold, result.final_step) == (0.5, 10)
    # rlsd's step-0 mean is 0.5 already; grpo gets there at its final step
    assert result.steps == {"grpo": 10, "rlsd": 0}


# ---------------------------------------------------------------------------- validation


def test_mismatched_problem_ids_name_the_arm_seed_and_step() -> None:
    broken = {arm: {s: dict(runs) for s, runs in seeds.items()} for arm, seeds in HAND.items()}
    broken["rlsd"][1][10] = {k: v for k, v in HAND["rlsd"][1][10].items() if k != "p3"}
    with pytest.raises(ValueError, match=r"arm 'rlsd', seed 1, step 10: .*missing \['p3'\]"):
        paired_differences(broken, "rlsd", "grpo")
    broken["rlsd"][1][10] = {**HAND["rlsd"][1][10], "p9": 1.0}
    with pytest.raises(ValueError, match=r"arm 'rlsd', seed 1, step 10: .*extra \['p9'\]"):
        hierarchical_bootstrap_ci(broken, "rlsd", "grpo", 10)


def test_other_inconsistencies_are_named() -> None:
    fewer_seeds = {**HAND, "rlsd": {0: HAND["rlsd"][0]}}
    with pytest.raises(ValueError, match="arm 'rlsd' has seeds \\[0\\]"):
        validate_scores(fewer_seeds)
    fewer_steps = {**HAND, "rlsd": {0: HAND["rlsd"][0], 1: {0: HAND["rlsd"][1][0]}}}
    with pytest.raises(ValueError, match="arm 'rlsd', seed 1 was evaluated at steps \\[0\\]"):
        validate_scores(fewer_steps)
    bad_score = {
        **HAND,
        "rlsd": {
            0: HAND["rlsd"][0],
            1: {0: _run([1, 1, 0, 0]), 10: {**HAND["rlsd"][1][10], "p2": 2.0}},
        },
    }
    with pytest.raises(ValueError, match="arm 'rlsd', seed 1, step 10, problem 'p2'"):
        validate_scores(bad_score)
    with pytest.raises(ValueError, match="no arm 'rlsd-null'"):
        paired_differences(HAND, "rlsd-null", "grpo")
    with pytest.raises(ValueError, match="no evaluation step 5"):
        hierarchical_bootstrap_ci(HAND, "rlsd", "grpo", 5)


# ---------------------------------------------------------------------------- describe


def test_describe_reads_as_a_sentence() -> None:
    iv = Interval(
        estimate=0.023,
        low=-0.012,
        high=0.058,
        confidence=0.95,
        method="hierarchical bootstrap",
        n=3,
        n_problems=256,
    )
    assert iv.includes_zero
    assert iv.describe() == (
        "+2.3 pts [−1.2, +5.8] (hierarchical bootstrap, 3 seeds × 256 problems) — includes zero"
    )
    above = iv.model_copy(update={"low": 0.004})
    assert not above.includes_zero
    assert above.describe().endswith("— excludes zero")
    acc = Interval(
        estimate=0.612,
        low=0.58,
        high=0.644,
        confidence=0.95,
        method="hierarchical bootstrap",
        n=3,
        n_problems=256,
        quantity="accuracy",
    )
    assert acc.describe() == "61.2% [58.0, 64.4] (hierarchical bootstrap, 3 seeds × 256 problems)"
    with pytest.raises(ValueError):
        Interval(estimate=0.0, low=0.1, high=-0.1, confidence=0.95, method="x", n=1)


# ---------------------------------------------------------------------------- summarise


def test_summarise_the_hand_example() -> None:
    stats = summarise(HAND, samples=2000, seed=5)
    assert (stats.seeds, stats.steps, stats.n_problems, stats.threshold) == (
        [0, 1],
        [0, 10],
        4,
        0.5,
    )
    grpo, rlsd = stats.arms["grpo"], stats.arms["rlsd"]
    assert grpo.comparisons == [] and grpo.mde is None
    assert grpo.per_seed_final == {0: 0.5, 1: 0.5} and grpo.steps_to_threshold == 10
    assert rlsd.per_seed_final == {0: 0.75, 1: 1.0}
    assert rlsd.curve == {0: 0.5, 10: 0.875} and rlsd.steps_to_threshold == 0
    assert rlsd.final_accuracy.estimate == 0.875
    final = rlsd.comparisons[-1]
    assert (final.step, final.per_seed, final.mean) == (10, {0: 0.25, 1: 0.5}, 0.375)
    assert final.t == t_interval([0.25, 0.5])
    # each interval is exactly what the public function returns for the same seed
    assert final.bootstrap == hierarchical_bootstrap_ci(
        HAND, "rlsd", "grpo", 10, samples=2000, seed=5
    )
    assert rlsd.final_accuracy == bootstrap_ci_single(HAND, "rlsd", 10, samples=2000, seed=5)
    # MDE from the per-seed final diffs: sd 0.1768, (t_{.975,1} + t_{.8,1}) * 0.1768 / sqrt(2)
    assert rlsd.mde is not None and rlsd.mde.basis == "seed_sd"
    assert rlsd.mde.value == pytest.approx((T_975[1] + T_80[1]) * 0.125, rel=1e-4)


def test_summarise_with_one_seed_uses_the_problem_level_mde_and_round_trips() -> None:
    one = {arm: {0: seeds[0]} for arm, seeds in HAND.items()}
    stats = summarise(one, samples=500)
    rlsd = stats.arms["rlsd"]
    # step 10, seed 0: rlsd [1,1,1,0] vs grpo [1,0,1,0] -> one discordant problem of 4, d = 0.25
    assert rlsd.mde is not None and rlsd.mde.basis == "discordant"
    assert rlsd.mde.value == pytest.approx((Z_975 + Z_80) * math.sqrt(0.25 / 4), rel=2e-4)
    assert rlsd.comparisons[-1].t.high == math.inf
    assert StudyStats.model_validate_json(stats.model_dump_json()) == stats


def test_summarise_is_deterministic_given_the_seed() -> None:
    scores = _synthetic(n_seeds=3, n_problems=120, delta=0.05)
    a = summarise(scores, samples=1000, seed=1)
    assert summarise(scores, samples=1000, seed=1) == a
    b = summarise(scores, samples=1000, seed=2)
    assert b.arms["rlsd"].comparisons[0].bootstrap != a.arms["rlsd"].comparisons[0].bootstrap
    with pytest.raises(ValueError, match="no arm 'control'"):
        summarise(scores, baseline="control")
