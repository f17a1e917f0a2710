"""The pipeline's stages as plain functions; the Prefect flows in ``flows/`` only wire them.

Each stage runs inside its own nested MLflow run of the pipeline run and returns a small,
serialisable outcome (paths, digests, per-task scores) for the next stage.

inventory -> ingest -> train (candidate, control: same snapshot, seeds, budget)
          -> evaluate (base, control, candidate, current champion: same tasks, same verifiers)
          -> gate (policy decision document) -> approval -> promote (move the alias)
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsd.pipeline.config import PipelineConfig
from rlsd.tracking import conventions as C
from rlsd.tracking.runs import (
    MlflowMetricsSink,
    flatten_params,
    log_params,
    stage_run,
)

log = logging.getLogger("rlsd.pipeline")


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# inventory


def _ensure_base_image(backend: str, require_docker: bool) -> str:
    """Build the verifier base image once when an engine answers and it is missing.

    Returns the backend to use: a machine with an engine but no way to build the base image
    (no debootstrap) falls back to the local sandbox, loudly, unless Docker is required.
    """
    from rlsd.verify.images import ImageError, build_base

    try:
        import docker

        docker.from_env(timeout=5).ping()
    except Exception:  # noqa: BLE001 - no engine: make_sandbox decides (local, or an error)
        return backend
    try:
        build_base()
    except ImageError as exc:
        if require_docker or backend == "docker":
            raise
        log.warning("DOCKER ENGINE FOUND BUT THE BASE IMAGE CANNOT BE BUILT (%s): verifiers run "
                    "in the LOCAL sandbox", exc)  # fmt: skip
        return "local"
    return backend


@dataclass
class InventoryOutcome:
    path: str
    statuses: dict[str, str]
    sandbox: str  # the inventory's sandbox description, e.g. "docker (engine 20.10, ...)"
    markdown: str

    @property
    def sandbox_kind(self) -> str:
        return "docker" if self.sandbox.startswith("docker") else self.sandbox.split()[0]


def inventory_stage(cfg: PipelineConfig, parent_run_id: str, run_dir: Path) -> InventoryOutcome:
    """Build, check and self-test every verifier; register the ready ones in this process."""
    import mlflow

    from rlsd.paths import verifiers_root
    from rlsd.verify.inventory import register_inventory, run_inventory

    root = Path(cfg.verifiers_root) if cfg.verifiers_root else verifiers_root()
    backend = cfg.sandbox_backend
    if backend != "local":
        backend = _ensure_base_image(backend, cfg.require_docker)
    with stage_run(parent_run_id, "verifier_inventory"):
        inv = run_inventory(
            root,
            backend=backend,
            require_docker=cfg.require_docker,
            out=run_dir / "inventory.json",
        )
        register_inventory(inv)
        if not inv.sandbox.startswith("docker"):
            log.warning(
                "NO DOCKER ENGINE: verifiers run in the LOCAL sandbox (%s), not in containers; "
                "the gate records this",
                inv.sandbox,
            )
        mlflow.log_artifact(str(run_dir / "inventory.json"), "inventory")
        params = {"sandbox": inv.sandbox, "backend": inv.backend, "root": str(root)}
        for r in inv.verifiers:
            params[f"verifier.{r.name}.status"] = r.status
            params[f"verifier.{r.name}.spec_sha256"] = r.spec_sha256 or ""
            params[f"verifier.{r.name}.image_id"] = r.image_id or ""
            red = r.redteam
            params[f"verifier.{r.name}.redteam"] = red.summary() if red else "not run"
            params[f"verifier.{r.name}.redteam_hacks"] = red.size if red else 0
            params[f"verifier.{r.name}.redteam_classes"] = len(red.classes) if red else 0
            if red and red.breaches:
                params[f"verifier.{r.name}.redteam_breaches"] = "; ".join(red.breaches)[:480]
        log_params(params)
        mlflow.set_tags({C.SANDBOX: inv.sandbox})
        counts = inv.counts()
        mlflow.log_metrics({f"verifiers_{k}": float(v) for k, v in counts.items()})
    rows = [
        [r.name, r.version or "", r.status, r.backend, (r.spec_sha256 or "")[:12],
         (r.image_id or "").removeprefix("sha256:")[:12],
         f"{sum(s.ok for s in r.self_tests)}/{len(r.self_tests)}",
         r.redteam.summary() if r.redteam else "not run", r.reason[:120]]
        for r in inv.verifiers
    ]  # fmt: skip
    md = f"### Verifier inventory\n\nSandbox: **{inv.sandbox}**\n\n" + md_table(
        [
            "verifier",
            "version",
            "status",
            "backend",
            "spec sha256",
            "image",
            "self-tests",
            "red team",
            "reason",
        ],
        rows,
    )
    return InventoryOutcome(
        str(run_dir / "inventory.json"),
        {r.name: r.status for r in inv.verifiers},
        inv.sandbox,
        md,
    )


# --------------------------------------------------------------------------------------------
# ingest


@dataclass
class IngestOutcome:
    snapshot: str
    digest: str
    manifest: dict[str, Any]
    markdown: str


def ingest_stage(cfg: PipelineConfig, parent_run_id: str) -> IngestOutcome:
    """Sources -> validated, redacted, versioned snapshot; logged as an MLflow dataset input."""
    import mlflow
    import pandas as pd

    from rlsd.context import DEMO_SOURCES, build_demo_store
    from rlsd.context.ingest import ingest
    from rlsd.context.policy import default_policy_path, load_privileged_policy

    sources = Path(cfg.sources) if cfg.sources else DEMO_SOURCES
    if cfg.sources is None:
        store = Path(cfg.demo_store)
        if not store.exists():
            log.info("building the demo store at %s", store)
            build_demo_store(store)
        os.environ["RLSD_DEMO_STORE"] = str(store.resolve())
    policy_path = Path(cfg.data_policy) if cfg.data_policy else default_policy_path()
    policy = load_privileged_policy(policy_path)
    with stage_run(parent_run_id, "ingest_context"):
        res = ingest(
            sources,
            policy_path=policy_path,
            out_root=cfg.snapshots_dir,
            verifiers_root=cfg.verifiers_root,
            only=cfg.source_names,
        )
        snap = res.snapshot
        m = res.manifest
        for name in ("manifest.json",):
            mlflow.log_artifact(str(snap / name), C.DATASET_DIR)
        for sub in ("validation", "quarantine"):
            if (snap / sub).exists():
                mlflow.log_artifacts(str(snap / sub), f"{C.DATASET_DIR}/{sub}")
        if policy.store_privileged_text:
            mlflow.log_artifact(str(snap / "privileged.jsonl"), C.DATASET_DIR)
        mlflow.log_input(_dataset_entity(snap, m, pd), context="training")
        mlflow.set_tags({C.DATASET_DIGEST: m["digest"]})
        log_params(
            {
                "snapshot": str(snap),
                "digest": m["digest"],
                "sources_file": str(sources),
                "sources_sha256": m["sources_file"]["sha256"],
                "data_policy": str(policy_path),
                "data_policy_digest": m["policy"]["digest"],
                "store_privileged_text": str(policy.store_privileged_text),
            }
        )
        mlflow.log_metrics(
            {
                "tasks": float(m["counts"]["tasks"]),
                "train": float(m["counts"]["train"]),
                "heldout": float(m["counts"]["heldout"]),
                "quarantined": float(m["validation"]["quarantined"]),
            }
        )
    rows = []
    for s in m["sources"]:
        red = ", ".join(f"{k} {n}" for k, n in s["redactions"].items()) or "—"
        rows.append([s["name"], s["domain"], s["rows"], s["tasks"], s["quarantined"], red,
                     "passed" if s["validation_success"] else "passed within threshold"])  # fmt: skip
    md = f"### Data validation\n\nSnapshot `{snap.name}` — digest `{m['digest']}`\n\n" + md_table(
        ["source", "domain", "rows", "tasks", "quarantined", "redacted", "GE"], rows
    )
    return IngestOutcome(str(snap), m["digest"], m, md)


def _dataset_entity(snap: Path, manifest: dict[str, Any], pd: Any) -> Any:
    """The snapshot as an MLflow dataset: student-side columns only, digest = the snapshot's."""
    import mlflow

    rows = [json.loads(line) for line in (snap / "tasks.jsonl").read_text().splitlines()]
    frame = pd.DataFrame(
        [
            {
                "id": r["id"],
                "split": r["split"],
                "domain": r["metadata"].get("domain"),
                "verifier": r["verifier"],
                "source": r["source"],
                "privileged_sha256": r["privileged_sha256"],
            }
            for r in rows
        ]
    )
    import warnings

    with warnings.catch_warnings():
        # a local path matches two equivalent source types; MLflow picks one and says so
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        return mlflow.data.from_pandas(
            frame,
            source=str(snap.resolve()),
            name=manifest["name"],
            digest=manifest["digest"].removeprefix("sha256:")[:32],
        )


# --------------------------------------------------------------------------------------------
# train


@dataclass
class ArmOutcome:
    arm: str
    run_id: str
    output_dir: str
    final_model_dir: str | None
    summary: dict[str, float] = field(default_factory=dict)


def train_config_for(cfg: PipelineConfig, arm: str, snapshot: str, out_dir: Path) -> Any:
    """The trainer config of one arm: the same for every arm but the algorithm."""
    from rlsd.configs import DEFAULT_CONFIG
    from rlsd.train.config import load_config

    overrides = {
        **cfg.train_overrides,
        "algo.name": arm,
        "task.dataset": snapshot,
        "task.domains": cfg.domains,
        "task.sandbox_verifiers": True,
        "eval.before": False,  # evaluation is its own stage, on the same tasks for every model
        "eval.after": False,
        "run.output_dir": str(out_dir),
    }
    return load_config(cfg.train_config or DEFAULT_CONFIG, overrides)


def train_stage(
    cfg: PipelineConfig, parent_run_id: str, arm: str, snapshot: IngestOutcome, run_dir: Path
) -> ArmOutcome:
    import mlflow

    from rlsd.train.config import dump_config
    from rlsd.train.trainer import train

    out_dir = run_dir / arm
    tcfg = train_config_for(cfg, arm, snapshot.snapshot, out_dir)
    with stage_run(
        parent_run_id, "train", arm=arm, tags={C.DATASET_DIGEST: snapshot.digest}
    ) as run:
        mlflow.log_text(dump_config(tcfg), C.CONFIG_YAML)
        log_params(flatten_params(tcfg.model_dump(mode="json")))
        mlflow.log_input(
            _dataset_entity(Path(snapshot.snapshot), snapshot.manifest, __import__("pandas")),
            context="training",
        )
        resume = (out_dir / "checkpoints").exists()
        result = train(
            tcfg,
            resume=resume,
            sinks=(MlflowMetricsSink(run.info.run_id),),
            show_progress=True,
        )
        mlflow.log_artifact(str(out_dir / "metrics.jsonl"), "metrics")
        mlflow.log_artifact(str(out_dir / "dataset.json"), "metrics")
        if (out_dir / "image_samples.png").exists():
            mlflow.log_artifact(str(out_dir / "image_samples.png"), "samples")
        credit = out_dir / "credit_samples.jsonl"
        if tcfg.algo.name == "rlsd":
            # written even when no sampled response had a non-zero advantage (it says so)
            from rlsd.tracking.credit_view import read_credit_samples, render_credit_html

            samples = read_credit_samples(credit) if credit.exists() else []
            html = render_credit_html(samples[:8], out_dir / "token_credit.html",
                                      title=f"RLSD token credit ({arm})")  # fmt: skip
            mlflow.log_artifact(str(html), "credit")
            if credit.exists():
                mlflow.log_artifact(str(credit), "credit")
        m = result.metrics
        summary = {
            "reward_first": m[0]["reward/mean"] if m else float("nan"),
            "reward_last": m[-1]["reward/mean"] if m else float("nan"),
            "entropy_last": m[-1].get("actor/entropy", float("nan")) if m else float("nan"),
            "seconds_per_step": sum(x["time/step"] for x in m) / max(len(m), 1),
        }
        mlflow.log_metrics({f"summary.{k}": v for k, v in summary.items() if v == v})
        mlflow.set_tags({"rlsd.model_source": result.model_source,
                         "rlsd.model_digest": result.model_digest})  # fmt: skip
        run_id = run.info.run_id
    return ArmOutcome(
        arm,
        run_id,
        str(out_dir),
        str(result.final_model_dir) if result.final_model_dir else None,
        summary,
    )


def curves_stage(parent_run_id: str, arms: list[ArmOutcome], run_dir: Path) -> list[str]:
    """RLSD-vs-GRPO training curves and phase times as PNGs on the pipeline run."""
    from mlflow import MlflowClient

    from rlsd.tracking.plots import plot_phase_times, plot_training_curves

    files = {a.arm: Path(a.output_dir) / "metrics.jsonl" for a in arms}
    out = []
    curves = plot_training_curves(
        files,
        run_dir / "training_curves.png",
        metrics=("reward/mean", "eval/accuracy", "actor/entropy", "reward/zero_std_frac"),
        title="RLSD vs GRPO (same snapshot, seeds, budget)",
    )
    out.append(curves)
    phases = plot_phase_times(files, run_dir / "phase_times.png")
    if phases is not None:
        out.append(phases)
    client = MlflowClient()
    for p in out:
        client.log_artifact(parent_run_id, str(p), C.PLOTS_DIR)
    return [str(p) for p in out]


# --------------------------------------------------------------------------------------------
# evaluate


@dataclass
class EvalOutcome:
    name: str
    version: str  # what was evaluated: "base:<digest>", "run:<id>", "models:/<name>/<v>"
    accuracy: float
    tasks: dict[str, dict[str, Any]]  # task id -> {score, domain, passed}
    run_id: str = ""


def eval_tasks_for(cfg: PipelineConfig, snapshot: str) -> list[Any]:
    from rlsd.context.snapshot import load_snapshot
    from rlsd.train.data import eval_subset

    snap = load_snapshot(snapshot)
    return eval_subset(snap.split("heldout", cfg.domains), cfg.eval_tasks)


def evaluate_stage(
    cfg: PipelineConfig,
    parent_run_id: str,
    name: str,
    model_path: str,
    version: str,
    snapshot: IngestOutcome,
    run_dir: Path,
) -> EvalOutcome:
    """Greedy held-out accuracy of one model with the sandboxed verifiers; a nested run."""
    import mlflow

    from rlsd.models import load_policy
    from rlsd.models.config import ModelConfig
    from rlsd.train.evaluate import evaluate

    tcfg = train_config_for(cfg, cfg.control, snapshot.snapshot, run_dir / "eval")
    tasks = eval_tasks_for(cfg, snapshot.snapshot)
    if not tasks:
        raise ValueError(
            f"snapshot {snapshot.snapshot} has no held-out tasks in domains {cfg.domains}"
        )
    with stage_run(parent_run_id, "evaluate", arm=name, tags={"rlsd.evaluated": version}) as run:
        mcfg = ModelConfig.model_validate({**tcfg.model.model_dump(), "name_or_path": model_path})
        policy = load_policy(mcfg)
        from rlsd.context.snapshot import load_snapshot
        from rlsd.train.prompts import PromptEncoder

        stores = [load_snapshot(snapshot.snapshot, verify=False).image_store]
        res = evaluate(
            policy.model,
            policy.tokenizer,
            tasks,
            tcfg.eval.max_new_tokens,
            tcfg.rollout.max_batch_sequences,
            tcfg.rollout.sampling.stop_regex,
            tcfg.task.verifier,
            prompts=PromptEncoder(policy, stores),
        )
        domain_of = {t.id: t.metadata.get("domain", "") for t in tasks}
        rows = [{**r, "domain": domain_of[r["id"]]} for r in res.rows]
        per_domain: dict[str, list[float]] = {}
        for r in rows:
            per_domain.setdefault(r["domain"], []).append(float(r["score"]))
        metrics = {"accuracy": res.accuracy, "num_tasks": float(res.num_tasks)}
        metrics.update({f"accuracy.{d}": sum(v) / len(v) for d, v in per_domain.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_table(
            {
                k: [r[k] for r in rows]
                for k in ("id", "domain", "passed", "score", "detail", "response")
            },  # fmt: skip
            f"{C.EVAL_DIR}/{name}.json",
        )
        log_params({"model": model_path, "version": version, "eval_tasks": str(len(tasks))})
        run_id = run.info.run_id
    mlflow.MlflowClient().log_metric(parent_run_id, f"eval.{name}.accuracy", res.accuracy)
    del policy
    return EvalOutcome(
        name,
        version,
        res.accuracy,
        {
            r["id"]: {
                "score": float(r["score"]),
                "domain": r["domain"] or "default",
                "passed": bool(r["passed"]),
            }
            for r in rows
        },  # fmt: skip
        run_id,
    )


def comparison_markdown(evals: list[EvalOutcome], arms: list[ArmOutcome]) -> str:
    by_arm = {a.arm: a for a in arms}
    rows = []
    for e in evals:
        a = by_arm.get(e.name)
        rows.append([
            e.name, f"{100 * e.accuracy:.1f} %", len(e.tasks),
            f"{a.summary['reward_first']:.2f} → {a.summary['reward_last']:.2f}" if a else "—",
            f"{a.summary['seconds_per_step']:.1f}" if a else "—", e.version,
        ])  # fmt: skip
    return "### Held-out comparison\n\n" + md_table(
        ["model", "accuracy", "tasks", "train reward", "s/step", "version"], rows
    )


# --------------------------------------------------------------------------------------------
# gate and promotion


def champion_version(registered_model: str) -> Any | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(registered_model, C.CHAMPION)
    except MlflowException:
        return None


def download_version(version: Any, dest: Path) -> str:
    import mlflow

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    return mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=str(dest))


def register_candidate(
    cfg: PipelineConfig, parent_run_id: str, arm: ArmOutcome, dataset_digest: str
) -> Any:
    """Log the candidate's weights on its training run and register them as a new version."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    if arm.final_model_dir is None:
        raise ValueError(f"arm {arm.arm!r} saved no final model in {arm.output_dir}")
    client.log_artifacts(arm.run_id, arm.final_model_dir, C.MODEL_DIR)
    with contextlib.suppress(MlflowException):  # it exists
        client.create_registered_model(
            cfg.registered_model,
            description="Policies retrained by the rlsd pipeline (RLSD beside a GRPO control).",
        )
    source = f"{client.get_run(arm.run_id).info.artifact_uri}/{C.MODEL_DIR}"
    return client.create_model_version(
        cfg.registered_model,
        source,
        run_id=arm.run_id,
        tags={
            C.PIPELINE_RUN: parent_run_id,
            C.TRAIN_RUN: arm.run_id,
            C.CANDIDATE_ARM: arm.arm,
            C.DATASET_DIGEST: dataset_digest,
            C.GATE_DECISION: "pending",
        },
        description=f"{arm.arm} arm of pipeline run {parent_run_id}",
    )


def gate_evidence(
    policy: Any,
    candidate: EvalOutcome,
    control: EvalOutcome,
    champion: EvalOutcome | None,
    inventory: InventoryOutcome,
    ingest: IngestOutcome,
    verifiers_used: list[str],
) -> Any:
    from rlsd.gate import ArmEval, GateEvidence, SourceCheck, TaskScore, ValidationSummary

    def arm(e: EvalOutcome) -> ArmEval:
        return ArmEval(
            version=e.version,
            tasks={k: TaskScore(score=v["score"], domain=v["domain"]) for k, v in e.tasks.items()},
        )

    used = set(verifiers_used)
    m = ingest.manifest
    return GateEvidence(
        metric=policy.primary_metric,
        candidate=arm(candidate),
        control=arm(control),
        champion=arm(champion) if champion else None,
        verifiers={v: inventory.statuses.get(v, "missing") for v in sorted(used)},
        validation=ValidationSummary(
            passed=bool(m["validation"]["passed"]),
            sources={
                s["name"]: SourceCheck(
                    passed=s["bad_fraction"] <= s["max_bad_fraction"],
                    n_rows=s["rows"],
                    n_quarantined=s["quarantined"],
                )
                for s in m["sources"]
            },
        ),
        sandbox=inventory.sandbox_kind,
        collected_at=_now(),
    )


def verifiers_used(cfg: PipelineConfig, snapshot: str) -> list[str]:
    """The verifiers of the tasks the arms trained and were evaluated on (the chosen domains)."""
    from rlsd.context.snapshot import load_snapshot

    snap = load_snapshot(snapshot)
    return sorted(
        {
            t.verifier
            for t in snap.tasks
            if not cfg.domains or t.metadata.get("domain") in cfg.domains
        }
    )


def load_promotion_policy(cfg: PipelineConfig) -> tuple[Any, str]:
    from rlsd.gate import load_policy
    from rlsd.paths import policies_dir

    path = Path(cfg.promotion_policy) if cfg.promotion_policy else policies_dir() / "promotion.yaml"
    return load_policy(path, cfg.promotion_overrides or None), str(path)


@dataclass
class GateOutcome:
    decision_json: str
    passed: bool
    markdown: str
    run_id: str
    version: str  # the registered model version
    champion_version: str | None


def gate_stage(
    cfg: PipelineConfig,
    parent_run_id: str,
    candidate_arm: ArmOutcome,
    candidate: EvalOutcome,
    control: EvalOutcome,
    champion: EvalOutcome | None,
    champion_version_id: str | None,
    inventory: InventoryOutcome,
    ingest: IngestOutcome,
) -> GateOutcome:
    import mlflow
    from mlflow import MlflowClient

    from rlsd.gate import evaluate_gate

    policy, policy_path = load_promotion_policy(cfg)
    evidence = gate_evidence(
        policy, candidate, control, champion, inventory, ingest,
        verifiers_used(cfg, ingest.snapshot),
    )  # fmt: skip
    decision = evaluate_gate(policy, evidence, now=_now())
    with stage_run(parent_run_id, "promotion_gate") as run:
        mv = register_candidate(cfg, parent_run_id, candidate_arm, ingest.digest)
        mlflow.log_text(decision.to_json(), f"{C.GATE_DIR}/decision.json")
        mlflow.log_text(decision.to_markdown(), f"{C.GATE_DIR}/decision.md")
        mlflow.log_text(evidence.model_dump_json(indent=2), f"{C.GATE_DIR}/evidence.json")
        log_params(
            {
                "policy_path": policy_path,
                "policy_digest": decision.policy_digest,
                "policy_overrides": json.dumps(cfg.promotion_overrides, sort_keys=True),
                "candidate_arm": candidate_arm.arm,
                "model_version": str(mv.version),
                "champion_version": champion_version_id or "none",
            }
        )
        mlflow.log_metric("passed", float(decision.passed))
        client = MlflowClient()
        # the gate document also sits with the model version's own run (its weights' run)
        client.log_text(candidate_arm.run_id, decision.to_markdown(), f"{C.GATE_DIR}/decision.md")
        client.log_text(candidate_arm.run_id, decision.to_json(), f"{C.GATE_DIR}/decision.json")
        for k, v in {
            C.GATE_DECISION: "passed" if decision.passed else "failed",
            C.GATE_POLICY_DIGEST: decision.policy_digest,
            C.GATE_DECISION_DIGEST: decision.digest(),
            C.GATE_RUN: run.info.run_id,
        }.items():
            client.set_model_version_tag(cfg.registered_model, mv.version, k, v)
        run_id = run.info.run_id
    md = f"### Promotion gate: **{'PASSED' if decision.passed else 'FAILED'}**\n\n" + (
        decision.to_markdown()
    )
    return GateOutcome(
        decision.to_json(), decision.passed, md, run_id, str(mv.version), champion_version_id
    )


class StaleChampionError(RuntimeError):
    """The champion moved after the gate compared against it: the decision is stale."""


def promote(cfg: PipelineConfig, gate: GateOutcome, approval: Any, *, lock: Any = None) -> str:
    """Record the approval; if the outcome is promote, move ``champion`` (and keep the previous
    one as ``previous-champion``). Returns "promote" or "reject".

    ``lock`` is a context manager that serialises alias moves for this registered model across
    processes (the flow passes a Prefect global concurrency slot). Inside it, the current
    champion must still be the one the gate compared against: otherwise two gates racing on
    stale information could both move the alias, and the later one raises instead.
    """
    from contextlib import nullcontext

    from mlflow import MlflowClient

    from rlsd.gate import GateDecision, final_outcome

    decision = GateDecision.model_validate_json(gate.decision_json)
    outcome = final_outcome(decision, approval)
    client = MlflowClient()
    name, version = cfg.registered_model, gate.version
    client.log_text(gate.run_id, approval.model_dump_json(indent=2), f"{C.GATE_DIR}/approval.json")
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
