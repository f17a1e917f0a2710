"""The lineage of a model version, read from MLflow alone (``rlsd lineage model@alias``).

model version -> its pipeline run -> the stage runs of that pipeline run:
data sources and snapshot digest, validation results, verifiers and their digests, the training
config and code version, the metrics, the comparison with the control arm, the gate decision and
the approval. Nothing is read from local files: a compliance reviewer with access to the tracking
server sees exactly this.
"""

from __future__ import annotations

import html
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlsd.context.manifest import SnapshotManifest
from rlsd.context.report import sources_table
from rlsd.gate.decision import GateDecision
from rlsd.gate.policy import PromotionPolicy
from rlsd.gate.verification import GateRecords, Verification, verify_records
from rlsd.tables import md_table
from rlsd.tracking import conventions as C
from rlsd.tracking.logged_model import (
    KIND_LEGACY,
    KIND_LOGGED,
    LEGACY_NOTE,
    VersionModel,
    describe_version_model,
)
from rlsd.uris import mask_uri, mask_uri_in


class LineageError(LookupError):
    """The reference names no model version, or its runs are missing."""


@dataclass
class Lineage:
    name: str
    version: str
    aliases: list[str]
    version_tags: dict[str, str]
    source: str
    pipeline: dict[str, Any]
    stages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    manifest: SnapshotManifest | None = None
    validation: dict[str, Any] | None = None
    gate_markdown: str | None = None
    approval: dict[str, Any] | None = None
    packages: dict[str, str] | None = None
    verification: Verification | None = None
    trust_source: str = ""
    model: VersionModel | None = None  # the logged model, or a legacy artifact folder


@dataclass
class Trust:
    """What lineage verifies against: a promotion policy from a local file (never the copy in
    MLflow, which whoever can write to MLflow can rewrite) and the public key it names."""

    policy: PromotionPolicy | None
    public_key: Any | None
    source: str


def load_trust(policy_path: str | Path | None = None) -> Trust:
    """The trusted policy: ``policy_path``, else the one the embedded pipeline config uses."""
    from rlsd.gate.evidence import load_promotion_policy
    from rlsd.gate.signing import SigningError, read_public_key
    from rlsd.pipeline.config import load_pipeline_config

    if policy_path is None:
        policy_path = load_pipeline_config().promotion_policy
    policy, where = load_promotion_policy(policy_path)
    key, note = None, ""
    if policy.signing.public_key is not None:
        try:
            key = read_public_key(policy.signing.public_key)
        except SigningError as exc:
            note = f" ({exc})"
    return Trust(policy, key, f"{where}{note}")


def parse_ref(ref: str) -> tuple[str, str]:
    """``name@alias``, ``name@3``, ``name/3`` or ``models:/name@alias`` -> (name, alias-or-version)."""
    ref = ref.removeprefix("models:/")
    for sep in ("@", "/"):
        if sep in ref:
            name, _, which = ref.rpartition(sep)
            if name and which:
                return name, which
    raise LineageError(f"{ref!r}: expected <model>@<alias or version>, e.g. rlsd-policy@champion")


def _download_text(client: Any, run_id: str, path: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = client.download_artifacts(run_id, path, tmp)
            return Path(local).read_text(encoding="utf-8")
    except (MlflowException, OSError):
        return None


def _run_view(run: Any) -> dict[str, Any]:
    return {
        "run_id": run.info.run_id,
        "name": run.info.run_name,
        "status": run.info.status,
        "start": run.info.start_time,
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "inputs": [
            {
                "name": d.dataset.name,
                "digest": d.dataset.digest,
                "source": json.loads(d.dataset.source).get("uri", d.dataset.source)
                if d.dataset.source.startswith("{")
                else d.dataset.source,
                "context": next((t.value for t in d.tags if t.key == "mlflow.data.context"), ""),
            }
            for d in (run.inputs.dataset_inputs if run.inputs else [])
        ],
    }


def _download_bytes(client: Any, run_id: str, path: str) -> bytes | None:
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()
    except (MlflowException, OSError):
        return None


def _gate_records(client: Any, lin: Lineage, gate_run_id: str | None) -> GateRecords:
    t = lin.version_tags
    rec = GateRecords(
        manifest_digest=lin.manifest.digest if lin.manifest else None,
        dataset_digests=[i["digest"] for r in lin.stages.get("train", []) for i in r["inputs"]],
        aliases=lin.aliases,
        decision_tag=t.get(C.GATE_DECISION),
        decision_digest_tag=t.get(C.GATE_DECISION_DIGEST),
        outcome_tag=t.get(C.GATE_OUTCOME),
        dataset_digest_tag=t.get(C.DATASET_DIGEST),
        approval_tags={k: t[tag] for k, tag in (("decision", C.APPROVAL_DECISION),
                       ("approver", C.APPROVAL_APPROVER), ("mode", C.APPROVAL_MODE)) if tag in t},
    )  # fmt: skip
    inventory = (lin.stages.get("verifier_inventory") or [None])[0]
    if inventory:
        rec.inventory_json = _download_bytes(client, inventory["run_id"], C.INVENTORY_JSON)
    if gate_run_id:
        rec.decision_json = _download_text(client, gate_run_id, C.DECISION_JSON)
        rec.decision_sig = _download_text(client, gate_run_id, C.DECISION_SIG)
        rec.evidence_json = _download_text(client, gate_run_id, C.EVIDENCE_JSON)
        rec.approval_json = _download_text(client, gate_run_id, C.APPROVAL_JSON)
        rec.approval_sig = _download_text(client, gate_run_id, C.APPROVAL_SIG)
    return rec


def collect_lineage(ref: str, trust: Trust | None = None) -> Lineage:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    name, which = parse_ref(ref)
    try:
        mv = (
            client.get_model_version(name, which)
            if which.isdigit()
            else client.get_model_version_by_alias(name, which)
        )
    except MlflowException as exc:
        # the tracking URI may carry a password, and MLflow's message may quote it
        uri = client.tracking_uri
        raise LineageError(
            f"{ref}: no such model version in {mask_uri(uri)}: {mask_uri_in(str(exc), uri)}"
        ) from None
    tags = dict(mv.tags)
    parent_id = tags.get(C.PIPELINE_RUN)
    if not parent_id:
        raise LineageError(f"{name} version {mv.version} was not registered by the rlsd pipeline")
    parent = client.get_run(parent_id)
    aliases = [a for a in (client.get_registered_model(name).aliases or {})
               if str(client.get_registered_model(name).aliases[a]) == str(mv.version)]  # fmt: skip
    lin = Lineage(name, str(mv.version), sorted(aliases), tags, mv.source, _run_view(parent))
    lin.model = describe_version_model(client, mv)
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{C.PIPELINE_RUN}` = '{parent_id}'",
        max_results=200,
    )
    for run in sorted(children, key=lambda r: r.info.start_time or 0):
        view = _run_view(run)
        lin.stages.setdefault(view["tags"].get(C.STAGE, "other"), []).append(view)
    ingest = (lin.stages.get("ingest_context") or [None])[0]
    if ingest:
        text = _download_text(client, ingest["run_id"], f"{C.DATASET_DIR}/manifest.json")
        lin.manifest = SnapshotManifest.model_validate(json.loads(text)) if text else None
        text = _download_text(client, ingest["run_id"], f"{C.DATASET_DIR}/validation/summary.json")
        lin.validation = json.loads(text) if text else None
    gate = (lin.stages.get("promotion_gate") or [None])[0]
    gate_run_id = tags.get(C.GATE_RUN) or (gate["run_id"] if gate else None)
    records = _gate_records(client, lin, gate_run_id)
    if records.decision_json:
        # shown from decision.json, the document the signature covers, never from decision.md
        try:
            lin.gate_markdown = GateDecision.model_validate_json(
                records.decision_json
            ).to_markdown()
        except ValueError:
            lin.gate_markdown = "_gate/decision.json is not a gate decision document_\n"
    if records.approval_json:
        try:
            lin.approval = json.loads(records.approval_json)
        except ValueError:
            lin.approval = None
    trust = trust or load_trust()
    lin.verification = verify_records(records, trust.policy, trust.public_key)
    lin.trust_source = trust.source
    text = _download_text(client, parent_id, C.ENVIRONMENT_JSON)
    lin.packages = json.loads(text) if text else None
    return lin


_TRAIN_KEYS = (
    "algo.name", "model.name_or_path", "run.steps", "run.seed", "rollout.group_size",
    "rollout.prompts_per_step", "rollout.sampling.temperature", "optim.lr", "algo.lam0",
    "algo.eps_w", "task.dataset", "task.domains",
)  # fmt: skip


def render_markdown(lin: Lineage) -> str:
    p = lin.pipeline
    t = lin.version_tags
    out = [f"# Lineage of `{lin.name}` version {lin.version}", ""]
    out.append(
        md_table(
            ["field", "value"],
            [
                ["aliases", ", ".join(lin.aliases) or "—"],
                *_model_rows(lin),
                ["candidate arm", t.get(C.CANDIDATE_ARM, "—")],
                ["pipeline run (MLflow)", p["run_id"]],
                [
                    "Prefect flow run",
                    f"{p['tags'].get(C.PREFECT_FLOW_RUN, '—')} "
                    f"{mask_uri(p['tags'].get(C.PREFECT_FLOW_RUN_URL, ''))}".strip(),
                ],
                ["code version (git)", p["tags"].get(C.GIT_SHA, "—")],
                ["rlsd version", p["tags"].get(C.RLSD_VERSION, "—")],
                ["auto-approve", p["tags"].get(C.AUTO_APPROVE, "—")],
            ],
        )  # fmt: skip
    )
    out += _verification_section(lin)
    out += ["## Data", ""]
    if lin.manifest:
        m = lin.manifest
        policy = (
            f"data policy digest `{m.policy.digest}` (privileged text in artifacts: "
            f"{m.policy.store_privileged_text})"
            if m.policy
            else "no data policy recorded"
        )
        out.append(f"Snapshot **{m.name}**, digest `{m.digest}`; {policy}.\n")  # fmt: skip
        columns = ["source", "url", "domain", "rows", "tasks", "quarantined", "redactions"]
        out.append(sources_table(m, columns).markdown())
    else:
        out.append("_no dataset manifest logged_\n")
    if lin.validation:
        out += ["### Validation (Great Expectations)", ""]
        out.append(
            md_table(
                ["source", "rows", "tasks", "quarantined", "bad fraction", "max", "failed checks"],
                [
                    [
                        n,
                        v.get("n_rows"),
                        v.get("n_tasks"),
                        v.get("n_quarantined"),
                        f"{v.get('bad_fraction', 0):.3f}",
                        v.get("max_bad_fraction"),
                        ", ".join(v.get("failed_checks", [])) or "—",
                    ]
                    for n, v in lin.validation.get("sources", {}).items()
                ],
            )  # fmt: skip
        )
    for run in lin.stages.get("ingest_context", []):
        for d in run["inputs"]:
            out.append(
                f"MLflow dataset input: `{d['name']}` digest `{d['digest']}` from "
                f"`{mask_uri(d['source'])}`\n"
            )
    out += ["## Verifiers", ""]
    for run in lin.stages.get("verifier_inventory", []):
        prm = run["params"]
        names = sorted({k.split(".")[1] for k in prm if k.startswith("verifier.")})
        out.append(f"Sandbox: **{prm.get('sandbox', '—')}**\n")
        out.append(
            md_table(
                ["verifier", "status", "red team", "spec sha256", "image id"],
                [
                    [
                        n,
                        prm.get(f"verifier.{n}.status"),
                        prm.get(f"verifier.{n}.redteam", "—"),
                        prm.get(f"verifier.{n}.spec_sha256", "")[:16],
                        prm.get(f"verifier.{n}.image_id", "").removeprefix("sha256:")[:16],
                    ]
                    for n in names
                ],
            )  # fmt: skip
        )
    out += ["## Training", ""]
    rows = []
    for run in lin.stages.get("train", []):
        prm, met = run["params"], run["metrics"]
        rows.append([run["tags"].get(C.ARM, "?"), run["run_id"]]
                    + [prm.get(k, "—") for k in _TRAIN_KEYS[1:6]]
                    + [f"{met.get('summary.reward_first', float('nan')):.3f} → "
                       f"{met.get('summary.reward_last', float('nan')):.3f}",
                       f"{met.get('summary.seconds_per_step', float('nan')):.1f}"])  # fmt: skip
    out.append(
        md_table(
            ["arm", "run", "model", "steps", "seed", "G", "prompts/step", "train reward", "s/step"],
            rows,
        )  # fmt: skip
    )
    out += ["## Evaluation (held-out, same tasks and verifiers)", ""]
    out.append(
        md_table(
            ["model", "accuracy", "tasks", "evaluated"],
            [
                [
                    r["tags"].get(C.ARM),
                    f"{100 * r['metrics'].get('accuracy', float('nan')):.1f} %",
                    int(r["metrics"].get("num_tasks", 0)),
                    r["tags"].get("rlsd.evaluated", ""),
                ]
                for r in lin.stages.get("evaluate", [])
            ],
        )  # fmt: skip
    )
    reports = []
    for stage in ("train",):
        for run in lin.stages.get(stage, []):
            if run["tags"].get(C.ARM) == "rlsd":
                reports.append(f"- token credit (HTML): runs:/{run['run_id']}/{C.CREDIT_HTML}")
    reports.append(
        f"- training curves (PNG): runs:/{p['run_id']}/{C.PLOTS_DIR}/training_curves.png"
    )
    reports.append(f"- phase times (PNG): runs:/{p['run_id']}/{C.PLOTS_DIR}/phase_times.png")
    out += ["### Reports", "", *reports, ""]
    out += ["## Gate", ""]
    out.append(lin.gate_markdown or "_no gate decision logged_\n")
    out += ["", "## Approval", ""]
    if lin.approval:
        a = lin.approval
        out.append(md_table(["decision", "approver", "mode", "at", "reason"],
                          [[a["decision"], a["approver"], a["mode"], a["at"], a["reason"]]]))  # fmt: skip
    else:
        out.append("_no approval recorded (the gate failed, or the run is still waiting)_\n")
    out.append(f"Outcome: **{t.get(C.GATE_OUTCOME, 'pending')}**; gate decision digest "
               f"`{t.get(C.GATE_DECISION_DIGEST, '—')}`; policy digest "
               f"`{t.get(C.GATE_POLICY_DIGEST, '—')}`.\n")  # fmt: skip
    if lin.packages:
        out += ["## Package versions", ""]
        out.append(
            md_table(["package", "version"], [[k, v] for k, v in sorted(lin.packages.items())])
        )
    return "\n".join(out)


def _model_rows(lin: Lineage) -> list[list[str]]:
    """What the version is: its logged model (id, URI, flavor, how to load and serve it) or a
    legacy artifact folder, which MLflow cannot load."""
    m = lin.model
    if m is None:
        return [["weights", mask_uri(lin.source)]]
    ref = f"models:/{lin.name}/{lin.version}"
    if m.kind == KIND_LEGACY:
        return [
            ["model", LEGACY_NOTE],
            ["weights", mask_uri(m.source)],
        ]  # fmt: skip
    rows = []
    if m.kind == KIND_LOGGED:
        rows.append(["model", f"logged model `{m.model_id}` (`{m.model_uri}`), "
                              f"{m.flavor or 'unknown flavor'}, logged in run "
                              f"{m.source_run_id or '—'}"])  # fmt: skip
    else:
        rows.append(["model", f"MLflow model folder of run {m.source_run_id or '—'}, "
                              f"{m.flavor or 'unknown flavor'}"])  # fmt: skip
    if m.pyfunc:
        rows.append(["load / serve", f"`mlflow.pyfunc.load_model(\"{ref}\")`; "
                                     f"`mlflow models serve -m {ref} --env-manager local`"])  # fmt: skip
    else:
        rows.append(["load / serve", "no pyfunc flavor: `mlflow.pyfunc.load_model` cannot load it"])
    rows.append(["weights", mask_uri(m.artifact_location or m.source)])
    linked = [x for x in m.metrics if x["dataset_name"]]
    if linked:
        rows.append(["model metrics", "; ".join(
            f"{x['key']} {x['value']:.3f} on dataset `{x['dataset_name']}` "
            f"(digest `{x['dataset_digest']}`)" for x in linked)])  # fmt: skip
    return rows


def _verification_section(lin: Lineage) -> list[str]:
    v = lin.verification
    if v is None:
        return []
    out = [f"## Verification: **{v.status}**", "",
           f"Every digest recomputed from the logged artifacts, every signature checked against "
           f"the trusted policy `{lin.trust_source}`.", ""]  # fmt: skip
    out.append(md_table(["check", "result", "detail"],
                        [[c.item, "ok" if c.ok else ("UNSIGNED" if c.unsigned else "FAILED"),
                          c.detail] for c in v.checks]))  # fmt: skip
    return out


def lineage_markdown(ref: str, trust: Trust | None = None) -> str:
    return render_markdown(collect_lineage(ref, trust))


def render_html(markdown_text: str, title: str) -> str:
    """A self-contained HTML page of the Markdown (tables rendered; no external assets)."""
    try:
        import markdown as md  # shipped with mlflow's dependencies

        body = md.markdown(markdown_text, extensions=["tables", "fenced_code"])
    except ImportError:
        body = f"<pre>{html.escape(markdown_text)}</pre>"
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
        "padding:.25em .5em;font-size:.9em;text-align:left}th{background:#f3f3f3}"
        "code{background:#f6f6f6;padding:0 .2em}"
    )
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>{body}</body></html>\n")  # fmt: skip
