"""What each pipeline stage writes to MLflow: one function (or run context) per stage, in the
names :mod:`rlsd.tracking.lineage` reads back. Stages compute; these functions record.

Every stage runs in its own nested run of the pipeline run (:func:`stage_run`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlsd.tracking import conventions as C
from rlsd.tracking.runs import MlflowMetricsSink, configure, flatten_params, log_params, stage_run

if TYPE_CHECKING:
    from rlsd.context.snapshot import Snapshot
    from rlsd.context.stage import IngestOutcome
    from rlsd.gate import GateDecision, GateEvidence
    from rlsd.gate.evidence import GateOutcome
    from rlsd.gate.signing import SignedRecord
    from rlsd.train.arms import ArmOutcome
    from rlsd.train.config import TrainConfig
    from rlsd.train.heldout import EvalOutcome
    from rlsd.verify.stage import InventoryOutcome


def record_inventory(parent_run_id: str, out: InventoryOutcome) -> None:
    import mlflow

    inv = out.inventory
    with stage_run(parent_run_id, "verifier_inventory"):
        mlflow.log_artifact(out.path, "inventory")
        params: dict[str, Any] = {"sandbox": inv.sandbox, "backend": inv.backend, "root": inv.root}
        for r in inv.verifiers:
            red = r.redteam
            params[f"verifier.{r.name}.status"] = r.status
            params[f"verifier.{r.name}.spec_sha256"] = r.spec_sha256 or ""
            params[f"verifier.{r.name}.image_id"] = r.image_id or ""
            params[f"verifier.{r.name}.redteam"] = red.summary() if red else "not run"
            params[f"verifier.{r.name}.redteam_hacks"] = red.size if red else 0
            params[f"verifier.{r.name}.redteam_classes"] = len(red.classes) if red else 0
            if red and red.breaches:
                params[f"verifier.{r.name}.redteam_breaches"] = "; ".join(red.breaches)[:480]
        log_params(params)
        mlflow.set_tags({C.SANDBOX: inv.sandbox})
        mlflow.log_metrics({f"verifiers_{k}": float(v) for k, v in inv.counts().items()})


def dataset_entity(snapshot: Snapshot) -> Any:
    """The snapshot as an MLflow dataset: student-side columns only, digest = the snapshot's."""
    import mlflow
    import pandas as pd

    from rlsd.context.reader import privileged_digest

    frame = pd.DataFrame(
        [
            {
                "id": t.id,
                "split": t.split,
                "domain": t.metadata.get("domain"),
                "verifier": t.verifier,
                "source": t.source,
                "privileged_sha256": privileged_digest(t.privileged_context),
            }
            for t in snapshot.tasks
        ]
    )
    m = snapshot.manifest
    with warnings.catch_warnings():
        # a local path matches two equivalent source types; MLflow picks one and says so
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(
            frame,
            source=str(snapshot.path.resolve()),
            name=m.name,
            digest=m.digest.removeprefix("sha256:")[:32],
        )


def record_ingest(parent_run_id: str, out: IngestOutcome) -> None:
    import mlflow

    snap, m = out.snapshot, out.snapshot.manifest
    # this ingestion's evidence: the snapshot's own, or -- tasks unchanged, quarantine changed --
    # the folder kept beside it (the snapshot's would hide the new bad rows)
    evidence = Path(out.evidence_dir) if out.evidence_dir else snap.path
    with stage_run(parent_run_id, "ingest_context"):
        mlflow.log_artifact(str(snap.path / "manifest.json"), C.DATASET_DIR)
        for sub in ("validation", "quarantine"):
            if (evidence / sub).exists():
                mlflow.log_artifacts(str(evidence / sub), f"{C.DATASET_DIR}/{sub}")
        if (evidence / "evidence.json").exists():
            mlflow.log_artifact(str(evidence / "evidence.json"), C.DATASET_DIR)
        if out.store_privileged_text:
            mlflow.log_artifact(str(snap.path / "privileged.jsonl"), C.DATASET_DIR)
        mlflow.log_input(dataset_entity(snap), context="training")
        mlflow.set_tags({C.DATASET_DIGEST: m.digest})
        log_params(
            {
                "snapshot": str(snap.path),
                "digest": m.digest,
                "sources_file": str(out.sources_file),
                "sources_sha256": m.sources_file.sha256,
                "data_policy": str(out.policy_path),
                "data_policy_digest": m.policy.digest,
                "store_privileged_text": str(out.store_privileged_text),
                "ingest_status": out.status or ("new" if out.created else "unchanged"),
                "quarantine_sha256": out.quarantine_sha256,
            }
        )
        mlflow.log_metrics(
            {
                "tasks": float(m.counts.tasks),
                "train": float(m.counts.train),
                "heldout": float(m.counts.heldout),
                # this ingestion's count, not the one the manifest kept from the first
                "quarantined": float(
                    out.quarantined if out.evidence_dir else m.validation.quarantined
                ),
            }
        )


@contextmanager
def train_run(
    parent_run_id: str, tcfg: TrainConfig, snapshot: Snapshot
) -> Iterator[tuple[str, MlflowMetricsSink]]:
    """The nested run of one training arm: its config, params and dataset input are logged
    before training starts; yields ``(run id, metrics sink)`` for the trainer."""
    import mlflow

    from rlsd.train.config import dump_config

    arm = tcfg.algo.name
    tags = {C.DATASET_DIGEST: snapshot.manifest.digest}
    with stage_run(parent_run_id, "train", arm=arm, tags=tags) as run:
        mlflow.log_text(dump_config(tcfg), C.CONFIG_YAML)
        log_params(flatten_params(tcfg.model_dump(mode="json")))
        mlflow.log_input(dataset_entity(snapshot), context="training")
        yield run.info.run_id, MlflowMetricsSink(run.info.run_id)


def record_arm(out: ArmOutcome, method_has_credit: bool) -> None:
    """An arm's files, summary metrics and model provenance, on its (still active) run."""
    import mlflow

    from rlsd.tracking.credit_view import read_credit_samples, render_credit_html

    out_dir = Path(out.output_dir)
    mlflow.log_artifact(str(out_dir / "metrics.jsonl"), "metrics")
    mlflow.log_artifact(str(out_dir / "dataset.json"), "metrics")
    if (out_dir / "image_samples.png").exists():
        mlflow.log_artifact(str(out_dir / "image_samples.png"), "samples")
    credit = out_dir / "credit_samples.jsonl"
    if method_has_credit:
        # written even when no sampled response had a non-zero advantage (it says so)
        samples = read_credit_samples(credit) if credit.exists() else []
        html = render_credit_html(samples[:8], out_dir / "token_credit.html",
                                  title=f"RLSD token credit ({out.arm})")  # fmt: skip
        mlflow.log_artifact(str(html), "credit")
        if credit.exists():
            mlflow.log_artifact(str(credit), "credit")
    mlflow.log_metrics(out.summary.metrics())
    mlflow.set_tags({"rlsd.model_source": out.model_source, "rlsd.model_digest": out.model_digest})


def record_curves(parent_run_id: str, arms: list[ArmOutcome], run_dir: Path) -> list[str]:
    """The arms' training curves and phase times as PNGs on the pipeline run."""
    from mlflow import MlflowClient

    from rlsd.tracking.plots import PIPELINE_CURVE_METRICS, plot_phase_times, plot_training_curves

    files = {a.arm: Path(a.output_dir) / "metrics.jsonl" for a in arms}
    out = [
        plot_training_curves(
            files,
            run_dir / "training_curves.png",
            metrics=PIPELINE_CURVE_METRICS,
            title="RLSD vs GRPO (same snapshot, seeds, budget)",
        )
    ]
    phases = plot_phase_times(files, run_dir / "phase_times.png")
    if phases is not None:
        out.append(phases)
    client = MlflowClient()
    for p in out:
        client.log_artifact(parent_run_id, str(p), C.PLOTS_DIR)
    return [str(p) for p in out]


def record_evaluation(parent_run_id: str, out: EvalOutcome, model_path: str) -> EvalOutcome:
    """The evaluation's nested run (metrics, per-task table) and its accuracy on the pipeline
    run; returns the outcome with its run id."""
    import mlflow

    with stage_run(
        parent_run_id, "evaluate", arm=out.name, tags={"rlsd.evaluated": out.version}
    ) as run:
        metrics = {"accuracy": out.accuracy, "num_tasks": float(len(out.tasks))}
        metrics.update({f"accuracy.{d}": v for d, v in out.per_domain().items()})
        mlflow.log_metrics(metrics)
        cols = ("id", "domain", "passed", "score", "detail", "response")
        mlflow.log_table(
            {k: [r[k] for r in out.rows] for k in cols}, f"{C.EVAL_DIR}/{out.name}.json"
        )
        log_params({"model": model_path, "version": out.version, "eval_tasks": str(len(out.tasks))})
        run_id = run.info.run_id
    mlflow.MlflowClient().log_metric(parent_run_id, f"eval.{out.name}.accuracy", out.accuracy)
    return out.model_copy(update={"run_id": run_id})


def heldout_metrics(evidence: GateEvidence) -> dict[str, float]:
    """The candidate's held-out scores the gate judged (mean, and per domain), as the logged
    model's metrics: ``heldout_accuracy`` and ``heldout_accuracy.<domain>``."""
    scores, domains = evidence.candidate.scores(), evidence.candidate.domains()
    out = {evidence.metric: sum(scores.values()) / len(scores)}
    for d in sorted({d for d in domains.values() if d}):
        per = [s for k, s in scores.items() if domains[k] == d]
        out[f"{evidence.metric}.{d}"] = sum(per) / len(per)
    return out


def record_gate(
    parent_run_id: str,
    registered_model: str,
    candidate: ArmOutcome,
    dataset_digest: str,
    evidence: GateEvidence,
    decision: GateDecision,
    signature: SignedRecord | None,
    policy_path: str,
    policy_overrides: dict[str, Any],
    champion_version: str | None,
) -> GateOutcome:
    """Register the candidate as a new model version and record the gate's decision on the gate
    run, on the candidate's training run and as the version's tags."""
    import mlflow
    from mlflow import MlflowClient

    from rlsd.gate.evidence import GateOutcome
    from rlsd.tracking.registry import register_candidate, tag_version

    with stage_run(parent_run_id, "promotion_gate") as run:
        mv = register_candidate(
            registered_model, parent_run_id, candidate.arm, candidate.run_id,
            candidate.final_model_dir, dataset_digest, heldout_metrics(evidence),
        )  # fmt: skip
        mlflow.log_text(decision.to_json(), f"{C.GATE_DIR}/decision.json")
        mlflow.log_text(decision.to_markdown(), f"{C.GATE_DIR}/decision.md")
        mlflow.log_text(evidence.model_dump_json(indent=2), f"{C.GATE_DIR}/evidence.json")
        sig_json = signature.model_dump_json(indent=2) if signature is not None else None
        if sig_json is not None:
            mlflow.log_text(sig_json, C.DECISION_SIG)
        log_params(
            {
                "policy_path": policy_path,
                "policy_digest": decision.policy_digest,
                "policy_overrides": json.dumps(policy_overrides, sort_keys=True),
                "candidate_arm": candidate.arm,
                "model_version": str(mv.version),
                "champion_version": champion_version or "none",
            }
        )
        mlflow.log_metric("passed", float(decision.passed))
        client = MlflowClient()
        # the gate document also sits with the model version's own run (its weights' run)
        client.log_text(candidate.run_id, decision.to_markdown(), f"{C.GATE_DIR}/decision.md")
        client.log_text(candidate.run_id, decision.to_json(), f"{C.GATE_DIR}/decision.json")
        if sig_json is not None:
            client.log_text(candidate.run_id, sig_json, C.DECISION_SIG)
        tag_version(
            registered_model,
            str(mv.version),
            {
                C.GATE_DECISION: "passed" if decision.passed else "failed",
                C.GATE_POLICY_DIGEST: decision.policy_digest,
                C.GATE_DECISION_DIGEST: decision.digest(),
                C.GATE_RUN: run.info.run_id,
            },
        )
        run_id = run.info.run_id
    verdict = "PASSED" if decision.passed else "FAILED"
    return GateOutcome(
        decision_json=decision.to_json(),
        decision_sig_json=sig_json,
        passed=decision.passed,
        markdown=f"### Promotion gate: **{verdict}**\n\n" + decision.to_markdown(),
        run_id=run_id,
        version=str(mv.version),
        champion_version=champion_version,
    )


def _run_link(tracking: str, exp: str, run_id: str) -> str:
    if tracking.startswith("http"):
        return f"{tracking.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"
    return (
        f"mlflow-ui://experiments/{exp}/runs/{run_id} (store {tracking}; "
        f"`mlflow ui --backend-store-uri {tracking}`)"
    )


@contextmanager
def parent_run(
    experiment: str,
    config_json: str,
    name: str,
    flow_run_id: str,
    flow_run_url: str,
    auto_approve: bool,
) -> Iterator[tuple[str, str, str, str]]:
    """The pipeline's parent run, its config and environment logged; yields ``(run id,
    experiment id, tracking URI, a link to the run)``, the URI's password masked."""
    import mlflow

    from rlsd.tracking.runs import (
        configure,
        environment_tags,
        experiment_id,
        log_json,
        package_versions,
    )
    from rlsd.uris import mask_uri

    configure()
    exp = experiment_id(experiment)
    tags = {
        C.KIND: "pipeline",
        C.PREFECT_FLOW_RUN: flow_run_id,
        C.PREFECT_FLOW_RUN_URL: mask_uri(flow_run_url),  # an API URL may carry a password
        C.AUTO_APPROVE: str(auto_approve).lower(),
        **environment_tags(),
    }
    with mlflow.start_run(experiment_id=exp, run_name=name, tags=tags) as run:
        run_id = run.info.run_id
        mlflow.log_text(config_json, "config/pipeline.json")
        log_json(package_versions(), C.ENVIRONMENT_JSON)
        # masked: callers only show it (the flow's output, the link artifact); MLflow keeps
        # the real one
        tracking = mask_uri(mlflow.get_tracking_uri())
        yield run_id, exp, tracking, _run_link(tracking, exp, run_id)


def record_pipeline_outcome(
    registered_model: str, version: str, outcome: str, winner: str, policy_path: str | None = None
) -> None:
    """The outcome as tags of the (active) parent run, and the lineage report read back from
    MLflow itself as its artifact (verified against the run's own promotion policy file)."""
    import mlflow

    from rlsd.tracking.lineage import lineage_markdown, load_trust

    mlflow.set_tags({C.GATE_OUTCOME: outcome, "rlsd.model_version": version,
                     "rlsd.winner_arm": winner})  # fmt: skip
    text = lineage_markdown(f"{registered_model}/{version}", load_trust(policy_path))
    mlflow.log_text(text, C.LINEAGE_MD)


def _find_or_create_run(client: Any, experiment_id: str, tags: dict[str, str], name: str) -> str:
    """The run carrying exactly these ``tags`` (a later process continues it), else a new one."""
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    found = client.search_runs([experiment_id], filter_string=filt, max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


@contextmanager
def study_run(
    experiment: str, study: str, design_digest: str, design_json: str, arm: str, seed: int
) -> Iterator[tuple[MlflowMetricsSink, ...]]:
    """The nested MLflow run of one study run (arm x seed) under the study's parent run; both
    are found again by their tags, so a study resumed in another process logs to the same runs.
    Yields the metric sinks for the trainer."""
    import mlflow
    from mlflow import MlflowClient

    configure()
    client = MlflowClient()
    exp = mlflow.set_experiment(experiment).experiment_id
    base = {C.KIND: "study", "rlsd.study": study, "rlsd.study.design_sha256": design_digest}
    parent = _find_or_create_run(client, exp, base, f"study {study}")
    if not client.list_artifacts(parent, "design"):
        client.log_text(parent, design_json, "design/design.json")
    child_tags = {**base, C.KIND: "study_run", C.ARM: arm, "rlsd.study.seed": str(seed),
                  "mlflow.parentRunId": parent}  # fmt: skip
    run_id = _find_or_create_run(client, exp, child_tags, f"{arm} seed {seed}")
    client.update_run(run_id, "RUNNING")
    try:
        yield (MlflowMetricsSink(run_id),)
    except BaseException:
        client.set_terminated(run_id, "KILLED")
        raise
    client.set_terminated(run_id, "FINISHED")


def record_study_report(experiment: str, study: str, design_digest: str, study_dir: Path) -> None:
    """The study's report and plots as artifacts of its parent run."""
    import mlflow
    from mlflow import MlflowClient

    configure()
    client = MlflowClient()
    exp = mlflow.set_experiment(experiment).experiment_id
    base = {C.KIND: "study", "rlsd.study": study, "rlsd.study.design_sha256": design_digest}
    parent = _find_or_create_run(client, exp, base, f"study {study}")
    if (study_dir / "report.md").exists():
        client.log_artifact(parent, str(study_dir / "report.md"))
    if (study_dir / "plots").exists():
        client.log_artifacts(parent, str(study_dir / "plots"), "plots")
