"""Evaluate a promotion policy against the evidence of one retraining run.

:func:`evaluate_gate` is pure: evidence in, :class:`GateDecision` out, no I/O and no clock (the
caller passes ``now``), so a decision can be recomputed from the two documents it names by digest.
Every rule yields one :class:`RuleResult`, in a fixed order:

* ``gain_over_control`` / ``gain_over_champion``: lower bound of the paired-bootstrap interval of
  candidate - baseline (mean primary metric) against ``min_gain_over_*``;
* ``domain_regression_vs_control`` / ``domain_regression_vs_champion``: the largest drop of a
  domain's mean (point estimate) against ``max_domain_regression``, for domains with at least
  ``min_domain_tasks`` tasks;
* ``verifiers_ready``, ``validation_passed``, ``docker_sandbox``: provenance of the scores.

With no champion yet (the first promotion of a model) the champion rules are *skipped*: they pass
and say so, since there is nothing in production to regress from; the control rules still hold.
A ``require_*`` switched off also yields a skipped rule that still shows what was observed.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from rlsd.gate.bootstrap import (
    BootstrapCI,
    TaskMismatchError,
    check_same_tasks,
    domain_means,
    paired_bootstrap,
)
from rlsd.gate.policy import PromotionPolicy, canonical_json, loosened_fields, policy_digest

# Scores are means of a few dozen 0/1 values: 15/20 - 16/20 is -0.05000000000000004, which must
# not fail a 0.05 threshold. Comparisons allow this much slack (far below one task in 10^6).
_EPS = 1e-9

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Scalar = bool | int | float | str | None


class GateInputError(ValueError):
    """The evidence cannot be judged by this policy (wrong metric, arms on different tasks)."""


# --------------------------------------------------------------------------------- evidence
class TaskScore(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    score: float
    domain: NonEmpty


class ArmEval(BaseModel):
    """One model's per-task eval results on the held-out split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: NonEmpty = Field(description="Model identifier, e.g. a registry version or run id.")
    tasks: dict[str, TaskScore] = Field(min_length=1, description="task id -> score and domain.")

    def scores(self) -> dict[str, float]:
        return {k: v.score for k, v in self.tasks.items()}

    def domains(self) -> dict[str, str]:
        return {k: v.domain for k, v in self.tasks.items()}


class SourceCheck(BaseModel):
    """Validation outcome of one data source."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    n_rows: int | None = Field(default=None, ge=0)
    n_quarantined: int | None = Field(default=None, ge=0)
    detail: str = ""


class ValidationSummary(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    sources: dict[str, SourceCheck] = Field(default_factory=dict)


class GateEvidence(BaseModel):
    """What the gate judges: eval results and the provenance of the scores."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: NonEmpty = Field(description="Name of the per-task score, e.g. 'heldout_accuracy'.")
    candidate: ArmEval
    control: ArmEval
    champion: ArmEval | None = Field(default=None, description="None before the first promotion.")
    verifiers: dict[str, NonEmpty] = Field(
        description="Verifiers used -> inventory status ('ready', 'quarantined', ...)."
    )
    validation: ValidationSummary
    sandbox: NonEmpty = Field(description="'docker', 'local-bwrap', 'in-process'.")
    collected_at: AwareDatetime | None = None
    # What the scores came from, by digest, so the signed decision binds them (None in evidence
    # recorded before these fields existed, and in unit tests that judge scores alone).
    snapshot_digest: str | None = Field(default=None, description="The training data snapshot.")
    inventory_digest: str | None = Field(
        default=None, description="sha256 of the verifier inventory document (inventory.json)."
    )
    triggered_by: str | None = Field(
        default=None, description="Who started the run (for the four-eyes approval rule)."
    )


def evidence_digest(evidence: GateEvidence) -> str:
    return hashlib.sha256(canonical_json(evidence.model_dump(mode="json")).encode()).hexdigest()


# --------------------------------------------------------------------------------- decision
class RuleResult(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    passed: bool
    skipped: bool = False
    observed: Scalar = Field(description="The value the rule compared.")
    threshold: Scalar = Field(description="The policy value it was compared with.")
    requirement: str = Field(description="The comparison, e.g. 'CI lower bound >= -0.020'.")
    explanation: str = Field(description="One line for a reviewer.")
    details: dict[str, Scalar] = Field(default_factory=dict)

    @property
    def status(self) -> str:
        return "SKIP" if self.skipped else ("PASS" if self.passed else "FAIL")


class DomainRow(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    domain: str
    n: int
    gated: bool
    candidate: float
    control: float
    champion: float | None = None
    delta_control: float
    delta_champion: float | None = None


class GateDecision(BaseModel):
    """The decision document: every rule with its numbers, and what it was computed from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    rules: list[RuleResult]
    domains: list[DomainRow]
    primary_metric: str
    candidate: str
    control: str
    champion: str | None
    policy: PromotionPolicy
    policy_digest: str
    evidence_digest: str
    decided_at: AwareDatetime
    evidence_collected_at: AwareDatetime | None = None
    # the policy as deployed (before per-run overrides) and the digest a deployment pinned
    base_policy_digest: str | None = None
    pinned_policy_digest: str | None = None
    snapshot_digest: str | None = None
    inventory_digest: str | None = None
    triggered_by: str | None = None

    def rule(self, name: str) -> RuleResult:
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(f"no rule {name!r}; rules: {[r.name for r in self.rules]}")

    @property
    def failed_rules(self) -> list[str]:
        return [r.name for r in self.rules if not r.passed]

    def digest(self) -> str:
        """sha256 of the document; an approval names it to say what exactly was approved."""
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> GateDecision:
        return cls.model_validate_json(text)

    def to_markdown(self) -> str:
        return _render_markdown(self)


# --------------------------------------------------------------------------------- rules
def _signed(x: float) -> str:
    return f"{x + 0.0:+.3f}"  # + 0.0 turns -0.0 into 0.0


def _domain_requirement(policy: PromotionPolicy) -> str:
    return (
        f"largest domain drop <= {policy.max_domain_regression:.3f} "
        f"(domains with >= {policy.min_domain_tasks} tasks)"
    )


def _gain_rule(name: str, baseline: str, ci: BootstrapCI, threshold: float) -> RuleResult:
    passed = ci.lower >= threshold - _EPS
    pct = f"{ci.confidence:.0%}"
    verdict = ">=" if passed else "<"
    return RuleResult(
        name=name,
        passed=passed,
        observed=ci.lower,
        threshold=threshold,
        requirement=f"CI lower bound >= {_signed(threshold)}",
        explanation=(
            f"candidate - {baseline} = {_signed(ci.point)} ({pct} CI [{_signed(ci.lower)}, "
            f"{_signed(ci.upper)}], n={ci.n}); lower bound {_signed(ci.lower)} {verdict} "
            f"{_signed(threshold)} required"
        ),
        details={
            "point": ci.point,
            "lower": ci.lower,
            "upper": ci.upper,
            "n": ci.n,
            "confidence": ci.confidence,
            "samples": ci.samples,
        },
    )


def _skipped(name: str, requirement: str, explanation: str, observed: Scalar = None) -> RuleResult:
    return RuleResult(
        name=name,
        passed=True,
        skipped=True,
        observed=observed,
        threshold=None,
        requirement=requirement,
        explanation=explanation,
    )


def _domain_rule(
    name: str, baseline: str, deltas: dict[str, tuple[int, float]], policy: PromotionPolicy
) -> RuleResult:
    limit = policy.max_domain_regression
    requirement = _domain_requirement(policy)
    gated = {d: delta for d, (n, delta) in deltas.items() if n >= policy.min_domain_tasks}
    ungated = sorted(set(deltas) - set(gated))
    details: dict[str, Scalar] = {f"delta.{d}": delta for d, (_, delta) in deltas.items()}
    if not gated:
        return RuleResult(
            name=name,
            passed=True,
            skipped=True,
            observed=None,
            threshold=limit,
            requirement=requirement,
            explanation=(
                f"no domain has >= {policy.min_domain_tasks} eval tasks; reported, not gated "
                f"({', '.join(ungated)})"
            ),
            details=details,
        )
    worst = min(gated, key=lambda d: (gated[d], d))
    drop = max(0.0, -gated[worst])  # a domain that only improved dropped by 0, not by -x
    regressed = sorted(d for d, delta in gated.items() if -delta > limit + _EPS)
    passed = not regressed
    if passed:
        explanation = (
            f"worst domain vs {baseline}: {worst} {_signed(gated[worst])}; no gated domain "
            f"dropped more than {limit:.3f}"
        )
    else:
        listed = ", ".join(f"{d} {_signed(gated[d])}" for d in regressed)
        explanation = f"regressed vs {baseline} by more than {limit:.3f}: {listed}"
    if ungated:
        explanation += f"; not gated (< {policy.min_domain_tasks} tasks): {', '.join(ungated)}"
    details.update({"worst_domain": worst, "regressed": ", ".join(regressed)})
    return RuleResult(
        name=name,
        passed=passed,
        observed=drop,
        threshold=limit,
        requirement=requirement,
        explanation=explanation,
        details=details,
    )


def _verifiers_rule(policy: PromotionPolicy, ev: GateEvidence) -> RuleResult:
    name, requirement = "verifiers_ready", "every verifier used is 'ready' in the inventory"
    statuses = dict(sorted(ev.verifiers.items()))
    not_ready = [f"{v} ({s})" for v, s in statuses.items() if s != "ready"]
    observed = ", ".join(f"{v}={s}" for v, s in statuses.items()) or "none recorded"
    details: dict[str, Scalar] = dict(statuses)
    if not policy.require_verifiers_ready:
        return _skipped(
            name, requirement, f"not required by policy (observed: {observed})", observed
        )
    if not statuses:
        passed, explanation = False, "no verifiers recorded in the evidence: provenance unknown"
    elif not_ready:
        passed, explanation = False, f"not ready: {', '.join(not_ready)}"
    else:
        passed, explanation = True, f"all {len(statuses)} ready: {', '.join(statuses)}"
    return RuleResult(
        name=name,
        passed=passed,
        observed=observed,
        threshold="ready",
        requirement=requirement,
        explanation=explanation,
        details=details,
    )


def _validation_rule(policy: PromotionPolicy, ev: GateEvidence) -> RuleResult:
    name, requirement = "validation_passed", "data validation passed for every source"
    val = ev.validation
    failed = sorted(s for s, c in val.sources.items() if not c.passed)
    details: dict[str, Scalar] = {}
    for s, c in sorted(val.sources.items()):
        counts = f" ({c.n_quarantined}/{c.n_rows} quarantined)" if c.n_rows is not None else ""
        details[s] = ("passed" if c.passed else "failed") + counts
    if not policy.require_validation_passed:
        return _skipped(
            name, requirement, f"not required by policy (observed passed={val.passed})", val.passed
        )
    # A summary that says passed while a source says failed is contradictory: fail closed.
    passed = val.passed and not failed
    if passed:
        explanation = f"passed ({len(val.sources)} sources)"
    elif failed:
        explanation = f"failed sources: {', '.join(failed)}"
    else:
        explanation = "validation summary reports failure"
    return RuleResult(
        name=name,
        passed=passed,
        observed=passed,
        threshold=True,
        requirement=requirement,
        explanation=explanation,
        details=details,
    )


def _sandbox_rule(policy: PromotionPolicy, ev: GateEvidence) -> RuleResult:
    name, requirement = "docker_sandbox", "verifiers ran in the Docker sandbox"
    if not policy.require_docker_sandbox:
        return _skipped(
            name, requirement, f"not required by policy (observed: {ev.sandbox})", ev.sandbox
        )
    passed = ev.sandbox == "docker"
    return RuleResult(
        name=name,
        passed=passed,
        observed=ev.sandbox,
        threshold="docker",
        requirement=requirement,
        explanation=(
            "verifiers ran in Docker"
            if passed
            else f"verifiers ran in {ev.sandbox!r}; the policy requires 'docker'"
        ),
    )


def _policy_rule(policy: PromotionPolicy, base: PromotionPolicy, pinned: str | None) -> RuleResult:
    name = "policy_as_deployed"
    requirement = "the deployed policy (its pinned digest), per-run overrides only tightening it"
    problems = [f"loosened {f}" for f in loosened_fields(base, policy)]
    base_digest = policy_digest(base)
    if pinned is not None and base_digest != pinned:
        problems.insert(0, f"policy digest {base_digest[:12]}… is not the pinned {pinned[:12]}…")
    changed = policy_digest(policy) != base_digest
    if problems:
        explanation = "; ".join(problems)
    else:
        explanation = ("as pinned" if pinned else "no digest pinned") + (
            "; per-run overrides tighten it" if changed else "; no per-run overrides"
        )
    return RuleResult(
        name=name,
        passed=not problems,
        observed=base_digest,
        threshold=pinned,
        requirement=requirement,
        explanation=explanation,
    )


# --------------------------------------------------------------------------------- evaluation
def _check_inputs(policy: PromotionPolicy, ev: GateEvidence, now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise GateInputError("now must be timezone-aware (e.g. datetime.now(timezone.utc))")
    if ev.metric != policy.primary_metric:
        raise GateInputError(
            f"the evidence scores {ev.metric!r} but the policy gates on {policy.primary_metric!r}"
        )
    arms = [("candidate", ev.candidate), ("control", ev.control)]
    if ev.champion is not None:
        arms.append(("champion", ev.champion))
    for other_name, other in arms[1:]:
        check_same_tasks(ev.candidate.tasks, other.tasks, "candidate", other_name)
        differ = sorted(
            t for t, s in ev.candidate.tasks.items() if other.tasks[t].domain != s.domain
        )
        if differ:
            raise TaskMismatchError(
                f"candidate and {other_name} disagree on the domain of {len(differ)} tasks: "
                f"{differ[:10]}"
            )


def evaluate_gate(
    policy: PromotionPolicy,
    evidence: GateEvidence,
    *,
    now: datetime,
    base_policy: PromotionPolicy | None = None,
    pinned_policy_digest: str | None = None,
) -> GateDecision:
    """Judge the evidence by the policy; raises :class:`GateInputError` on unusable evidence.

    ``base_policy`` is the policy as deployed, before the run's overrides (``policy`` itself
    when None): an override that loosens it, or a deployed policy that is not the one pinned by
    ``pinned_policy_digest``, fails the ``policy_as_deployed`` rule, so the run cannot promote.
    """
    _check_inputs(policy, evidence, now)
    cand = evidence.candidate.scores()
    domains = evidence.candidate.domains()
    boot = {
        "confidence": policy.confidence,
        "samples": policy.bootstrap_samples,
        "seed": policy.bootstrap_seed,
    }
    rules: list[RuleResult] = []

    ctrl = evidence.control.scores()
    ci = paired_bootstrap(cand, ctrl, a_name="candidate", b_name="control", **boot)
    rules.append(_gain_rule("gain_over_control", "control", ci, policy.min_gain_over_control))

    champ = evidence.champion.scores() if evidence.champion is not None else None
    if champ is None:
        rules.append(
            _skipped(
                "gain_over_champion",
                f"CI lower bound >= {_signed(policy.min_gain_over_champion)}",
                "skipped: no champion (first promotion of this model)",
            )
        )
    else:
        ci = paired_bootstrap(cand, champ, a_name="candidate", b_name="champion", **boot)
        rules.append(
            _gain_rule("gain_over_champion", "champion", ci, policy.min_gain_over_champion)
        )

    dm_cand = domain_means(cand, domains)
    dm_ctrl = domain_means(ctrl, domains)
    dm_champ = domain_means(champ, domains) if champ is not None else None
    rows = [
        DomainRow(
            domain=d,
            n=m.n,
            gated=m.n >= policy.min_domain_tasks,
            candidate=m.mean,
            control=dm_ctrl[d].mean,
            champion=dm_champ[d].mean if dm_champ else None,
            delta_control=m.mean - dm_ctrl[d].mean,
            delta_champion=m.mean - dm_champ[d].mean if dm_champ else None,
        )
        for d, m in dm_cand.items()
    ]
    rules.append(
        _domain_rule(
            "domain_regression_vs_control",
            "control",
            {r.domain: (r.n, r.delta_control) for r in rows},
            policy,
        )
    )
    if dm_champ is None:
        rules.append(
            _skipped(
                "domain_regression_vs_champion",
                _domain_requirement(policy),
                "skipped: no champion (first promotion of this model)",
            )
        )
    else:
        rules.append(
            _domain_rule(
                "domain_regression_vs_champion",
                "champion",
                {r.domain: (r.n, r.delta_champion or 0.0) for r in rows},
                policy,
            )
        )

    rules += [
        _verifiers_rule(policy, evidence),
        _validation_rule(policy, evidence),
        _sandbox_rule(policy, evidence),
        _policy_rule(policy, base_policy or policy, pinned_policy_digest),
    ]
    return GateDecision(
        passed=all(r.passed for r in rules),
        rules=rules,
        domains=rows,
        primary_metric=policy.primary_metric,
        candidate=evidence.candidate.version,
        control=evidence.control.version,
        champion=evidence.champion.version if evidence.champion is not None else None,
        policy=policy,
        policy_digest=policy_digest(policy),
        evidence_digest=evidence_digest(evidence),
        decided_at=now,
        evidence_collected_at=evidence.collected_at,
        base_policy_digest=policy_digest(base_policy or policy),
        pinned_policy_digest=pinned_policy_digest,
        snapshot_digest=evidence.snapshot_digest,
        inventory_digest=evidence.inventory_digest,
        triggered_by=evidence.triggered_by,
    )


# --------------------------------------------------------------------------------- markdown
def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _delta(value: float | None) -> str:
    return "—" if value is None else _signed(value)


def _render_markdown(d: GateDecision) -> str:
    verdict = "PASSED" if d.passed else "FAILED"
    lines = [
        f"## Promotion gate: **{verdict}**",
        "",
        "| | |",
        "|---|---|",
        f"| candidate | `{_cell(d.candidate)}` |",
        f"| control | `{_cell(d.control)}` |",
        f"| champion | {f'`{_cell(d.champion)}`' if d.champion else 'none (first promotion)'} |",
        f"| primary metric | {_cell(d.primary_metric)} |",
        f"| decided at | {d.decided_at.isoformat()} |",
        f"| policy sha256 | `{d.policy_digest}` |",
        f"| evidence sha256 | `{d.evidence_digest}` |",
        f"| snapshot digest | `{_cell(d.snapshot_digest)}` |",
        f"| inventory sha256 | `{_cell(d.inventory_digest)}` |",
        f"| triggered by | {_cell(d.triggered_by)} |",
        "",
        "### Rules",
        "",
        "| rule | result | observed | requirement | explanation |",
        "|---|---|---|---|---|",
    ]
    for r in d.rules:
        lines.append(
            f"| {r.name} | **{r.status}** | {_cell(r.observed)} | {_cell(r.requirement)} "
            f"| {_cell(r.explanation)} |"
        )
    lines += [
        "",
        f"### Per-domain mean {_cell(d.primary_metric)}",
        "",
        "| domain | tasks | gated | candidate | control | Δ control | champion | Δ champion |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in d.domains:
        lines.append(
            f"| {_cell(row.domain)} | {row.n} | {_cell(row.gated)} | {row.candidate:.3f} "
            f"| {row.control:.3f} | {_delta(row.delta_control)} | {_cell(row.champion)} "
            f"| {_delta(row.delta_champion)} |"
        )
    lines.append("")
    approval = d.policy.approval
    if not d.passed:
        lines.append(f"Not promoted: failed rules {', '.join(d.failed_rules)}.")
    elif approval.required:
        who = ", ".join(approval.approvers) or "nobody (the policy names no approvers)"
        lines.append(
            f"Next: a human approval is required within {approval.timeout_s} s "
            f"(no answer means {approval.on_timeout}), from: {who}"
            + ("" if approval.allow_self_approval else "; not by whoever triggered the run")
            + "."
        )
    else:
        lines.append("Next: the policy does not require a human approval (recorded as auto).")
    return "\n".join(lines) + "\n"
