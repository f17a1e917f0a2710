"""The MLflow model registry: register a candidate, find the champion, record an approval and
move the alias. The only module that writes registry aliases."""

from __future__ import annotations

import contextlib
import logging
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from rlsd.gate import ApprovalRecord, GateDecision, final_outcome
from rlsd.gate.evidence import GateOutcome
from rlsd.gate.signing import SignedRecord
from rlsd.tracking import conventions as C

log = logging.getLogger("rlsd.tracking")


class StaleChampionError(RuntimeError):
    """The champion moved after the gate compared against it: the decision is stale."""


def champion_version(registered_model: str) -> Any | None:
    """The model version behind ``@champion`` (None when there is none yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(registered_model, C.CHAMPION)
    except MlflowException:
        return None


def download_version(version: Any, dest: Path) -> str:
    """A model version's Hugging Face folder (weights, tokenizer, processor) in a fresh
    ``dest``; returns its path. A logged MLflow model or a legacy artifact folder alike."""
    from rlsd.tracking.logged_model import download_hf_model

    return download_hf_model(version, dest)


def register_candidate(
    registered_model: str,
    pipeline_run_id: str,
    arm: str,
    train_run_id: str,
    model_dir: str | None,
    dataset_digest: str,
    metrics: dict[str, float] | None = None,
) -> Any:
    """Log the candidate as an MLflow model in its training run (transformers flavor, task
    ``llm/v1/chat``; a vision-language policy as a pyfunc: :mod:`rlsd.tracking.logged_model`)
    and register that logged model as a new version. ``metrics`` (its held-out scores) go on
    the logged model, linked to the run's training dataset."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from rlsd.tracking.logged_model import link_version, log_model_metrics, log_policy_model

    client = MlflowClient()
    if model_dir is None:
        raise ValueError(f"arm {arm!r} (run {train_run_id}) saved no final model")
    tags = {
        C.PIPELINE_RUN: pipeline_run_id,
        C.TRAIN_RUN: train_run_id,
        C.CANDIDATE_ARM: arm,
        C.DATASET_DIGEST: dataset_digest,
    }
    description = f"{arm} arm of pipeline run {pipeline_run_id}"
    info = log_policy_model(model_dir, train_run_id, tags=tags, description=description)
    log_model_metrics(info.model_id, client.get_run(train_run_id), metrics or {})
    with contextlib.suppress(MlflowException):  # it exists
        client.create_registered_model(
            registered_model,
            description="Policies retrained by the rlsd pipeline (RLSD beside a GRPO control).",
        )
    mv = client.create_model_version(
        registered_model,
        info.model_uri,  # models:/<model id>: the version's source is the logged model
        run_id=train_run_id,
        tags={**tags, C.GATE_DECISION: "pending"},
        description=description,
        model_id=info.model_id,
    )
    link_version(info.model_id, registered_model, str(mv.version))
    return mv


def tag_version(registered_model: str, version: str, tags: dict[str, str]) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(registered_model, version, k, v)


def mark_rejected(registered_model: str, version: str) -> None:
    """A version whose gate failed: its outcome is reject and the alias does not move."""
    tag_version(registered_model, version, {C.GATE_OUTCOME: "reject"})


def promote(
    registered_model: str,
    gate: GateOutcome,
    approval: ApprovalRecord,
    signature: SignedRecord | None = None,
    *,
    lock: AbstractContextManager[Any] | None = None,
) -> str:
    """Record the approval; if the outcome is promote, move ``champion`` (and keep the previous
    one as ``previous-champion``). Returns "promote" or "reject".

    ``lock`` serialises alias moves for this registered model across processes (the flow
    passes a Prefect global concurrency slot). Inside it, the current champion must still be
    the one the gate compared against: otherwise two gates racing on stale information could
    both move the alias, and the later one raises instead.
    """
    from mlflow import MlflowClient

    decision = GateDecision.model_validate_json(gate.decision_json)
    outcome = final_outcome(decision, approval)
    client = MlflowClient()
    name, version = registered_model, gate.version
    client.log_text(gate.run_id, approval.model_dump_json(indent=2), C.APPROVAL_JSON)
    if signature is not None:
        client.log_text(gate.run_id, signature.model_dump_json(indent=2), C.APPROVAL_SIG)
    tags = {
        C.APPROVAL_DECISION: approval.decision,
        C.APPROVAL_APPROVER: approval.approver,
        C.APPROVAL_REASON: approval.reason[:5000],
        C.APPROVAL_AT: approval.at.isoformat(),
        C.APPROVAL_MODE: approval.mode,
        C.GATE_OUTCOME: outcome,
    }
    for k, v in tags.items():
        client.set_model_version_tag(name, version, k, v)
        client.set_tag(gate.run_id, k, v)
    if outcome != "promote":
        return outcome
    with lock if lock is not None else nullcontext():
        current = champion_version(name)
        current_id = str(current.version) if current is not None else None
        if current_id != gate.champion_version:
            client.set_model_version_tag(name, version, C.GATE_OUTCOME, "stale")
            raise StaleChampionError(
                f"{name}: champion is version {current_id}, but the gate compared version "
                f"{version} with {gate.champion_version}; run the gate again"
            )
        if current_id is not None:
            client.set_registered_model_alias(name, C.PREVIOUS_CHAMPION, current_id)
        client.set_registered_model_alias(name, C.CHAMPION, version)
    log.info("%s version %s is now @%s", name, version, C.CHAMPION)
    return outcome
