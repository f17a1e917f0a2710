"""Builders of gate evidence for the tests: three domains of 24 tasks, arms as score lists."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rlsd.gate import ArmEval, GateEvidence, PromotionPolicy, SourceCheck, ValidationSummary

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DOMAINS = ["arithmetic"] * 24 + ["gsm8k"] * 24 + ["humaneval"] * 24
N = len(DOMAINS)
# Control and champion: right on every other task (0.5 in every domain).
BASE = [float(i % 2 == 0) for i in range(N)]
# Candidate: right wherever the baseline is, and on every third task the baseline misses
# (0.5 + 4/24 = 0.667 per domain): a clear, consistent gain.
BETTER = [1.0 if (b or i % 6 == 1) else 0.0 for i, b in enumerate(BASE)]


def task_id(i: int) -> str:
    return f"t{i:03d}"


def arm(version: str, scores: Sequence[float], domains: Sequence[str] | None = None) -> ArmEval:
    domains = DOMAINS if domains is None else domains
    return ArmEval.model_validate(
        {
            "version": version,
            "tasks": {
                task_id(i): {"score": s, "domain": d}
                for i, (s, d) in enumerate(zip(scores, domains, strict=True))
            },
        }
    )


def with_scores(scores: Sequence[float], changes: dict[int, float]) -> list[float]:
    out = list(scores)
    for i, v in changes.items():
        out[i] = v
    return out


def evidence(**overrides: Any) -> GateEvidence:
    """Evidence that passes the default policy; keyword arguments replace single fields."""
    fields: dict[str, Any] = {
        "metric": "heldout_accuracy",
        "candidate": arm("models:/rlsd-smollm2/8", BETTER),
        "control": arm("runs:/grpo-control-run/model", BASE),
        "champion": arm("models:/rlsd-smollm2/7", BASE),
        "verifiers": {"math-answer": "ready", "python-tests": "ready"},
        "validation": ValidationSummary(
            passed=True,
            sources={
                "demo-arithmetic": SourceCheck(passed=True, n_rows=200, n_quarantined=0),
                "demo-gsm8k": SourceCheck(passed=True, n_rows=300, n_quarantined=2),
            },
        ),
        "sandbox": "docker",
        "collected_at": NOW,
    }
    fields.update(overrides)
    return GateEvidence(**fields)


def policy(**overrides: Any) -> PromotionPolicy:
    """The default policy (the model defaults) with fewer resamples, for speed, and the
    approvers of the tests' organisation (the model's default names nobody)."""
    return PromotionPolicy(
        **{"bootstrap_samples": 1000, "approval": {"approvers": ["*@example.com"]}, **overrides}
    )
