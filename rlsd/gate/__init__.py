"""Promotion gate: the policy, its evaluation against run evidence, and the approval record.

Pure code, no MLflow or Prefect: :func:`load_policy` reads ``policies/promotion.yaml``,
:func:`evaluate_gate` turns a :class:`GateEvidence` into a :class:`GateDecision` (one
:class:`RuleResult` per rule, rendered by ``to_markdown`` / ``to_json``), and
:func:`final_outcome` combines a decision with an :class:`ApprovalRecord`.
"""

from __future__ import annotations

from pathlib import Path

from rlsd.gate.approval import ApprovalError, ApprovalRecord, final_outcome
from rlsd.gate.bootstrap import (
    BootstrapCI,
    DomainMean,
    TaskMismatchError,
    domain_means,
    paired_bootstrap,
)
from rlsd.gate.decision import (
    ArmEval,
    DomainRow,
    GateDecision,
    GateEvidence,
    GateInputError,
    RuleResult,
    SourceCheck,
    TaskScore,
    ValidationSummary,
    evaluate_gate,
    evidence_digest,
)
from rlsd.gate.policy import (
    ApprovalPolicy,
    PolicyError,
    PromotionPolicy,
    load_policy,
    policy_digest,
)

#: The promotion policy of a checkout, relative to the repository root (the working directory).
DEFAULT_POLICY = Path("policies/promotion.yaml")

__all__ = [
    "DEFAULT_POLICY",
    "ApprovalError",
    "ApprovalPolicy",
    "ApprovalRecord",
    "ArmEval",
    "BootstrapCI",
    "DomainMean",
    "DomainRow",
    "GateDecision",
    "GateEvidence",
    "GateInputError",
    "PolicyError",
    "PromotionPolicy",
    "RuleResult",
    "SourceCheck",
    "TaskMismatchError",
    "TaskScore",
    "ValidationSummary",
    "domain_means",
    "evaluate_gate",
    "evidence_digest",
    "final_outcome",
    "load_policy",
    "paired_bootstrap",
    "policy_digest",
]
