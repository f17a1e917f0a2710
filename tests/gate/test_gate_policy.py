from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from rlsd.gate import DEFAULT_POLICY, PolicyError, PromotionPolicy, load_policy, policy_digest
from rlsd.gate.policy import loosened_fields

REPO = Path(__file__).resolve().parents[2]
POLICY_FILE = REPO / DEFAULT_POLICY


def _write(tmp_path: Path, data: object, name: str = "promotion.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_the_repository_policy_loads_with_documented_defaults() -> None:
    policy = load_policy(POLICY_FILE)
    assert policy.primary_metric == "heldout_accuracy"
    assert policy.confidence == 0.95
    assert policy.min_gain_over_control == -0.02
    assert policy.min_gain_over_champion == 0.0
    assert policy.max_domain_regression == 0.05
    assert policy.min_domain_tasks == 20
    assert policy.require_verifiers_ready and policy.require_validation_passed
    assert policy.require_docker_sandbox
    assert policy.approval.required and policy.approval.on_timeout == "reject"
    # every field is written out in the file, none left to the model's defaults
    written = yaml.safe_load(POLICY_FILE.read_text())
    assert set(written) == set(PromotionPolicy.model_fields)


def test_the_file_and_the_model_defaults_agree() -> None:
    # so a policy written with fewer fields means what the repository file says; only who may
    # approve and the signing key are the file's own (the model's defaults name nobody)
    own = {"approval": {"approvers"}, "signing": True}
    file = load_policy(POLICY_FILE)
    assert file.model_dump(exclude=own) == PromotionPolicy().model_dump(exclude=own)
    assert file.approval.approvers and file.signing.public_key
    assert file.approval.required and not file.approval.allow_self_approval


def test_the_demo_policy_differs_from_production_only_where_it_says() -> None:
    demo = load_policy(POLICY_FILE.with_name("promotion-demo.yaml"))
    assert loosened_fields(load_policy(POLICY_FILE), demo) == [
        "approval.required: True -> False",
        "min_gain_over_control: -0.02 -> -0.1",
        "require_docker_sandbox: True -> False",
    ]


def test_loosened_fields_names_every_loosening_and_no_tightening() -> None:
    base = PromotionPolicy(approval={"approvers": ["a@x", "b@x"]})
    tighter = PromotionPolicy(
        min_gain_over_control=0.0, max_domain_regression=0.01, min_domain_tasks=5,
        confidence=0.99, approval={"approvers": ["a@x"], "timeout_s": 60},
    )  # fmt: skip
    assert loosened_fields(base, tighter) == []
    looser = PromotionPolicy(
        min_gain_over_champion=-0.1, require_docker_sandbox=False, bootstrap_seed=1,
        approval={"approvers": ["a@x", "c@x"], "allow_self_approval": True, "required": False},
    )  # fmt: skip
    assert [f.split(":")[0] for f in loosened_fields(base, looser)] == [
        "approval.allow_self_approval", "approval.approvers", "approval.required",
        "bootstrap_seed", "min_gain_over_champion", "require_docker_sandbox",
    ]  # fmt: skip


def test_an_empty_file_is_the_default_policy(tmp_path: Path) -> None:
    assert load_policy(_write(tmp_path, "")) == PromotionPolicy()


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("confidence", 1.5, "confidence"),
        ("bootstrap_samples", 10, "bootstrap_samples"),
        ("min_gain_over_control", 2.0, "min_gain_over_control"),
        ("max_domain_regression", -0.1, "max_domain_regression"),
        ("min_domain_tasks", 0, "min_domain_tasks"),
        ("primary_metric", "", "primary_metric"),
        ("version", 2, "version"),
    ],
)
def test_errors_name_the_file_field_and_value(
    tmp_path: Path, field: str, value: object, where: str
) -> None:
    path = _write(tmp_path, {field: value})
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert f"  {where} = {value!r}:" in msg


def test_nested_errors_name_the_dotted_field(tmp_path: Path) -> None:
    path = _write(tmp_path, {"approval": {"timeout_s": 0, "on_timeout": "promote"}})
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    msg = str(exc.value)
    assert "approval.timeout_s = 0:" in msg
    assert "approval.on_timeout = 'promote':" in msg


def test_unknown_fields_are_refused_with_the_known_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, {"min_gain_over_contrl": 0.1, "approval": {"requird": False}})
    with pytest.raises(PolicyError) as exc:
        load_policy(path)
    msg = str(exc.value)
    assert "min_gain_over_contrl = 0.1: unknown field" in msg and "min_gain_over_control" in msg
    assert (
        "approval.requird = False: unknown field (known: required, timeout_s, on_timeout, approvers, allow_self_approval)"
        in msg
    )


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="missing.yaml: no such file"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(_write(tmp_path, "confidence: [0.9"))
    with pytest.raises(PolicyError, match="top level must be a mapping, got list"):
        load_policy(_write(tmp_path, "- 1\n- 2\n"))


def test_overrides_apply_and_are_named_when_wrong() -> None:
    policy = load_policy(
        POLICY_FILE, ["min_gain_over_control=-0.15", "require_docker_sandbox=false"]
    )
    assert policy.min_gain_over_control == -0.15 and not policy.require_docker_sandbox
    policy = load_policy(POLICY_FILE, {"approval.required": False})
    assert not policy.approval.required and policy.approval.timeout_s == 86400
    with pytest.raises(PolicyError) as exc:
        load_policy(POLICY_FILE, {"confidence": 1.5})
    assert "confidence = 1.5:" in str(exc.value) and "(from an override)" in str(exc.value)
    with pytest.raises(
        PolicyError, match="override .confidence. must look like section.field=value"
    ):
        load_policy(POLICY_FILE, ["confidence"])


def test_the_policy_is_frozen() -> None:
    with pytest.raises(ValidationError):
        PromotionPolicy().confidence = 0.5  # type: ignore[misc]


def test_digest_is_stable_and_ignores_key_order(tmp_path: Path) -> None:
    a = _write(tmp_path, {"confidence": 0.9, "min_domain_tasks": 10}, "a.yaml")
    b = _write(tmp_path, "min_domain_tasks: 10\nconfidence: 0.9\n", "b.yaml")
    digest = policy_digest(load_policy(a))
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert policy_digest(load_policy(b)) == digest
    assert policy_digest(load_policy(a)) == digest
    # defaults count: the digest names the effective policy, not the text of the file
    file = load_policy(POLICY_FILE)
    same = PromotionPolicy(approval=file.approval, signing=file.signing)
    assert policy_digest(file) == policy_digest(same)


@pytest.mark.parametrize(
    "change",
    [
        {"min_gain_over_control": -0.03},
        {"bootstrap_seed": 1},
        {"require_docker_sandbox": False},
        {"approval": {"timeout_s": 3600}},
    ],
)
def test_digest_changes_when_a_field_changes(change: dict[str, object]) -> None:
    assert policy_digest(PromotionPolicy(**change)) != policy_digest(PromotionPolicy())


@settings(max_examples=50, deadline=None)
@given(x=st.floats(-1.0, 1.0, allow_nan=False), y=st.floats(-1.0, 1.0, allow_nan=False))
def test_digest_separates_any_two_gains(x: float, y: float) -> None:
    dx = policy_digest(PromotionPolicy(min_gain_over_champion=x))
    dy = policy_digest(PromotionPolicy(min_gain_over_champion=y))
    assert (dx == dy) == (x == y)


def test_negative_zero_is_zero() -> None:
    assert policy_digest(PromotionPolicy(min_gain_over_champion=-0.0)) == policy_digest(
        PromotionPolicy(min_gain_over_champion=0.0)
    )
