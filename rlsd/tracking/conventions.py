"""MLflow names the pipeline writes and ``rlsd lineage`` reads: one place, so they agree.

Run layout: one parent run per pipeline run (``rlsd.kind=pipeline``) with a nested run per stage
(``rlsd.kind=stage``, ``rlsd.stage``) and per training arm / evaluated model (``rlsd.arm``).
The Prefect flow-run id and the MLflow run id point at each other: the MLflow runs carry
``prefect.flow_run_id`` (and its UI link), the Prefect flow run carries the MLflow run id in its
artifacts' descriptions and in the ``mlflow-run`` link artifact.
"""

from __future__ import annotations

KIND = "rlsd.kind"
STAGE = "rlsd.stage"
ARM = "rlsd.arm"
PIPELINE_RUN = "rlsd.pipeline_run_id"  # on every nested run and on the model version
PREFECT_FLOW_RUN = "prefect.flow_run_id"
PREFECT_FLOW_RUN_URL = "prefect.flow_run_url"
GIT_SHA = "rlsd.git_sha"
RLSD_VERSION = "rlsd.version"
DATASET_DIGEST = "rlsd.dataset_digest"
SANDBOX = "rlsd.sandbox"
AUTO_APPROVE = "rlsd.auto_approve"

STAGES = ("verifier_inventory", "ingest_context", "train", "evaluate", "promotion_gate")

# tags on the registered model version
GATE_DECISION = "rlsd.gate.decision"  # pending | passed | failed
GATE_OUTCOME = "rlsd.gate.outcome"  # promote | reject
APPROVAL_DECISION = "rlsd.approval.decision"
APPROVAL_APPROVER = "rlsd.approval.approver"
APPROVAL_REASON = "rlsd.approval.reason"
APPROVAL_AT = "rlsd.approval.at"
APPROVAL_MODE = "rlsd.approval.mode"  # human | auto | timeout
GATE_POLICY_DIGEST = "rlsd.gate.policy_digest"
GATE_DECISION_DIGEST = "rlsd.gate.decision_digest"
GATE_RUN = "rlsd.gate.run_id"
CANDIDATE_ARM = "rlsd.candidate_arm"
TRAIN_RUN = "rlsd.train_run_id"

CHAMPION = "champion"
PREVIOUS_CHAMPION = "previous-champion"

# artifact paths
INVENTORY_JSON = "inventory/inventory.json"
DATASET_DIR = "dataset"  # manifest.json, validation/, quarantine/
CONFIG_YAML = "config/config.yaml"
METRICS_JSONL = "metrics/metrics.jsonl"
PLOTS_DIR = "plots"
CREDIT_HTML = "credit/token_credit.html"
MODEL_DIR = "model"
EVAL_DIR = "eval"
GATE_DIR = "gate"  # decision.json, decision.md, evidence.json, approval.json, *.sig.json
DECISION_JSON = f"{GATE_DIR}/decision.json"
DECISION_SIG = f"{GATE_DIR}/decision.sig.json"
EVIDENCE_JSON = f"{GATE_DIR}/evidence.json"
APPROVAL_JSON = f"{GATE_DIR}/approval.json"
APPROVAL_SIG = f"{GATE_DIR}/approval.sig.json"
LINEAGE_MD = "lineage.md"
ENVIRONMENT_JSON = "environment/packages.json"
