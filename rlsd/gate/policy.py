"""The promotion policy: what a candidate must show before a human is asked to promote it.

A policy file is YAML (see ``policies/promotion.yaml`` for the documented defaults)::

    version: 1
    primary_metric: heldout_accuracy
    confidence: 0.95
    bootstrap_samples: 5000
    bootstrap_seed: 20240601
    min_gain_over_control: -0.02
    min_gain_over_champion: 0.0
    max_domain_regression: 0.05
    min_domain_tasks: 20
    require_verifiers_ready: true
    require_validation_passed: true
    require_docker_sandbox: true
    approval: {required: true, timeout_s: 86400, on_timeout: reject}

:func:`load_policy` reads and validates one (with optional ``field.sub=value`` overrides, so a
demo can relax a rule without a second file -- the override changes :func:`policy_digest`, and
the decision document shows the digest, so a relaxed policy is never mistaken for the real one).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from rlsd.configs.loading import load_yaml_model

NonEmpty = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class PolicyError(ValueError):
    """A promotion policy file (or an override) is invalid; the message names file, field, value."""


class ApprovalPolicy(BaseModel):
    """The human step that follows a passing gate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    required: bool = Field(
        default=True,
        description="Pause for a human decision; when false the pipeline records an auto approval.",
    )
    timeout_s: int = Field(
        default=86_400, gt=0, description="How long a passing gate waits for the human decision."
    )
    on_timeout: Literal["reject"] = Field(
        default="reject",
        description="What an unanswered request becomes; only 'reject': silence never promotes.",
    )
    approvers: list[NonEmpty] = Field(
        default_factory=list,
        description="Who may approve or reject: names or shell-style patterns ('*@ml.example.com')"
        ". Empty: no human can decide, so a policy that requires approval must name someone.",
    )
    allow_self_approval: bool = Field(
        default=False,
        description="Whether whoever triggered the run may approve it (four-eyes rule when false).",
    )

    def allows_approver(self, approver: str) -> bool:
        """Whether ``approver`` is named by :attr:`approvers` (exact name or pattern, case-sensitive)."""
        return any(fnmatch.fnmatchcase(approver, p) for p in self.approvers)


class SigningPolicy(BaseModel):
    """Which key the gate's records must be signed with: the trust anchor of ``rlsd lineage``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    public_key: NonEmpty | None = Field(
        default=None,
        description="The Ed25519 public key that signs gate decisions and approvals: a PEM file "
        "(relative to the working directory) or 'ed25519:<base64 of the 32 raw bytes>'. None: "
        "records are unsigned and lineage reports them UNSIGNED.",
    )


class PromotionPolicy(BaseModel):
    """Rules a candidate must pass, each against the evidence of one retraining run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = Field(default=1, description="Schema version of the policy file.")
    primary_metric: str = Field(
        default="heldout_accuracy",
        min_length=1,
        pattern=r"^[A-Za-z0-9_./-]+$",
        description="The per-task eval score the gain rules compare (the evidence must name it).",
    )
    confidence: float = Field(
        default=0.95,
        gt=0.0,
        lt=1.0,
        description="Two-sided confidence of the bootstrap interval; gains use its lower bound.",
    )
    bootstrap_samples: int = Field(
        default=5000, ge=100, le=1_000_000, description="Paired bootstrap resamples."
    )
    bootstrap_seed: int = Field(
        default=20240601, ge=0, description="Seed, so a decision can be recomputed exactly."
    )
    min_gain_over_control: float = Field(
        default=-0.02,
        ge=-1.0,
        le=1.0,
        description="Least CI lower bound of candidate - control; negative = non-inferiority.",
    )
    min_gain_over_champion: float = Field(
        default=0.0,
        ge=-1.0,
        le=1.0,
        description="Least CI lower bound of candidate - champion; skipped when no champion.",
    )
    max_domain_regression: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="Largest drop of a domain's mean score vs control or champion (point estimate).",
    )
    min_domain_tasks: int = Field(
        default=20, ge=1, description="Domains with fewer eval tasks are reported, not gated."
    )
    require_verifiers_ready: bool = Field(
        default=True, description="Every verifier that gave reward or eval scores was 'ready'."
    )
    require_validation_passed: bool = Field(
        default=True, description="Data validation of every source passed."
    )
    require_docker_sandbox: bool = Field(
        default=True, description="Verifiers ran in the Docker sandbox (not local / in-process)."
    )
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    signing: SigningPolicy = Field(default_factory=SigningPolicy)

    @field_validator(
        "confidence", "min_gain_over_control", "min_gain_over_champion", "max_domain_regression"
    )
    @classmethod
    def _no_negative_zero(cls, v: float) -> float:
        # -0.0 and 0.0 are the same rule; without this they would have different digests.
        return v + 0.0


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the form every digest in the gate is taken of."""
    return json.dumps(
        data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def policy_digest(policy: PromotionPolicy) -> str:
    """sha256 of the policy's canonical JSON (defaults included: the *effective* policy)."""
    return hashlib.sha256(canonical_json(policy.model_dump(mode="json")).encode()).hexdigest()


def load_policy(
    path: Path | str, overrides: Mapping[str, Any] | list[str] | None = None
) -> PromotionPolicy:
    """Read and validate a promotion policy; errors name the file, the field and the value."""

    def error(file: Path, detail: str) -> PolicyError:
        return PolicyError(f"{file}: {detail}")

    return load_yaml_model(
        path, PromotionPolicy, what="promotion policy", error=error, overrides=overrides
    )


# How each rule field tightens: "higher" means a larger value is stricter. Fields not listed here
# (the metric, the bootstrap's samples and seed, the signing key) may not change at all per run:
# a new seed or metric is a different experiment, not a stricter one.
_TIGHTER: dict[str, Literal["higher", "lower"]] = {
    "confidence": "higher",
    "min_gain_over_control": "higher",
    "min_gain_over_champion": "higher",
    "max_domain_regression": "lower",
    "min_domain_tasks": "lower",  # a lower minimum gates more domains
    "require_verifiers_ready": "higher",
    "require_validation_passed": "higher",
    "require_docker_sandbox": "higher",
    "approval.required": "higher",
    "approval.timeout_s": "lower",
    "approval.allow_self_approval": "lower",
}


def loosened_fields(base: PromotionPolicy, effective: PromotionPolicy) -> list[str]:
    """The fields where ``effective`` is not at least as strict as ``base`` (empty: it only
    tightens). Approvers may only be removed; every other field must stay as it is."""
    flat_base = _flat(base.model_dump(mode="json"))
    flat_eff = _flat(effective.model_dump(mode="json"))
    out = []
    for key in sorted(set(flat_base) | set(flat_eff)):
        b, e = flat_base.get(key), flat_eff.get(key)
        if b == e:
            continue
        if not _at_least_as_strict(key, b, e):
            out.append(f"{key}: {b} -> {e}")
    return out


def _at_least_as_strict(key: str, base: Any, new: Any) -> bool:
    if key == "approval.approvers":
        return set(new or []) <= set(base or [])
    direction = _TIGHTER.get(key)
    if direction is None or base is None or new is None:
        return False
    return new >= base if direction == "higher" else new <= base


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out
