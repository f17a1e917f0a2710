"""PostgreSQL as a context source, for real: a throwaway server (tests/helpers/postgres.py).

The demo store is copied from SQLite into PostgreSQL with ``copy_store`` and the demo sources
are read from it. The tests go over whatever tables and sources the demo store and
demo_sources.yaml declare (domains are being added), never over fixed counts.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from rlsd.context import (
    MissingEnvVarError,
    SourceConfig,
    load_sources,
    read_source,
    validate_source,
)
from rlsd.demo import DEMO_SOURCES
from tests.helpers.context_store import GOOD_ROWS, VERIFIERS
from tests.helpers.postgres import PostgresServer
from tests.helpers.store_copy import StoreCopyError, copy_store

REPO = Path(__file__).resolve().parents[2]
PW_ENV = "RLSD_TEST_PG_PASSWORD"
DEMO_STORE_REF = "${RLSD_DEMO_STORE}"


def _pg_url(server: PostgresServer, dbname: str) -> str:
    """The URL a sources file would hold: the password as an env-var reference."""
    return f"postgresql+psycopg://{server.user}:${{{PW_ENV}}}@127.0.0.1:{server.port}/{dbname}"


@pytest.fixture(scope="module")
def pg_demo(postgres_server: PostgresServer, demo_store: tuple[Path, dict]) -> dict[str, Any]:
    path, _ = demo_store
    url = postgres_server.create_database("demo_store")
    counts = copy_store(f"sqlite:///{path}", url)
    return {"db": "demo_store", "url": url, "counts": counts, "sqlite": path}


def _all_rows(engine: sa.Engine, name: str) -> list[tuple[Any, ...]]:
    # through the reflected table, so both sides get SQLAlchemy's type conversions
    table = sa.Table(name, sa.MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(table))]
    return sorted(rows, key=repr)  # PostgreSQL and SQLite need not agree on order


def test_demo_store_copies_into_postgres_row_for_row(pg_demo: dict[str, Any]) -> None:
    src = sa.create_engine(f"sqlite:///{pg_demo['sqlite']}")
    dst = sa.create_engine(pg_demo["url"])
    try:
        si, di = sa.inspect(src), sa.inspect(dst)
        tables = si.get_table_names()
        assert tables and sorted(pg_demo["counts"]) == sorted(tables)
        assert sorted(di.get_table_names()) == sorted(tables)
        for name in tables:
            src_rows, dst_rows = _all_rows(src, name), _all_rows(dst, name)
            assert len(dst_rows) == len(src_rows) == pg_demo["counts"][name], name
            for i, (a, b) in enumerate(zip(src_rows, dst_rows, strict=True)):
                assert a == b, f"table {name!r}: row {i} differs"

            # the schema came along: keys, NOT NULL, foreign keys, indexes
            assert (
                di.get_pk_constraint(name)["constrained_columns"]
                == si.get_pk_constraint(name)["constrained_columns"]
            ), name
            src_not_null = {c["name"] for c in si.get_columns(name) if not c["nullable"]}
            dst_not_null = {c["name"] for c in di.get_columns(name) if not c["nullable"]}
            # PostgreSQL adds NOT NULL on primary keys, where SQLite (text keys) may not have it
            assert src_not_null <= dst_not_null, name

            def fks(insp: Any, table: str = name) -> set[tuple[Any, ...]]:
                return {
                    (
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                    )
                    for f in insp.get_foreign_keys(table)
                }

            def indexes(insp: Any, table: str = name) -> set[tuple[Any, ...]]:
                return {
                    (i["name"], tuple(i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(table)
                }

            assert fks(di) == fks(si), name
            assert indexes(di) == indexes(si), name
    finally:
        src.dispose()
        dst.dispose()


def test_serial_ids_continue_after_the_copy(pg_demo: dict[str, Any]) -> None:
    src = sa.create_engine(f"sqlite:///{pg_demo['sqlite']}")
    dst = sa.create_engine(pg_demo["url"])
    try:
        si = sa.inspect(src)
        # SQLite's single INTEGER primary keys (rowid aliases) are PostgreSQL serials
        expected = set()
        for name in si.get_table_names():
            pk = si.get_pk_constraint(name)["constrained_columns"]
            types = {c["name"]: c["type"] for c in si.get_columns(name)}
            if len(pk) == 1 and isinstance(types[pk[0]], sa.Integer):
                expected.add((name, pk[0]))
        assert expected, "the demo store has no integer keys left to check"
        with dst.connect() as conn:
            for name, col in sorted(expected):
                seq = conn.execute(
                    sa.text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": name, "c": col}
                ).scalar()
                assert seq is not None, f"{name}.{col} has no sequence"
                top = conn.execute(sa.text(f'SELECT MAX("{col}") FROM "{name}"')).scalar()
                if top is None:
                    continue
                others = [
                    f'"{c["name"]}"' for c in sa.inspect(conn).get_columns(name) if c["name"] != col
                ]
                # a copy of an existing row, id left to the sequence: must not collide
                new_id = conn.execute(
                    sa.text(
                        f'INSERT INTO "{name}" ({", ".join(others)}) SELECT '
                        f'{", ".join(others)} FROM "{name}" LIMIT 1 RETURNING "{col}"'
                    )
                ).scalar()
                conn.rollback()  # the copy stays as copied for the other tests
                assert new_id == top + 1, (name, col)
    finally:
        src.dispose()
        dst.dispose()


def _task_view(task: Any) -> dict[str, Any]:
    return {
        "prompt": [m.model_dump() for m in task.prompt],
        "answer": task.answer,
        "privileged_context": task.privileged_context,
        "split": task.split,
        "verifier": task.verifier,
        "source": task.source,
        "metadata": task.metadata,
    }


def test_ingest_from_postgres_gives_the_sqlite_snapshot(
    pg_demo: dict[str, Any],
    postgres_server: PostgresServer,
    demo_snapshot: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rlsd ingest` over the demo sources re-pointed at PostgreSQL: same tasks, same digest."""
    from rlsd.context.ingest import ingest
    from rlsd.context.snapshot import load_snapshot

    data = yaml.safe_load(DEMO_SOURCES.read_text())
    pg_url = _pg_url(postgres_server, pg_demo["db"])
    repointed = set()
    for src in data["sources"]:
        # only sources over the demo store: that is the database copied into PostgreSQL
        if DEMO_STORE_REF in src["url"]:
            src["url"] = pg_url
            repointed.add(src["name"])
    assert repointed == {s.name for s in demo_snapshot.snapshot.manifest.sources}
    pg_file = tmp_path / "demo_sources.yaml"  # same stem: same snapshot name
    pg_file.write_text(yaml.safe_dump(data, sort_keys=False))

    password = postgres_server.password
    monkeypatch.delenv("RLSD_DEMO_STORE", raising=False)
    monkeypatch.setenv(PW_ENV, password)
    for pg_cfg in load_sources(pg_file):
        # the loaded config -- and so anything that prints or logs it -- holds no secret
        for shown in (repr(pg_cfg), str(pg_cfg), pg_cfg.model_dump_json()):
            assert password not in shown and f"${{{PW_ENV}}}" in shown
        assert pg_cfg.url == pg_url and password in pg_cfg.resolved_url()

    res = ingest(pg_file, out_root=tmp_path / "snaps")
    assert res.snapshot.digest == demo_snapshot.snapshot.digest
    assert res.snapshot.manifest.counts == demo_snapshot.snapshot.manifest.counts
    want = {t.id: _task_view(t) for t in load_snapshot(demo_snapshot.path).tasks}
    got = {t.id: _task_view(t) for t in load_snapshot(res.path).tasks}
    assert got == want
    evidence = "".join(p.read_text() for p in res.path.rglob("*") if p.is_file())
    assert password not in evidence
    assert all(f"${{{PW_ENV}}}" in s.url for s in res.snapshot.manifest.sources)


PLANTED = [
    ("kb-null", "What is 1 plus 1?", None, "Add 1 and 1: 1 + 1 = 2.", "wiki/n", "math-answer"),
    ("kb-1", "Duplicate id: what is 1 plus 1?", "2", "Add 1 and 1 to get 2.", "wiki/d", "math-answer"),
    ("kb-fmt", "What is 5 plus 5?", "ten", "Add 5 and 5: 5 + 5 = 10.", "wiki/f", "math-answer"),
    ("kb-leak", "What is 2+2? Hint: add 2 and 2 to get 4.", "4", "Add 2 and 2 to get 4.", "wiki/l", "math-answer"),
]  # fmt: skip


def _kb_source(url: str, max_bad: float) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "kb-postgres",
            "url": url,
            "table": "kb",
            "columns": {
                "id": "ref",
                "prompt": "ask",
                "answer": "gold",
                "privileged_context": "solution",
                "source": "origin",
                "verifier": "tool",
            },
            "domain": "arithmetic",
            "expectations": {"answer_regex": "^-?[0-9]+$", "answer_length": [1, 8]},
            "policy": {"max_bad_fraction": max_bad},
        }
    )


def test_bad_rows_planted_in_postgres_are_quarantined_by_name(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = sa.create_engine(postgres_server.create_database("planted"))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE kb (ref text, ask text, gold text, solution text, origin text, "
                    "tool text)"
                )
            )
            conn.execute(
                sa.text("INSERT INTO kb VALUES (:ref, :ask, :gold, :solution, :origin, :tool)"),
                [
                    dict(zip(("ref", "ask", "gold", "solution", "origin", "tool"), r, strict=True))
                    for r in [*GOOD_ROWS, *PLANTED]
                ],
            )
    finally:
        engine.dispose()
    monkeypatch.setenv(PW_ENV, postgres_server.password)
    out = validate_source(_kb_source(_pg_url(postgres_server, "planted"), 0.5), VERIFIERS)
    reasons: dict[str, list[str]] = {}
    for q in out.quarantined:
        reasons.setdefault(q["id"], []).extend(q["reasons"])
    assert reasons["kb-null"] == ["expect_column_values_to_not_be_null(answer)"]
    assert reasons["kb-1"] == ["expect_column_values_to_be_unique(id)"] * 2  # both copies held
    assert reasons["kb-fmt"] == ["expect_column_values_to_match_regex(answer)"]
    # the leak guard's name differs by where it runs (a GE expectation over a derived column,
    # or the task record's validator); either way one check, and it says what leaked
    assert len(reasons["kb-leak"]) == 1
    assert "privileged" in reasons["kb-leak"][0]
    assert sorted(reasons) == ["kb-1", "kb-fmt", "kb-leak", "kb-null"]
    assert sorted(t.id for t in out.tasks) == sorted(r[0] for r in GOOD_ROWS if r[0] != "kb-1")


def test_missing_password_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # no server needed: the reference is resolved before any connection is tried
    monkeypatch.delenv(PW_ENV, raising=False)
    url = f"postgresql+psycopg://rlsd:${{{PW_ENV}}}@127.0.0.1:5432/kb"
    cfg = _kb_source(url, 0.0)
    for call in (lambda: read_source(cfg), lambda: validate_source(cfg, VERIFIERS)):
        with pytest.raises(MissingEnvVarError, match=PW_ENV):
            call()
    store = tmp_path / "one.sqlite"
    sqlite3.connect(store).close()
    with pytest.raises(MissingEnvVarError, match=PW_ENV) as exc:
        copy_store(f"sqlite:///{store}", url)
    assert "destination url" in str(exc.value)


def test_copy_errors_name_the_table_and_column(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    store = tmp_path / "odd.sqlite"
    con = sqlite3.connect(store)
    con.executescript(
        "CREATE TABLE parent (id TEXT PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id TEXT REFERENCES parent(id),"
        " n INTEGER, note TEXT);"
        "INSERT INTO parent VALUES ('p');"
        "INSERT INTO child VALUES (1, 'p', 5, 'fine'), (2, 'p', 'five', 'typed loosely');"
    )
    con.commit()
    con.close()
    src = f"sqlite:///{store}"
    dst = postgres_server.create_database("copy_errors")

    with pytest.raises(StoreCopyError, match=r"no table\(s\) \['nope'\]"):
        copy_store(src, dst, ["nope"])
    with pytest.raises(StoreCopyError, match="'child' column 'parent_id' refers to table 'parent'"):
        copy_store(src, dst, ["child"])
    # SQLite keeps a string in an INTEGER column; PostgreSQL would not: named before sending
    with pytest.raises(StoreCopyError, match=r"table 'child' column 'n' \(id=2\)"):
        copy_store(src, dst)
    with sqlite3.connect(store) as con:
        con.execute("UPDATE child SET n = 6, note = 'nul' || char(0) WHERE id = 2")
    with pytest.raises(StoreCopyError, match=r"table 'child' column 'note' \(id=2\).*NUL"):
        copy_store(src, dst)

    with sqlite3.connect(store) as con:
        con.execute("UPDATE child SET note = 'fixed' WHERE id = 2")
    assert copy_store(src, dst) == {"parent": 1, "child": 2}
    with pytest.raises(StoreCopyError, match=r"already has table\(s\) \['parent'\]"):
        copy_store(src, dst, ["parent"], replace=False)
    with pytest.raises(StoreCopyError, match="cannot replace destination table 'parent'"):
        copy_store(src, dst, ["parent"])  # 'child' still refers to it
    assert copy_store(src, dst) == {"parent": 1, "child": 2}  # replacing both is fine
