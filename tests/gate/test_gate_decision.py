from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsd.gate import (
    GateDecision,
    GateInputError,
    SourceCheck,
    TaskMismatchError,
    ValidationSummary,
    evaluate_gate,
    evidence_digest,
    paired_bootstrap,
    policy_digest,
)
from tests.gate.factory import BASE, BETTER, DOMAINS, NOW, N, arm, evidence, policy, with_scores

RULES = [
    "gain_over_control",
    "gain_over_champion",
    "domain_regression_vs_control",
    "domain_regression_vs_champion",
    "verifiers_ready",
    "validation_passed",
    "docker_sandbox",
    "policy_as_deployed",
]


def _decide(**evidence_fields: object) -> GateDecision:
    return evaluate_gate(policy(), evidence(**evidence_fields), now=NOW)


def test_a_clear_improvement_passes_every_rule() -> None:
    d = _decide()
    assert d.passed and d.failed_rules == []
    assert [r.name for r in d.rules] == RULES
    assert all(r.passed and not r.skipped for r in d.rules)
    assert d.candidate == "models:/rlsd-smollm2/8"
    assert d.control == "runs:/grpo-control-run/model"
    assert d.champion == "models:/rlsd-smollm2/7"
    assert d.decided_at == NOW and d.evidence_collected_at == NOW
    assert d.policy_digest == policy_digest(policy())
    assert d.evidence_digest == evidence_digest(evidence())


def test_gain_rule_records_the_bootstrap_numbers() -> None:
    p, ev = policy(), evidence()
    rule = evaluate_gate(p, ev, now=NOW).rule("gain_over_control")
    ci = paired_bootstrap(
        ev.candidate.scores(),
        ev.control.scores(),
        confidence=p.confidence,
        samples=p.bootstrap_samples,
        seed=p.bootstrap_seed,
    )
    assert rule.observed == ci.lower and rule.threshold == p.min_gain_over_control
    assert rule.details["point"] == pytest.approx(12 / 72)
    assert rule.details == {
        "point": ci.point,
        "lower": ci.lower,
        "upper": ci.upper,
        "n": N,
        "confidence": 0.95,
        "samples": 1000,
    }
    assert f"{ci.point:+.3f}" in rule.explanation and f"{ci.lower:+.3f}" in rule.explanation


def test_a_candidate_worse_than_the_control_fails_the_control_rule() -> None:
    d = _decide(candidate=arm("cand", BASE), control=arm("ctrl", BETTER))
    rule = d.rule("gain_over_control")
    assert not rule.passed and not d.passed
    assert isinstance(rule.observed, float) and rule.observed < -0.02
    assert "< -0.020 required" in rule.explanation
    assert "gain_over_control" in d.failed_rules


def test_the_control_threshold_is_the_lower_bound_not_the_point() -> None:
    # One task better, none worse: point +1/72 > 0 but the interval reaches 0.
    cand = arm("cand", with_scores(BASE, {1: 1.0}))
    rule = _decide(candidate=cand, champion=None).rule("gain_over_control")
    assert rule.passed  # lower bound 0 >= -0.02
    strict = evaluate_gate(
        policy(min_gain_over_control=0.01), evidence(candidate=cand, champion=None), now=NOW
    ).rule("gain_over_control")
    assert strict.details["point"] == pytest.approx(1 / 72) and not strict.passed


def test_champion_rule_passes_and_fails_on_its_own() -> None:
    equal = _decide(champion=arm("champ", BETTER))
    rule = equal.rule("gain_over_champion")
    # identical to the champion: interval [0, 0], lower bound 0 >= 0 passes
    assert rule.passed and rule.observed == 0.0
    # the champion got three more tasks right, one per domain (no domain drops > 0.05)
    worse = _decide(champion=arm("champ", with_scores(BETTER, {3: 1.0, 27: 1.0, 51: 1.0})))
    rule = worse.rule("gain_over_champion")
    assert not rule.passed and worse.failed_rules == ["gain_over_champion"]
    assert rule.details["point"] == pytest.approx(-3 / 72)


def test_no_champion_skips_the_champion_rules_and_says_so() -> None:
    d = _decide(champion=None)
    assert d.passed and d.champion is None
    for name in ("gain_over_champion", "domain_regression_vs_champion"):
        rule = d.rule(name)
        assert rule.passed and rule.skipped and rule.status == "SKIP"
        assert rule.explanation.startswith("skipped: no champion")
    assert all(row.champion is None and row.delta_champion is None for row in d.domains)
    md = d.to_markdown()
    assert "none (first promotion)" in md and "skipped: no champion" in md


def _humaneval_drop(scores: list[float], k: int) -> list[float]:
    """Lose k humaneval tasks the arm got right."""
    right = [
        i
        for i, (s, dom) in enumerate(zip(scores, DOMAINS, strict=True))
        if s and dom == "humaneval"
    ]
    return with_scores(scores, dict.fromkeys(right[:k], 0.0))


def test_a_domain_regression_vs_the_control_is_detected_and_named() -> None:
    # Better overall (gains elsewhere) but humaneval loses 4 of 24 vs the control.
    cand = [
        1.0 if (dom != "humaneval" and (b or i % 6 == 1)) else b
        for i, (b, dom) in enumerate(zip(BASE, DOMAINS, strict=True))
    ]
    cand = _humaneval_drop(cand, 4)
    p = policy(min_gain_over_control=-0.1)  # the average gain is small: judge the domains only
    d = evaluate_gate(p, evidence(candidate=arm("cand", cand), champion=None), now=NOW)
    rule = d.rule("domain_regression_vs_control")
    assert not rule.passed and d.failed_rules == ["domain_regression_vs_control"]
    assert rule.observed == pytest.approx(4 / 24) and rule.threshold == 0.05
    assert rule.details["worst_domain"] == "humaneval"
    assert "humaneval -0.167" in rule.explanation
    row = next(r for r in d.domains if r.domain == "humaneval")
    assert row.delta_control == pytest.approx(-4 / 24) and row.gated


def test_a_domain_regression_vs_the_champion_is_detected() -> None:
    champ = arm("champ", BETTER)
    cand = arm("cand", _humaneval_drop(BETTER, 2))
    d = evaluate_gate(
        policy(min_gain_over_champion=-0.1), evidence(candidate=cand, champion=champ), now=NOW
    )
    assert d.failed_rules == ["domain_regression_vs_champion"]
    assert d.rule("domain_regression_vs_champion").observed == pytest.approx(2 / 24)


def test_domain_threshold_is_inclusive_despite_float_error() -> None:
    # 20 tasks, one lost: 15/20 - 16/20 is -0.05000000000000004 in floats; 0.05 allowed.
    domains = ["small"] * 20
    ctrl = [1.0] * 16 + [0.0] * 4
    cand = [1.0] * 15 + [0.0] * 5
    ev = evidence(candidate=arm("c", cand, domains), control=arm("k", ctrl, domains), champion=None)
    p = policy(min_gain_over_control=-1.0)
    assert evaluate_gate(p, ev, now=NOW).rule("domain_regression_vs_control").passed


def test_small_domains_are_reported_but_not_gated() -> None:
    cand = _humaneval_drop(BETTER, 6)
    d = evaluate_gate(
        policy(min_domain_tasks=25), evidence(candidate=arm("c", cand), champion=None), now=NOW
    )
    rule = d.rule("domain_regression_vs_control")
    assert rule.passed and rule.skipped and "not gated" in rule.explanation
    assert all(not row.gated for row in d.domains)
    assert any(row.delta_control < -0.05 for row in d.domains)  # still in the document


def test_verifiers_not_ready_fail_their_rule() -> None:
    d = _decide(verifiers={"math-answer": "ready", "sql-result": "quarantined"})
    rule = d.rule("verifiers_ready")
    assert d.failed_rules == ["verifiers_ready"]
    assert "sql-result (quarantined)" in rule.explanation
    assert rule.details == {"math-answer": "ready", "sql-result": "quarantined"}


def test_no_verifiers_recorded_fails_closed() -> None:
    d = _decide(verifiers={})
    assert d.failed_rules == ["verifiers_ready"]
    assert "no verifiers recorded" in d.rule("verifiers_ready").explanation


def test_failed_validation_fails_its_rule() -> None:
    val = ValidationSummary(
        passed=False,
        sources={
            "demo-arithmetic": SourceCheck(passed=True, n_rows=200, n_quarantined=0),
            "crm-tickets": SourceCheck(passed=False, n_rows=100, n_quarantined=30),
        },
    )
    d = _decide(validation=val)
    rule = d.rule("validation_passed")
    assert d.failed_rules == ["validation_passed"]
    assert rule.explanation == "failed sources: crm-tickets"
    assert rule.details["crm-tickets"] == "failed (30/100 quarantined)"


def test_a_failed_source_under_a_passed_summary_fails_closed() -> None:
    val = ValidationSummary(passed=True, sources={"s": SourceCheck(passed=False)})
    assert _decide(validation=val).failed_rules == ["validation_passed"]


def test_a_local_sandbox_fails_when_docker_is_required() -> None:
    d = _decide(sandbox="local-bwrap")
    rule = d.rule("docker_sandbox")
    assert d.failed_rules == ["docker_sandbox"]
    assert rule.observed == "local-bwrap" and rule.threshold == "docker"
    assert "local-bwrap" in rule.explanation


@pytest.mark.parametrize(
    ("switch", "field", "value", "rule"),
    [
        ("require_docker_sandbox", "sandbox", "in-process", "docker_sandbox"),
        ("require_verifiers_ready", "verifiers", {"v": "invalid"}, "verifiers_ready"),
        (
            "require_validation_passed",
            "validation",
            ValidationSummary(passed=False),
            "validation_passed",
        ),
    ],
)
def test_switched_off_requirements_are_skipped_but_show_what_was_seen(
    switch: str, field: str, value: object, rule: str
) -> None:
    d = evaluate_gate(policy(**{switch: False}), evidence(**{field: value}), now=NOW)
    r = d.rule(rule)
    assert d.passed and r.passed and r.skipped
    assert r.explanation.startswith("not required by policy (observed")


def test_markdown_shows_every_rule_its_status_and_the_domains() -> None:
    d = _decide(sandbox="local-bwrap", champion=None)
    md = d.to_markdown()
    assert "## Promotion gate: **FAILED**" in md
    for r in d.rules:
        assert f"| {r.name} | **{r.status}** |" in md
    for dom in ("arithmetic", "gsm8k", "humaneval"):
        assert f"| {dom} | 24 | yes |" in md
    assert d.policy_digest in md and d.evidence_digest in md
    assert "Not promoted: failed rules docker_sandbox." in md
    assert "human approval is required" in _decide().to_markdown()


def test_markdown_escapes_table_breaking_text() -> None:
    md = _decide(verifiers={"a|b": "quarantined\nreally"}).to_markdown()
    assert "a\\|b" in md and "quarantined really" in md


def test_json_round_trips_and_the_digest_is_stable() -> None:
    d = _decide()
    again = GateDecision.from_json(d.to_json())
    assert again == d and again.digest() == d.digest()
    assert _decide().digest() == d.digest()  # same inputs, same document
    assert _decide(sandbox="local-bwrap").digest() != d.digest()


def test_evidence_digest_follows_the_evidence() -> None:
    assert evidence_digest(evidence()) == evidence_digest(evidence())
    other = evidence(candidate=arm("models:/rlsd-smollm2/8", with_scores(BETTER, {1: 0.0})))
    assert evidence_digest(other) != evidence_digest(evidence())


def test_unusable_evidence_is_refused() -> None:
    with pytest.raises(
        GateInputError, match="'pass_at_1' but the policy gates on 'heldout_accuracy'"
    ):
        _decide(metric="pass_at_1")
    with pytest.raises(GateInputError, match="timezone-aware"):
        evaluate_gate(policy(), evidence(), now=datetime(2025, 6, 1))
    short = arm("ctrl", BASE[:-1], DOMAINS[:-1])
    with pytest.raises(TaskMismatchError, match=r"1 only in candidate: \['t071'\]"):
        _decide(control=short)
    with pytest.raises(TaskMismatchError, match="candidate and champion"):
        _decide(champion=short)
    moved = arm("ctrl", BASE, ["gsm8k"] + DOMAINS[1:])
    with pytest.raises(TaskMismatchError, match=r"disagree on the domain of 1 tasks: \['t000'\]"):
        _decide(control=moved)


@settings(max_examples=25, deadline=None)
@given(
    flips=st.lists(st.integers(0, N - 1), max_size=20),
    sandbox=st.sampled_from(["docker", "local-bwrap", "in-process"]),
    with_champion=st.booleans(),
)
def test_passed_is_exactly_all_rules_passed(
    flips: list[int], sandbox: str, with_champion: bool
) -> None:
    cand = with_scores(BETTER, {i: 1.0 - BETTER[i] for i in flips})
    d = _decide(
        candidate=arm("c", cand),
        sandbox=sandbox,
        champion=arm("champ", BASE) if with_champion else None,
    )
    assert d.passed == all(r.passed for r in d.rules)
    assert d.passed == (not d.failed_rules)
    assert [r.name for r in d.rules] == RULES
    assert d.rule("docker_sandbox").passed == (sandbox == "docker")
    assert all(r.passed for r in d.rules if r.skipped)


def test_a_per_run_override_that_loosens_the_policy_cannot_promote() -> None:
    deployed = policy()
    loosened = policy(min_gain_over_control=-0.5, require_docker_sandbox=False)
    d = evaluate_gate(loosened, evidence(), now=NOW, base_policy=deployed)
    rule = d.rule("policy_as_deployed")
    assert not d.passed and not rule.passed
    assert "loosened min_gain_over_control: -0.02 -> -0.5" in rule.explanation
    assert "loosened require_docker_sandbox" in rule.explanation
    tightened = policy(min_gain_over_control=0.0)
    d = evaluate_gate(tightened, evidence(), now=NOW, base_policy=deployed)
    assert d.rule("policy_as_deployed").passed
    assert "per-run overrides tighten it" in d.rule("policy_as_deployed").explanation


def test_a_policy_that_is_not_the_pinned_one_cannot_promote() -> None:
    from rlsd.gate import policy_digest

    deployed = policy()
    pinned = policy_digest(deployed)
    assert evaluate_gate(deployed, evidence(), now=NOW, pinned_policy_digest=pinned).passed
    other = policy(max_domain_regression=0.04)  # stricter, but not the file the deployment pinned
    d = evaluate_gate(other, evidence(), now=NOW, pinned_policy_digest=pinned)
    assert not d.passed and "is not the pinned" in d.rule("policy_as_deployed").explanation
    assert d.pinned_policy_digest == pinned and d.base_policy_digest == policy_digest(other)
