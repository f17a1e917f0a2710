"""Statistics of a study: training arms compared across paired seeds on one held-out problem set.

Input is ``scores[arm][seed][step][problem_id] -> score`` (0/1 correctness of a greedy answer, or
any score in [0, 1]). Every arm runs the same seeds (a seed fixes the data order and the sampling
seeds, so the same seed of two arms is a *pair*), every run is evaluated at the same steps on the
same problems; :func:`validate_scores` enforces that and names the first arm/seed/step that breaks
it. All accuracies and differences are fractions in [0, 1] (or [-1, 1]); ``Interval.describe``
renders them in percentage points.

Two sources of noise are separate here: which seeds were run (training noise: a seed is one draw
of a whole training run) and which problems were held out (the problem set is a sample of the
task). Hence the intervals:

* :func:`hierarchical_bootstrap_ci` resamples both: seeds with replacement, then problems with
  replacement, the same problem indices for the arm and the baseline (paired), so the shared
  difficulty of a problem cancels. By default (``problem_resampling="shared"``) one problem
  resample is applied to every resampled seed: the problems are *crossed* with the seeds (the
  same 256 problems in every run), and a problem that favours the arm in one seed tends to favour
  it in all. Resampling problems independently per seed (``"per_seed"``, the textbook nested
  scheme) treats those as independent draws and shrinks the problem-level variance by the number
  of seeds: three identical copies of one seed would give a narrower interval than the seed alone.
* :func:`t_interval` is the Student-t interval over the per-seed values; it sees only the seed
  level, with the seed count's few degrees of freedom (2 for 3 seeds: t = 4.30, not 1.96).

Neither is exact. Resampling both levels with replacement counts the per-run answer noise twice
(once in the spread of the seed means, once in the problem draw), so the bootstrap errs wide;
"shared" errs wider than "per_seed" (about 20% under pure answer noise) but is the one that
stays at or above nominal coverage when problems differ systematically in which arm they favour
(in simulations with 8 seeds x 256 problems, "per_seed" fell to ~87% there, "shared" held ≥ 97%).
The t interval treats the problem set as fixed -- it is about *these* problems -- and at 3 seeds
its t = 4.30 is honest about how little three training runs say, which a bootstrap over 3 seeds
(10 distinct seed multisets, variance (S-1)/S of the sample's) cannot be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

Scores = Mapping[str, Mapping[int, Mapping[int, Mapping[str, float]]]]
"""``scores[arm][seed][step][problem_id] -> score in [0, 1]``."""

ProblemResampling = Literal["shared", "per_seed"]

# Resample indices are drawn in blocks of at most this many elements, so 10^4 resamples of
# 10 seeds x 10^4 problems never need a 10^9-element index array.
_BLOCK_ELEMENTS = 4_000_000
_SHOW_IDS = 5
# Mean accuracies of different arms are computed by different sums; a tie with the threshold
# must not be lost to the last bit of rounding.
_THRESHOLD_TOLERANCE = 1e-12
_LARGE_DF = 1e5


# --------------------------------------------------------------------------------------------
# Result models


class Interval(BaseModel):
    """A point estimate with a two-sided interval, and how it was obtained."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    estimate: float = Field(description="Point estimate (the observed mean), a fraction.")
    low: float = Field(description="Lower bound; -inf where no interval can be computed.")
    high: float = Field(description="Upper bound; +inf where no interval can be computed.")
    confidence: float = Field(gt=0.0, lt=1.0)
    method: str = Field(description="e.g. 'hierarchical bootstrap', 't over seeds'.")
    n: int = Field(ge=1, description="Number of seeds (the independent training runs).")
    n_problems: int | None = Field(default=None, ge=1, description="Problems per run, if used.")
    quantity: Literal["difference", "accuracy"] = "difference"
    note: str | None = Field(default=None, description="Why the interval is degenerate, if it is.")

    @model_validator(mode="after")
    def _ordered(self) -> Interval:
        if any(math.isnan(v) for v in (self.estimate, self.low, self.high)):
            raise ValueError("an interval's estimate and bounds must not be NaN")
        if self.low > self.high:
            raise ValueError(f"low {self.low} exceeds high {self.high}")
        return self

    @property
    def includes_zero(self) -> bool:
        return self.low <= 0.0 <= self.high

    def describe(self) -> str:
        """e.g. ``+2.3 pts [−1.2, +5.8] (hierarchical bootstrap, 3 seeds × 256 problems) —
        includes zero``; an accuracy reads ``61.2% [58.0, 64.4] (...)``."""
        design = f"{self.n} seed" + ("" if self.n == 1 else "s")
        if self.n_problems is not None:
            design += f" × {self.n_problems} problems"
        if self.quantity == "accuracy":
            head = f"{_pts(self.estimate, signed=False)}% [{_pts(self.low, signed=False)}, "
            head += f"{_pts(self.high, signed=False)}] ({self.method}, {design})"
            return head + (f" — {self.note}" if self.note else "")
        head = f"{_pts(self.estimate)} pts [{_pts(self.low)}, {_pts(self.high)}]"
        head += f" ({self.method}, {design})"
        tail = ["includes zero" if self.includes_zero else "excludes zero"]
        if self.note:
            tail.append(self.note)
        return f"{head} — {'; '.join(tail)}"


def _pts(x: float, *, signed: bool = True) -> str:
    if math.isinf(x):
        return "−∞" if x < 0 else ("+∞" if signed else "∞")
    # A typographic minus, so a column of signed numbers lines up and reads as one.
    text = f"{100.0 * x:+.1f}" if signed else f"{100.0 * x:.1f}"
    return text.replace("-", "−")


class PairedDiff(BaseModel):
    """Mean-accuracy difference (arm − baseline) at one evaluation step, seed by seed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arm: str
    baseline: str
    step: int
    per_seed: dict[int, float] = Field(description="seed -> acc(arm, seed) − acc(baseline, seed)")
    mean: float = Field(description="Mean of per_seed (= mean over all seed × problem pairs).")
    arm_accuracy: float = Field(description="The arm's accuracy, mean over seeds.")
    baseline_accuracy: float = Field(description="The baseline's accuracy, mean over seeds.")


class StepComparison(BaseModel):
    """The paired difference at one step with both of its intervals."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    step: int
    per_seed: dict[int, float]
    mean: float
    bootstrap: Interval
    t: Interval


class ThresholdSteps(BaseModel):
    """Per arm, the first evaluation step whose mean accuracy reaches the baseline's final one."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    baseline: str
    final_step: int
    threshold: float = Field(description="The baseline's mean accuracy (over seeds) at final_step.")
    steps: dict[str, int | None] = Field(description="arm -> first step reaching it, None: never.")


class DetectableEffect(BaseModel):
    """The smallest true difference the design had the stated power to detect."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float = Field(ge=0.0, description="Minimum detectable effect, a fraction.")
    basis: Literal["seed_sd", "discordant"] = Field(
        description="seed_sd: spread of per-seed differences (>= 2 seeds); discordant: the "
        "problem-level variance of one seed's paired difference."
    )
    confidence: float
    power: float


class ArmStats(BaseModel):
    """Everything the study says about one arm."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    arm: str
    final_step: int
    final_accuracy: Interval = Field(description="Mean accuracy at final_step, bootstrap CI.")
    per_seed_final: dict[int, float]
    curve: dict[int, float] = Field(description="step -> mean accuracy over seeds.")
    steps_to_threshold: int | None = Field(
        description="First step reaching the baseline's final mean accuracy; None: never."
    )
    comparisons: list[StepComparison] = Field(
        description="Paired difference vs the baseline at every step; empty for the baseline."
    )
    mde: DetectableEffect | None = Field(
        description="MDE of the final-step difference vs the baseline; None for the baseline."
    )


class StudyStats(BaseModel):
    """The whole study: one :class:`ArmStats` per arm, and the design it rests on."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    baseline: str
    seeds: list[int]
    steps: list[int]
    n_problems: int
    confidence: float
    samples: int
    seed: int
    threshold: float = Field(description="The baseline's final mean accuracy.")
    arms: dict[str, ArmStats]


# --------------------------------------------------------------------------------------------
# Validation: the study as dense arrays


@dataclass(frozen=True)
class _Study:
    seeds: list[int]
    steps: list[int]
    problems: list[str]
    # arm -> array (seeds, steps, problems), each axis in the sorted order above
    data: dict[str, np.ndarray]

    def arm(self, name: str) -> np.ndarray:
        if name not in self.data:
            raise ValueError(f"no arm {name!r} in the study; arms: {sorted(self.data)}")
        return self.data[name]

    def step_index(self, step: int) -> int:
        if step not in self.steps:
            raise ValueError(f"no evaluation step {step}; steps: {self.steps}")
        return self.steps.index(step)


def _some(ids: set[str]) -> str:
    shown = sorted(ids)[:_SHOW_IDS]
    more = len(ids) - len(shown)
    return repr(shown) + (f" (+{more} more)" if more else "")


def _validate(scores: Scores) -> _Study:
    if not scores:
        raise ValueError("the study has no arms")
    arms = sorted(scores)
    ref_arm = arms[0]
    if not scores[ref_arm]:
        raise ValueError(f"arm {ref_arm!r} has no seeds")
    seeds = sorted(scores[ref_arm])
    ref_seed = seeds[0]
    if not scores[ref_arm][ref_seed]:
        raise ValueError(f"arm {ref_arm!r}, seed {ref_seed} has no evaluation steps")
    steps = sorted(scores[ref_arm][ref_seed])
    ref_step = steps[0]
    problems = sorted(scores[ref_arm][ref_seed][ref_step])
    if not problems:
        raise ValueError(f"arm {ref_arm!r}, seed {ref_seed}, step {ref_step} has no problems")
    problem_set = set(problems)

    data: dict[str, np.ndarray] = {}
    for arm in arms:
        if sorted(scores[arm]) != seeds:
            raise ValueError(
                f"arm {arm!r} has seeds {sorted(scores[arm])}, arm {ref_arm!r} has {seeds}: "
                "paired seeds must be the same in every arm"
            )
        cube = np.empty((len(seeds), len(steps), len(problems)), dtype=np.float64)
        for i, seed in enumerate(seeds):
            if sorted(scores[arm][seed]) != steps:
                raise ValueError(
                    f"arm {arm!r}, seed {seed} was evaluated at steps {sorted(scores[arm][seed])}"
                    f", arm {ref_arm!r}, seed {ref_seed} at {steps}"
                )
            for j, step in enumerate(steps):
                cell = scores[arm][seed][step]
                ids = set(cell)
                if ids != problem_set:
                    parts = []
                    if problem_set - ids:
                        parts.append(f"missing {_some(problem_set - ids)}")
                    if ids - problem_set:
                        parts.append(f"extra {_some(ids - problem_set)}")
                    raise ValueError(
                        f"arm {arm!r}, seed {seed}, step {step}: problem ids differ from arm "
                        f"{ref_arm!r}, seed {ref_seed}, step {ref_step}: " + ", ".join(parts)
                    )
                row = np.array([cell[p] for p in problems], dtype=np.float64)
                bad = ~(np.isfinite(row) & (row >= 0.0) & (row <= 1.0))
                if bad.any():
                    k = int(np.argmax(bad))
                    raise ValueError(
                        f"arm {arm!r}, seed {seed}, step {step}, problem {problems[k]!r}: score "
                        f"{row[k]!r} is not a number in [0, 1]"
                    )
                cube[i, j] = row
        data[arm] = cube
    return _Study(seeds=seeds, steps=steps, problems=problems, data=data)


def validate_scores(scores: Scores) -> None:
    """Raise :class:`ValueError` naming the arm/seed/step where ``scores`` is not one study:
    the same seeds in every arm, the same steps in every run, the same problem ids in every
    evaluation, every score a number in [0, 1]."""
    _validate(scores)


# --------------------------------------------------------------------------------------------
# Quantiles (scipy is only a transitive dependency here, so Student-t is computed in-house)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    # Modified Lentz evaluation of the continued fraction of I_x(a, b) (Numerical Recipes 6.4);
    # converges fast for x < (a + 1) / (a + b + 2), which the caller ensures.
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            return h
    raise ArithmeticError(f"incomplete beta did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and x in [0, 1]."""
    if a <= 0.0 or b <= 0.0:
        raise ValueError(f"a and b must be positive, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    return _ibeta(a, b, x, 1.0 - x)


def _ibeta(a: float, b: float, x: float, y: float) -> float:
    # y = 1 - x is passed in, not recomputed: for t with many df, x = df / (df + t^2) is within
    # 1e-10 of 1 and 1 - x would have lost most of its digits.
    if x <= 0.0 or y <= 0.0:
        return 0.0 if x <= 0.0 else 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, y) / b


def _t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0."""
    t2 = t * t
    if t2 < df:
        # Near the centre: 0.5 - P(0 < T < t), through I_{t²/(df+t²)}(1/2, df/2), whose
        # argument is small and exact.
        return 0.5 - 0.5 * _ibeta(0.5, df / 2.0, t2 / (df + t2), df / (df + t2))
    return 0.5 * _ibeta(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))


def student_t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    if not df > 0.0:
        raise ValueError(f"df must be positive, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    if df > _LARGE_DF:
        # lgamma(df/2 + 1/2) - lgamma(df/2) cancels catastrophically for huge df (1e-6 relative
        # at df = 1e9); the Cornish-Fisher series in 1/df (Abramowitz & Stegun 26.7.5) is exact
        # to double precision there.
        z = NormalDist().inv_cdf(p)
        g1 = (z**3 + z) / 4.0
        g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
        g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
        g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
        return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
    # Bisect on the upper tail, not 1 - CDF: the tail of p = 0.9999 keeps its digits.
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while _t_upper_tail(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_upper_tail(mid, df) > tail:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


# --------------------------------------------------------------------------------------------
# Means and paired differences


def _paired_differences(study: _Study, arm: str, baseline: str) -> list[PairedDiff]:
    if arm == baseline:
        raise ValueError(f"arm and baseline are both {arm!r}")
    a, b = study.arm(arm), study.arm(baseline)
    # Mean over problems of a run = that run's accuracy; the difference is paired by seed.
    acc_a, acc_b = a.mean(axis=2), b.mean(axis=2)  # (seeds, steps)
    diff = acc_a - acc_b
    out = []
    for j, step in enumerate(study.steps):
        out.append(
            PairedDiff(
                arm=arm,
                baseline=baseline,
                step=step,
                per_seed={s: float(diff[i, j]) for i, s in enumerate(study.seeds)},
                mean=float(diff[:, j].mean()),
                arm_accuracy=float(acc_a[:, j].mean()),
                baseline_accuracy=float(acc_b[:, j].mean()),
            )
        )
    return out


def paired_differences(scores: Scores, arm: str, baseline: str) -> list[PairedDiff]:
    """Per evaluation step (ascending): per-seed accuracy(arm) − accuracy(baseline) of the same
    seed, and their mean."""
    return _paired_differences(_validate(scores), arm, baseline)


def mean_curve(scores: Scores, arm: str) -> dict[int, float]:
    """step -> the arm's accuracy averaged over seeds (and problems)."""
    study = _validate(scores)
    return _mean_curve(study, arm)


def _mean_curve(study: _Study, arm: str) -> dict[int, float]:
    # One sum over seeds x problems, so equal counts of correct answers give bit-equal means.
    means = study.arm(arm).mean(axis=(0, 2))
    return {step: float(means[j]) for j, step in enumerate(study.steps)}


# --------------------------------------------------------------------------------------------
# Bootstrap


def _bootstrap_means(
    values: np.ndarray,
    *,
    samples: int,
    seed: int,
    resample_seeds: bool,
    problem_resampling: ProblemResampling,
) -> np.ndarray:
    """Means of ``samples`` two-level resamples of ``values`` (seeds, problems)."""
    n_seeds, n_problems = values.shape
    rng = np.random.default_rng(seed)
    out = np.empty(samples, dtype=np.float64)
    block = max(1, _BLOCK_ELEMENTS // (n_seeds * n_problems))
    fixed = np.broadcast_to(np.arange(n_seeds), (block, n_seeds))
    for start in range(0, samples, block):
        m = min(block, samples - start)
        # With one seed there is nothing to resample; drawing nothing keeps the stream (and so
        # the result) identical to the problems-only bootstrap.
        if resample_seeds and n_seeds > 1:
            seed_idx = rng.integers(0, n_seeds, size=(m, n_seeds))
        else:
            seed_idx = fixed[:m]
        if problem_resampling == "shared":
            prob_idx = rng.integers(0, n_problems, size=(m, 1, n_problems))
        else:
            prob_idx = rng.integers(0, n_problems, size=(m, n_seeds, n_problems))
        # Every resampled seed has n_problems values, so the grand mean is the mean of the
        # resampled seeds' means.
        out[start : start + m] = values[seed_idx[:, :, None], prob_idx].mean(axis=(1, 2))
    return out


def _method(resample_seeds: bool, problem_resampling: ProblemResampling) -> str:
    if not resample_seeds:
        return "problem bootstrap, seeds fixed"
    if problem_resampling == "per_seed":
        return "hierarchical bootstrap, per-seed problems"
    return "hierarchical bootstrap"


def _bootstrap_interval(
    values: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int,
    resample_seeds: bool,
    problem_resampling: ProblemResampling,
    quantity: Literal["difference", "accuracy"],
) -> Interval:
    _check_confidence(confidence)
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    if problem_resampling not in ("shared", "per_seed"):
        raise ValueError(
            f"problem_resampling must be 'shared' or 'per_seed', not {problem_resampling!r}"
        )
    means = _bootstrap_means(
        values,
        samples=samples,
        seed=seed,
        resample_seeds=resample_seeds,
        problem_resampling=problem_resampling,
    )
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2.0, 1.0 - alpha / 2.0])
    return Interval(
        estimate=float(values.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        method=_method(resample_seeds, problem_resampling),
        n=values.shape[0],
        n_problems=values.shape[1],
        quantity=quantity,
    )


def _diff_matrix(study: _Study, arm: str, baseline: str, step: int) -> np.ndarray:
    if arm == baseline:
        raise ValueError(f"arm and baseline are both {arm!r}")
    j = study.step_index(step)
    # Per (seed, problem) differences: resampling them resamples the arm and the baseline with
    # the same seed and problem indices -- the pairing.
    return study.arm(arm)[:, j, :] - study.arm(baseline)[:, j, :]


def hierarchical_bootstrap_ci(
    scores: Scores,
    arm: str,
    baseline: str,
    step: int,
    *,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
    problem_resampling: ProblemResampling = "shared",
) -> Interval:
    """Percentile interval of the mean paired difference (arm − baseline) at ``step``.

    Each of ``samples`` replicates draws S seeds with replacement, then N problems with
    replacement, takes the arm − baseline difference of the same seed on the same problem
    indices, and averages. ``problem_resampling="shared"`` (default) uses one problem draw for
    all the replicate's seeds, since every run answered the same problems; ``"per_seed"`` draws
    them afresh per resampled seed (the nested scheme; narrower, see the module docstring).
    ``resample_seeds=False`` keeps each seed once: the problems-only interval, which shows how
    much of the width is training noise. Deterministic given ``seed``.
    """
    study = _validate(scores)
    return _bootstrap_interval(
        _diff_matrix(study, arm, baseline, step),
        samples=samples,
        confidence=confidence,
        seed=seed,
        resample_seeds=resample_seeds,
        problem_resampling=problem_resampling,
        quantity="difference",
    )


def bootstrap_ci_single(
    scores: Scores,
    arm: str,
    step: int,
    *,
    samples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    resample_seeds: bool = True,
    problem_resampling: ProblemResampling = "shared",
) -> Interval:
    """Percentile interval of one arm's mean accuracy at ``step``, by the same two-level
    resampling as :func:`hierarchical_bootstrap_ci`."""
    study = _validate(scores)
    j = study.step_index(step)
    return _bootstrap_interval(
        study.arm(arm)[:, j, :],
        samples=samples,
        confidence=confidence,
        seed=seed,
        resample_seeds=resample_seeds,
        problem_resampling=problem_resampling,
        quantity="accuracy",
    )


# --------------------------------------------------------------------------------------------
# Student-t over seeds


def t_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Student-t interval of the mean of per-seed values: mean ± t_{1−α/2, n−1} · sd / √n, with
    the sample sd (ddof 1). One value has no spread to estimate: the interval is (−∞, +∞) with a
    note saying so, not a made-up width."""
    _check_confidence(confidence)
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        raise ValueError("a t interval needs at least one value")
    if not np.all(np.isfinite(x)):
        raise ValueError("t_interval values must be finite")
    mean = float(x.mean())
    n = int(x.size)
    if n == 1:
        return Interval(
            estimate=mean,
            low=-math.inf,
            high=math.inf,
            confidence=confidence,
            method="t over seeds",
            n=1,
            note="cannot be computed: one seed gives no estimate of the seed-to-seed spread",
        )
    sd = float(x.std(ddof=1))
    half = student_t_quantile(1.0 - (1.0 - confidence) / 2.0, n - 1) * sd / math.sqrt(n)
    note = "the seeds agree exactly, so the interval has zero width" if sd == 0.0 else None
    return Interval(
        estimate=mean,
        low=mean - half,
        high=mean + half,
        confidence=confidence,
        method="t over seeds",
        n=n,
        note=note,
    )


# --------------------------------------------------------------------------------------------
# Steps to threshold


def steps_to_threshold(curve: Mapping[int, float], threshold: float) -> int | None:
    """The first evaluation step (ascending) whose value is ≥ ``threshold``; None if none is.

    Ties count as reached, up to 1e-12, because the threshold is usually another arm's mean and
    equal accuracies computed by different sums may differ in the last bit."""
    if not curve:
        raise ValueError("the curve has no evaluation steps")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    for step in sorted(curve):
        value = curve[step]
        if not math.isfinite(value):
            raise ValueError(f"the curve's value at step {step} is not finite: {value!r}")
        if value >= threshold - _THRESHOLD_TOLERANCE:
            return step
    return None


def _threshold_steps(study: _Study, baseline: str) -> ThresholdSteps:
    final = study.steps[-1]
    threshold = _mean_curve(study, baseline)[final]
    steps = {arm: steps_to_threshold(_mean_curve(study, arm), threshold) for arm in study.data}
    return ThresholdSteps(baseline=baseline, final_step=final, threshold=threshold, steps=steps)


def steps_to_match_baseline(scores: Scores, baseline: str = "grpo") -> ThresholdSteps:
    """For every arm (the baseline included), :func:`steps_to_threshold` of its mean-accuracy
    curve with threshold = the baseline's mean accuracy at the last evaluation step."""
    return _threshold_steps(_validate(scores), baseline)


# --------------------------------------------------------------------------------------------
# Minimum detectable effect


def minimum_detectable_effect(
    per_seed_diffs: Sequence[float] | None = None,
    *,
    seed_sd: float | None = None,
    n_seeds: int | None = None,
    discordant_fraction: float | None = None,
    n_problems: int | None = None,
    confidence: float = 0.95,
    power: float = 0.8,
) -> float:
    """The smallest true mean difference that a two-sided test at level α = 1 − confidence would
    detect with probability ``power``: MDE = (q_{1−α/2} + q_{power}) · SE. Give exactly one basis:

    * ``per_seed_diffs`` (≥ 2 values), or ``seed_sd`` with ``n_seeds`` ≥ 2 — the seed level.
      SE = sd / √S with sd the sample sd of the per-seed paired differences, and q the Student-t
      quantiles with S − 1 df (the test this powers is the t test over seeds; with 3 seeds
      q_{0.975} + q_{0.8} = 4.303 + 1.061, not 1.960 + 0.842). The per-seed differences already
      carry the problem-sampling noise of each run, so N does not enter. Assumes the seed-level
      differences are roughly normal and treats the observed sd as the true one (a power
      calculation, not an interval); with seeds that agree exactly it is 0.
    * ``discordant_fraction`` d with ``n_problems`` N — one seed, the problem level. For 0/1
      scores the paired per-problem difference is −1, 0 or +1 and its variance is d − δ²; under
      the null (δ = 0) it is d, the fraction of problems the two arms answer differently, so
      SE = √(d / N) (McNemar's normal approximation) and q are normal quantiles. For scores in
      [0, 1] pass the mean squared per-problem difference instead. This ignores training noise
      entirely, which a single seed cannot measure: the real MDE is larger.
    """
    _check_confidence(confidence)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    given = [per_seed_diffs is not None, seed_sd is not None, discordant_fraction is not None]
    if sum(given) != 1:
        raise ValueError("give exactly one of per_seed_diffs, seed_sd or discordant_fraction")
    upper = 1.0 - (1.0 - confidence) / 2.0

    if discordant_fraction is not None:
        if n_problems is None or n_problems < 1:
            raise ValueError("discordant_fraction needs n_problems >= 1")
        if not 0.0 <= discordant_fraction <= 1.0:
            raise ValueError(f"discordant_fraction must lie in [0, 1], got {discordant_fraction}")
        z = NormalDist()
        return (z.inv_cdf(upper) + z.inv_cdf(power)) * math.sqrt(discordant_fraction / n_problems)

    if per_seed_diffs is not None:
        x = np.asarray(list(per_seed_diffs), dtype=np.float64)
        if n_seeds is not None and n_seeds != x.size:
            raise ValueError(f"n_seeds={n_seeds} but {x.size} per-seed differences were given")
        if x.size < 2:
            raise ValueError(
                "the seed-level MDE needs at least 2 seeds; with one, pass discordant_fraction "
                "and n_problems (problem-level MDE)"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("per_seed_diffs must be finite")
        sd, s = float(x.std(ddof=1)), int(x.size)
    else:
        assert seed_sd is not None
        if n_seeds is None or n_seeds < 2:
            raise ValueError("seed_sd needs n_seeds >= 2")
        if not (math.isfinite(seed_sd) and seed_sd >= 0.0):
            raise ValueError(f"seed_sd must be a non-negative number, got {seed_sd}")
        sd, s = seed_sd, n_seeds
    q = student_t_quantile(upper, s - 1) + student_t_quantile(power, s - 1)
    return q * sd / math.sqrt(s)


def _mde(
    study: _Study, arm: str, baseline: str, confidence: float, power: float
) -> DetectableEffect:
    diff = _diff_matrix(study, arm, baseline, study.steps[-1])
    if diff.shape[0] >= 2:
        value = minimum_detectable_effect(
            diff.mean(axis=1).tolist(), confidence=confidence, power=power
        )
        basis: Literal["seed_sd", "discordant"] = "seed_sd"
    else:
        # mean of squared differences = the discordant fraction for 0/1 scores
        value = minimum_detectable_effect(
            discordant_fraction=float(np.mean(diff**2)),
            n_problems=diff.shape[1],
            confidence=confidence,
            power=power,
        )
        basis = "discordant"
    return DetectableEffect(value=value, basis=basis, confidence=confidence, power=power)


# --------------------------------------------------------------------------------------------
# The whole study


def summarise(
    scores: Scores,
    baseline: str = "grpo",
    *,
    samples: int = 10_000,
    confidence: float = 0.95,
    power: float = 0.8,
    seed: int = 0,
    problem_resampling: ProblemResampling = "shared",
) -> StudyStats:
    """Every arm's final accuracy (bootstrap CI), per-seed final accuracies, mean curve and
    steps to the baseline's final accuracy; for every other arm the paired difference vs the
    baseline at every step (hierarchical bootstrap CI and t over seeds) and the final-step MDE.

    Every bootstrap uses ``seed`` itself, so each interval here is exactly what the public
    function returns for the same arguments, and is reproducible on its own."""
    study = _validate(scores)
    study.arm(baseline)  # a missing baseline fails here, naming the arms there are
    thresholds = _threshold_steps(study, baseline)
    final = study.steps[-1]
    j_final = study.steps.index(final)

    def boot(values: np.ndarray, quantity: Literal["difference", "accuracy"]) -> Interval:
        return _bootstrap_interval(
            values,
            samples=samples,
            confidence=confidence,
            seed=seed,
            resample_seeds=True,
            problem_resampling=problem_resampling,
            quantity=quantity,
        )

    arms: dict[str, ArmStats] = {}
    for arm in sorted(study.data):
        cube = study.data[arm]
        final_acc = boot(cube[:, j_final, :], "accuracy")
        comparisons: list[StepComparison] = []
        mde = None
        if arm != baseline:
            for pd in _paired_differences(study, arm, baseline):
                comparisons.append(
                    StepComparison(
                        step=pd.step,
                        per_seed=pd.per_seed,
                        mean=pd.mean,
                        bootstrap=boot(_diff_matrix(study, arm, baseline, pd.step), "difference"),
                        t=t_interval(list(pd.per_seed.values()), confidence),
                    )
                )
            mde = _mde(study, arm, baseline, confidence, power)
        arms[arm] = ArmStats(
            arm=arm,
            final_step=final,
            final_accuracy=final_acc,
            per_seed_final={
                s: float(cube[i, j_final, :].mean()) for i, s in enumerate(study.seeds)
            },
            curve=_mean_curve(study, arm),
            steps_to_threshold=thresholds.steps[arm],
            comparisons=comparisons,
            mde=mde,
        )
    return StudyStats(
        baseline=baseline,
        seeds=study.seeds,
        steps=study.steps,
        n_problems=len(study.problems),
        confidence=confidence,
        samples=samples,
        seed=seed,
        threshold=thresholds.threshold,
        arms=arms,
    )
