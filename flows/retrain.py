"""The ``retrain`` flow: inventory -> ingest -> RLSD and GRPO arms -> evaluation -> gate ->
human approval -> alias move. Thin: each stage is one task in ``flows/<stage>.py`` that calls
the package owning it; the retry policy of each is written beside it.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

if __package__ in (None, ""):  # `prefect deploy` loads this file by path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flows.evaluate import evaluate_task  # noqa: E402
from flows.gate import approve_and_promote, gate_task, preflight  # noqa: E402
from flows.gate import triggered_by as who_triggered  # noqa: E402
from flows.ingest import ingest_task  # noqa: E402
from flows.inventory import inventory_task  # noqa: E402
from flows.pipeline_run import pipeline_run, publish_outcome  # noqa: E402
from flows.train import train_task  # noqa: E402
from rlsd.gate.evidence import pick_candidate  # noqa: E402
from rlsd.pipeline.config import load_pipeline_config  # noqa: E402
from rlsd.tracking.records import record_curves  # noqa: E402
from rlsd.tracking.registry import champion_version, download_version, mark_rejected  # noqa: E402
from rlsd.train.arms import arm_config  # noqa: E402
from rlsd.train.heldout import comparison_table  # noqa: E402


@flow(name="retrain", log_prints=True)
def retrain(
    config: str | None = None,
    sources: str | None = None,
    steps: int | None = None,
    auto_approve: bool = False,
    approval_timeout_s: int | None = None,
    registered_model: str | None = None,
    overrides: dict[str, Any] | None = None,
    policy_sha256: str | None = None,
    triggered_by: str | None = None,
) -> dict[str, Any]:
    """Retrain with RLSD beside a GRPO control and promote the winner through the gate."""
    logging.getLogger("rlsd").setLevel(logging.INFO)
    cfg = load_pipeline_config(config, {**(overrides or {}), "sources": sources,
                                        "registered_model": registered_model,
                                        "approval_timeout_s": approval_timeout_s,
                                        "promotion_policy_sha256": policy_sha256})  # fmt: skip
    if steps is not None:
        cfg.train_overrides = {**cfg.train_overrides, "run.steps": steps}
    preflight(cfg, auto_approve)  # refuse before training a run that could never promote
    trigger = who_triggered(triggered_by)
    with pipeline_run(cfg, auto_approve) as run:
        parent, run_dir = run.run_id, run.run_dir
        inventory = inventory_task(cfg, parent, run_dir)
        snap = ingest_task(cfg, parent)
        arms = {a: train_task(cfg, parent, a, snap, run_dir) for a in (cfg.candidate, cfg.control)}
        record_curves(parent, list(arms.values()), run_dir)

        base = arm_config(cfg.train_config, cfg.train_overrides, cfg.control, snap.snapshot,
                          cfg.domains, run_dir).model.name_or_path  # fmt: skip
        evals = {"base": evaluate_task(cfg, parent, "base", base, f"base:{base}", snap, run_dir)}
        for a in arms.values():
            evals[a.arm] = evaluate_task(cfg, parent, a.arm, a.final_model_dir,
                                         f"run:{a.run_id}", snap, run_dir)  # fmt: skip
        champ, champion_eval = champion_version(cfg.registered_model), None
        if champ is not None:
            path = download_version(champ, run_dir / "champion")
            champion_eval = evaluate_task(cfg, parent, "champion", path,
                                          f"models:/{cfg.registered_model}/{champ.version}",
                                          snap, run_dir)  # fmt: skip
        shown = [*evals.values(), *([champion_eval] if champion_eval else [])]
        create_markdown_artifact("### Held-out comparison\n\n"
                                 + comparison_table(shown, list(arms.values())).markdown(),
                                 key="comparison", description=f"MLflow {parent}")  # fmt: skip

        winner = pick_candidate(evals, cfg.candidate, cfg.control)
        gate = gate_task(cfg, parent, arms[winner], evals, champion_eval,
                         str(champ.version) if champ else None, inventory, snap,
                         trigger)  # fmt: skip
        outcome, approval = "reject", None
        if gate.passed:
            outcome, approval = approve_and_promote(cfg, gate, auto_approve)
        else:
            mark_rejected(cfg.registered_model, gate.version)
        publish_outcome(run, cfg.registered_model, gate, outcome, winner, approval,
                        cfg.promotion_policy)  # fmt: skip
    return {
        "mlflow_run_id": parent, "registered_model": cfg.registered_model,
        "version": gate.version, "winner": winner, "gate_passed": gate.passed,
        "outcome": outcome, "approval": approval.model_dump(mode="json") if approval else None,
        "comparison": {k: v.accuracy for k, v in evals.items()}
        | ({"champion": champion_eval.accuracy} if champion_eval else {}),
        "decision_markdown": gate.markdown, "tracking_uri": run.tracking_uri,
        "experiment_id": run.experiment_id, "flow_run_id": run.flow_run_id,
    }  # fmt: skip


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    print(retrain(auto_approve=True))
