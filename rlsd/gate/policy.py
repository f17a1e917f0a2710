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

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


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


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _parse_overrides(overrides: Mapping[str, Any] | list[str] | None) -> dict[str, Any]:
    if overrides is None:
        return {}
    if isinstance(overrides, Mapping):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise PolicyError(f"policy override {item!r} must look like field=value")
        k, v = item.split("=", 1)
        parsed[k.strip()] = yaml.safe_load(v)
    return parsed


def load_policy(
    path: Path | str, overrides: Mapping[str, Any] | list[str] | None = None
) -> PromotionPolicy:
    """Read and validate a promotion policy; errors name the file, the field and the value."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PolicyError(f"{path}: no such policy file") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    parsed = _parse_overrides(overrides)
    for key, value in parsed.items():
        _set_dotted(data, key, value)
    try:
        return PromotionPolicy.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: invalid promotion policy"]
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "<root>"
            msg = err["msg"].removeprefix("Value error, ")
            origin = " (from an override)" if field in parsed else ""
            if err["type"] == "extra_forbidden":
                model = ApprovalPolicy if field.startswith("approval.") else PromotionPolicy
                known = ", ".join(model.model_fields)
                msg = f"unknown field (known: {known})"
            lines.append(f"  {field}: {msg} (got {err.get('input')!r}){origin}")
        raise PolicyError("\n".join(lines)) from None
