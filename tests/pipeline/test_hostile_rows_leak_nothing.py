"""The red team's hostile rows through the real ``retrain`` flow, then a search for them.

A copy of the demo store gets five hostile rows, each carrying a unique canary: a prompt that
holds its privileged text, a privileged column of invalid UTF-8 (a privileged canary, an e-mail
address and a card number inside), an e-mail address as a task id, one in a metadata column and
a card number in the provenance column. The flow runs for real (Prefect's local API, MLflow on
SQLite, the tiny model, two steps); then every MLflow artifact, param, tag and dataset input of
every run, every registered version's tags, every logged model's params, tags and files, and
every Prefect log, artifact and flow / task run state of the Prefect database are read back
through the clients -- and the files the two services wrote, byte for byte -- and no canary
may be found. The hostile rows must be there as
what they are: five quarantined rows, counted and named by reason.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlsd.demo import DEMO_SOURCES
from tests.helpers.store_copy import copy_store
from tests.pipeline.test_retrain_flow import _env, pipeline_config

pytestmark = pytest.mark.docker

PRIV = "QX7-E2E-PRIV-CANARY-3307 carry the one into the tens column"
UTF8 = "QX7-E2E-UTF8-CANARY-9124"
EMAIL = "qx7.e2e.canary@example.com"
CARD = "4539 1488 0343 6467"
ID_EMAIL = "arith-qx7.e2e.idpii@example.com"
META_EMAIL = "qx7.e2e.meta@example.org"
PROV_CARD = "4111 1111 1111 1111"
CANARIES = [PRIV, UTF8, EMAIL, CARD, CARD.replace(" ", ""), ID_EMAIL, META_EMAIL, PROV_CARD,
            PROV_CARD.replace(" ", "")]  # fmt: skip
BAD_BYTES = f"{UTF8} reviewed by {EMAIL}, card {CARD} ".encode() + b"\xff\xfe\x80."

#: (task id, question, answer, trace, verified_by, provenance, expected quarantine reason)
HOSTILE: list[tuple[str, str, str, Any, str, str, str]] = [
    ("arith-hostile-leak", f"What is 8 plus 5? Hint: {PRIV}.", "13", PRIV, "generator",
     "hostile/leak", "expect_column_values_to_be_in_set(student_prompt_contains_privileged)"),
    ("arith-hostile-utf8", "What is 2 plus 5?", "7", BAD_BYTES, "generator", "hostile/utf8",
     "undecodable"),
    (ID_EMAIL, "What is 1 plus 2?", "3", "Add 1 and 2: 1 + 2 = 3.", "generator", "hostile/id",
     "expect_column_values_to_be_in_set(pii_in_id)"),
    ("arith-hostile-meta", "What is 2 plus 2?", "4", "Add 2 and 2: 2 + 2 = 4.",
     f"reviewer {META_EMAIL}", "hostile/meta", "expect_column_values_to_be_in_set(pii_in_metadata)"),
    ("arith-hostile-prov", "What is 3 plus 3?", "6", "Add 3 and 3: 3 + 3 = 6.", "generator",
     f"crm export {PROV_CARD}", "expect_column_values_to_be_in_set(pii_in_source)"),
]  # fmt: skip

# Reads everything the Prefect database holds about the runs (it holds only this test's).
PREFECT_DUMP = r"""
import asyncio, json, sys
from prefect.client.orchestration import get_client

async def every(read, **kw):
    out, offset = [], 0
    while True:
        page = await read(limit=200, offset=offset, **kw)
        out += page
        if len(page) < 200:
            return out
        offset += 200

async def main():
    async with get_client() as c:
        flow_runs = await every(c.read_flow_runs)
        task_runs = await every(c.read_task_runs)
        logs = await every(c.read_logs)
        artifacts = await every(c.read_artifacts)
        states = []
        for fr in flow_runs:
            states += await c.read_flow_run_states(fr.id)
        for tr in task_runs:
            states += await c.read_task_run_states(tr.id)
    dump = lambda xs: [x.model_dump(mode="json") for x in xs]
    json.dump({"flow_runs": dump(flow_runs), "task_runs": dump(task_runs), "logs": dump(logs),
               "artifacts": dump(artifacts), "states": dump(states)}, open(sys.argv[1], "w"))

asyncio.run(main())
"""


def _hostile_store(tmp: Path) -> Path:
    from rlsd.demo import build_demo_store

    demo = tmp / "demo.sqlite"
    build_demo_store(demo, sql_tasks=0, json_tasks=0)
    store = tmp / "hostile.sqlite"
    copy_store(f"sqlite:///{demo}", f"sqlite:///{store}")
    with sqlite3.connect(store) as con:
        for task_id, question, answer, trace, verified_by, provenance, _ in HOSTILE:
            con.execute(
                "INSERT INTO tasks (task_id, domain, question, answer, split, verifier, "
                "provenance) VALUES (?, 'arithmetic', ?, ?, 'train', 'math-answer', ?)",
                (task_id, question, answer, provenance),
            )
            con.execute(
                "INSERT INTO reasoning_traces (task_id, trace, kind, verified_by, provenance) "
                "VALUES (?, CAST(? AS TEXT), 'worked_solution', ?, ?)",
                (task_id, trace, verified_by, provenance),
            )
    return store


def _sources(tmp: Path, store: Path, max_bad_fraction: float, stem: str) -> Path:
    """The demo's arithmetic source over the hostile copy."""
    (src,) = [s for s in yaml.safe_load(DEMO_SOURCES.read_text())["sources"]
              if s["name"] == "demo-arithmetic"]  # fmt: skip
    src["url"] = f"sqlite:///{store}"
    src["policy"] = {"max_bad_fraction": max_bad_fraction}
    path = tmp / f"{stem}.yaml"
    path.write_text(yaml.safe_dump({"sources": [src]}, sort_keys=False))
    return path


def _env_all_logs(tmp: Path) -> dict[str, str]:
    # the worst case: the product's own loggers (and GE's, SQLAlchemy's, warnings) shipped to
    # Prefect's log store too, so anything they would say is searched
    return {**_env(tmp), "PREFECT_LOGGING_EXTRA_LOGGERS": "rlsd,great_expectations,sqlalchemy,"
            "py.warnings"}  # fmt: skip


def _retrain(tmp: Path, config: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import json; from flows.retrain import retrain; "
        f"out = retrain(config={str(config)!r}, auto_approve=True); "
        "print('RESULT ' + json.dumps(out))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp, env=_env_all_logs(tmp), capture_output=True,
        text=True, timeout=900,
    )  # fmt: skip


def _found(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


@pytest.fixture(scope="module")
def hostile_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("hostile")
    store = _hostile_store(tmp)
    tolerant = _sources(tmp, store, 0.05, "hostile_sources")
    proc = _retrain(tmp, pipeline_config(tmp, tiny_model_dir, store, sources=str(tolerant)))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-6000:]
    result = json.loads(
        next(x for x in proc.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT ")
    )
    # the same rows under the demo's zero tolerance: the flow stops at ingestion, and its
    # failure -- message, state, traceback, kept evidence -- is searched as well
    strict = _sources(tmp, store, 0.0, "strict_sources")
    failed = _retrain(tmp, pipeline_config(tmp, tiny_model_dir, store, sources=str(strict)))
    assert failed.returncode != 0, failed.stdout[-4000:]
    dump = tmp / "prefect.json"
    read = subprocess.run(
        [sys.executable, "-c", PREFECT_DUMP, str(dump)], cwd=tmp, env=_env(tmp),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert read.returncode == 0, read.stderr[-4000:]
    return {"tmp": tmp, "store": store, "result": result, "procs": [proc, failed],
            "prefect": json.loads(dump.read_text())}  # fmt: skip


def _mlflow(tmp: Path) -> Any:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    return mlflow.MlflowClient()


def test_the_hostile_rows_are_quarantined_and_counted(hostile_run: dict) -> None:
    tmp, result = hostile_run["tmp"], hostile_run["result"]
    client = _mlflow(tmp)
    (ingest,) = client.search_runs(
        [result["experiment_id"]],
        filter_string=f"tags.`rlsd.pipeline_run_id` = '{result['mlflow_run_id']}' "
        "and tags.`rlsd.stage` = 'ingest_context'",
    )
    assert ingest.data.metrics["quarantined"] == len(HOSTILE)
    local = Path(client.download_artifacts(ingest.info.run_id, "dataset", str(tmp / "q")))
    lines = [json.loads(x) for x in (local / "quarantine" / "demo-arithmetic.jsonl")
             .read_text().splitlines()]  # fmt: skip
    assert sorted(q["reasons"][0] for q in lines) == sorted(h[-1] for h in HOSTILE)
    by_reason = {q["reasons"][0]: q for q in lines}
    assert by_reason["undecodable"]["id"] == "arith-hostile-utf8"
    assert by_reason[HOSTILE[0][-1]]["prompt"] is None  # withheld: it holds the privileged text
    assert by_reason[HOSTILE[2][-1]]["id"] == "[REDACTED:email]"
    summary = json.loads((local / "validation" / "summary.json").read_text())
    assert summary["sources"]["demo-arithmetic"]["n_quarantined"] == len(HOSTILE)
    assert summary["sources"]["demo-arithmetic"]["n_undecodable"] == 1
    # the ingest task ran once and passed: nothing about it was "transient"
    (task,) = [t for t in hostile_run["prefect"]["task_runs"]
               if t["name"].startswith("ingest") and t["flow_run_id"] == result["flow_run_id"]]  # fmt: skip
    assert task["run_count"] == 1 and task["state"]["type"] == "COMPLETED"
    # the rest of the source went on: every clean arithmetic task is in the snapshot
    snap = json.loads(next((tmp / "snapshots").glob("hostile-sources-*/manifest.json")).read_text())
    assert snap["counts"]["tasks"] == 320


def test_a_source_over_its_threshold_stops_the_flow_once_naming_the_source(
    hostile_run: dict,
) -> None:
    prefect, result = hostile_run["prefect"], hostile_run["result"]
    (failed_run,) = [f for f in prefect["flow_runs"] if f["id"] != result["flow_run_id"]]
    assert failed_run["state"]["type"] == "FAILED"
    (task,) = [t for t in prefect["task_runs"]
               if t["name"].startswith("ingest") and t["flow_run_id"] == failed_run["id"]]  # fmt: skip
    # a policy stop is not retried: the same rows fail the same way every time
    assert task["run_count"] == 1 and task["state"]["type"] == "FAILED"
    message = task["state"]["message"]
    assert "IngestionPolicyError" in message and "'demo-arithmetic'" in message
    assert "5/325 rows" in message
    kept = list((hostile_run["tmp"] / "snapshots" / "failed").glob("*/validation/*.jsonl"))
    assert len(kept) == 1 and len(kept[0].read_text().splitlines()) == len(HOSTILE)


def test_no_canary_in_any_mlflow_artifact_param_or_tag(hostile_run: dict) -> None:
    tmp = hostile_run["tmp"]
    client = _mlflow(tmp)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert len(runs) >= 8  # the pipeline run and its stage runs
    leaks: dict[str, list[str]] = {}
    n_files = 0
    for run in runs:
        rid = run.info.run_id
        fields = {"params": run.data.params, "tags": run.data.tags,
                  "metrics": sorted(run.data.metrics), "name": run.info.run_name,
                  "inputs": [(d.dataset.name, d.dataset.source, d.dataset.schema,
                              d.dataset.profile, [t.value for t in d.tags])
                             for d in run.inputs.dataset_inputs]}  # fmt: skip
        if hit := _found(json.dumps(fields, default=str)):
            leaks[f"run {rid} params/tags/inputs"] = hit
        dest = tmp / "all-artifacts" / rid
        dest.mkdir(parents=True)
        root = Path(client.download_artifacts(rid, "", str(dest)))
        for p in root.rglob("*"):
            if p.is_file():
                n_files += 1
                if hit := _found(p.read_bytes().decode("utf-8", "replace")):
                    leaks[str(p.relative_to(tmp))] = hit
    versions = client.search_model_versions("name='rlsd-policy'")
    assert versions
    for v in versions:
        if hit := _found(json.dumps(v.tags) + (v.description or "")):
            leaks[f"model version {v.version}"] = hit
    # the registered candidates are logged MLflow models, stored beside the runs, not in them
    import mlflow

    models = client.search_logged_models([e.experiment_id for e in client.search_experiments()])
    assert models
    for m in models:
        if hit := _found(json.dumps({"params": m.params, "tags": m.tags, "name": m.name})):
            leaks[f"logged model {m.model_id} params/tags"] = hit
        dest = tmp / "all-models" / m.model_id
        dest.mkdir(parents=True)
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=m.artifact_location,
                                                        dst_path=str(dest)))  # fmt: skip
        for p in root.rglob("*"):
            if p.is_file():
                n_files += 1
                if hit := _found(p.read_bytes().decode("utf-8", "replace")):
                    leaks[str(p.relative_to(tmp))] = hit
    assert n_files > 20
    assert not leaks, leaks


def test_no_canary_in_any_prefect_log_artifact_or_state(hostile_run: dict) -> None:
    prefect = hostile_run["prefect"]
    leaks = {}
    for kind, items in prefect.items():
        for item in items:
            if hit := _found(json.dumps(item)):
                leaks[f"{kind} {item.get('name') or item.get('key') or item.get('id')}"] = hit
    assert not leaks, leaks
    # the state messages of every flow and task run, by name (they are in the dumps above too)
    assert not _found(" ".join(s["message"] or "" for s in prefect["states"]))
    # and the search was over something: both runs, their tasks, logs and artifacts
    assert len(prefect["flow_runs"]) == 2 and len(prefect["task_runs"]) >= 8
    assert len(prefect["logs"]) > 10 and len(prefect["states"]) > 20
    assert any(a["key"] == "data-validation" for a in prefect["artifacts"])


def test_no_canary_in_anything_the_run_wrote_or_printed(hostile_run: dict) -> None:
    """Byte for byte: the MLflow and Prefect databases, the artifact store, the snapshots and
    the pipeline's work folder -- everything under the run's folder but the hostile store --
    and the flow's stdout / stderr."""
    tmp = hostile_run["tmp"]
    for proc in hostile_run["procs"]:
        assert not _found(proc.stdout + proc.stderr)
    leaks = {}
    for p in tmp.rglob("*"):
        if not p.is_file() or p.name.startswith(("hostile.sqlite", "demo.sqlite")):
            continue
        data = p.read_bytes()
        hit = [c for c in CANARIES if c.encode() in data]
        if hit:
            leaks[str(p.relative_to(tmp))] = hit
    assert not leaks, leaks
