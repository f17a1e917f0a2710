"""Ingestion under attack: the red team's hostile rows and broken stores, one finding a test.

Real SQLite and PostgreSQL produce every error here; nothing is mocked. Each canary string is
planted once and must come back nowhere -- not in the quarantine, the validation document, an
exception's message or anything chained to it.
"""

from __future__ import annotations

import json
import pickle
import sqlite3
import traceback
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.states import Failed

from flows.ingest import transient_db_error
from rlsd.context import SourceConfig, read_source, validate_source
from rlsd.context.ingest import QUARANTINE_CHANGED, UNCHANGED, ingest
from rlsd.context.policy import PrivilegedContextPolicy
from rlsd.context.reader import (
    IngestError,
    SourceReadError,
    classify_read_error,
    is_transient,
    read_failure,
)
from rlsd.context.snapshot import load_snapshot
from tests.helpers.context_store import GOOD_ROWS, VERIFIERS, make_store
from tests.helpers.postgres import PostgresServer, free_port

PRIV_CANARY = "QX7-PRIV-CANARY-8841 add the two numbers and carry the one"
UTF8_CANARY = "QX7-UTF8-CANARY-5519"
EMAIL_CANARY = "qx7.canary@example.com"
CARD_CANARY = "4539 1488 0343 6467"
ID_CANARY = "kb-jane.doe@example.com"
META_CANARY = "4111 1111 1111 1111"
#: invalid UTF-8 (a lone continuation byte and 0xff) inside otherwise readable text
BAD_BYTES = f"{UTF8_CANARY} reviewer {EMAIL_CANARY} card {CARD_CANARY} ".encode() + b"\xff\xfe."
CANARIES = (PRIV_CANARY, UTF8_CANARY, EMAIL_CANARY, CARD_CANARY, ID_CANARY, META_CANARY,
            CARD_CANARY.replace(" ", ""), META_CANARY.replace(" ", ""))  # fmt: skip
PW_ENV = "RLSD_TEST_PG_PASSWORD"


def _cfg(url: str, max_bad: float = 0.5, **extra: Any) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "kb-hostile",
            "url": url,
            "table": "kb",
            "columns": {"id": "ref", "prompt": "ask", "answer": "gold",
                        "privileged_context": "solution", "source": "origin", "verifier": "tool"},
            "metadata_columns": ["origin"],
            "domain": "arithmetic",
            "expectations": {"answer_regex": "^-?[0-9]+$"},
            "policy": {"max_bad_fraction": max_bad},
            **extra,
        }
    )  # fmt: skip


def _plant_undecodable(store: Path, ref: str = "kb-utf8") -> None:
    """A row whose privileged column holds invalid UTF-8 (stored as TEXT, as a bad import would)."""
    with sqlite3.connect(store) as con:
        con.execute(
            "INSERT INTO kb VALUES (?, ?, ?, CAST(? AS TEXT), ?, ?)",
            (ref, "What is 2 plus 5?", "7", BAD_BYTES, "wiki/u", "math-answer"),
        )


def _assert_clean(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text, canary


def _evidence_text(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def _assert_clean_error(exc: BaseException) -> None:
    """Nothing raw in the message, the chain, the formatted traceback or the pickled form."""
    assert exc.__cause__ is None and exc.__context__ is None
    _assert_clean("".join(traceback.format_exception(exc)))
    _assert_clean(repr(pickle.dumps(exc)))


# -- undecodable rows ------------------------------------------------------------------------


def test_an_undecodable_row_is_quarantined_alone_and_the_source_goes_on(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    _plant_undecodable(store)
    cfg = _cfg(f"sqlite:///{store}")
    rows = read_source(cfg)  # the old reader raised on the first undecodable value
    assert len(rows) == len(GOOD_ROWS) + 1
    bad = rows[-1]
    assert bad["id"] == "kb-utf8" and bad["privileged_context"] is None
    assert set(bad["undecodable"]) == {"solution"}
    assert bad["undecodable"]["solution"].nbytes == len(BAD_BYTES)
    _assert_clean(repr(bad))

    out = validate_source(cfg, VERIFIERS, out_dir=tmp_path / "v")
    assert sorted(t.id for t in out.tasks) == sorted(r[0] for r in GOOD_ROWS)
    (q,) = out.quarantined
    assert q["id"] == "kb-utf8" and q["row_index"] == len(GOOD_ROWS)
    assert q["reasons"] == ["undecodable"] and q["columns"] == ["solution"]
    assert q["privileged_sha256"].startswith("sha256:")
    # nothing can be compared with a privileged text that cannot be read: withheld
    assert q["prompt"] is None and q["answer"] is None
    assert q["withheld"] == {"answer": "privileged_undecodable", "prompt": "privileged_undecodable"}
    assert out.results["rlsd"]["n_undecodable"] == 1
    _assert_clean(_evidence_text(tmp_path / "v"))


def test_the_decode_error_sqlite_raises_is_reduced_to_its_class(tmp_path: Path) -> None:
    """The error the old reader let through -- its message quotes the whole column -- becomes
    the source's name and the error's class, chained to nothing."""
    store = make_store(tmp_path / "kb.sqlite", [])
    _plant_undecodable(store)
    engine = sa.create_engine(f"sqlite:///{store}")  # SQLite's own decoding, as before
    failure = None
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT * FROM kb")).fetchall()
    except sa.exc.OperationalError as exc:
        assert UTF8_CANARY in str(exc)  # what used to reach stderr and Prefect
        assert not transient_db_error(None, None, Failed(data=exc))  # and it was retried
        failure = read_failure("kb-hostile", exc, row=0)
    finally:
        engine.dispose()
    assert isinstance(failure, SourceReadError)
    assert str(failure).startswith("source 'kb-hostile': OperationalError at row 0:")
    assert failure.kind == "data" and not failure.transient
    _assert_clean(str(failure))


# -- database errors: clean, named, retried only when a retry can help -----------------------


def _read_error(cfg: SourceConfig) -> SourceReadError:
    with pytest.raises(SourceReadError) as info:
        read_source(cfg)
    exc = info.value
    assert str(exc).startswith(f"source {cfg.name!r}: ")
    _assert_clean_error(exc)
    # Prefect pickles a failed task's exception: the classification must survive it
    back = pickle.loads(pickle.dumps(exc))
    assert (str(back), back.kind, back.transient) == (str(exc), exc.kind, exc.transient)
    return exc


def test_sqlite_errors_name_the_source_and_are_not_retried(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    missing_table = _read_error(_cfg(f"sqlite:///{store}", table="no_such_table"))
    assert missing_table.kind == "missing_object"
    # a missing file: named, and not created empty behind the user's back
    nowhere = tmp_path / "absent.sqlite"
    missing_file = _read_error(_cfg(f"sqlite:///{nowhere}"))
    assert missing_file.kind == "missing_file" and str(nowhere) in str(missing_file)
    assert not nowhere.exists()
    not_a_db = tmp_path / "notes.sqlite"
    not_a_db.write_text(f"{PRIV_CANARY}\n" * 200)
    garbage = _read_error(_cfg(f"sqlite:///{not_a_db}"))
    assert garbage.kind == "not_a_database"
    for exc in (missing_table, missing_file, garbage):
        assert not exc.transient
        assert not transient_db_error(None, None, Failed(data=exc))


def test_ingest_errors_name_the_source(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    src = _cfg(f"sqlite:///{store}", table="missing").model_dump(mode="json")
    sources = tmp_path / "sources.yaml"
    sources.write_text(json.dumps({"sources": [src]}))
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowed_sources: ['*']\n")
    with pytest.raises(IngestError, match=r"^source 'kb-hostile': OperationalError: ") as info:
        ingest(sources, policy_path=policy, out_root=tmp_path / "snaps")
    assert info.value.source == "kb-hostile"
    _assert_clean_error(info.value)


def _pg_cfg(server: PostgresServer, db: str, **extra: Any) -> SourceConfig:
    url = f"postgresql+psycopg://{server.user}:${{{PW_ENV}}}@127.0.0.1:{server.port}/{db}"
    return _cfg(url, **extra)


def test_postgres_errors_are_classified_and_only_connection_loss_is_retried(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_server.create_database("hostile_errors")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kb (ref text, ask text, gold text, "
                                 "solution text, origin text, tool text)"))  # fmt: skip
            conn.execute(
                sa.text("INSERT INTO kb VALUES ('kb-1', :ask, '2', :sol, 'wiki', 'math-answer')"),
                {"ask": PRIV_CANARY, "sol": PRIV_CANARY},
            )
    finally:
        engine.dispose()
    monkeypatch.setenv(PW_ENV, postgres_server.password)

    cases = {
        "missing_object": _pg_cfg(postgres_server, "hostile_errors", table="no_such_table"),
        "missing_database": _pg_cfg(postgres_server, "no_such_db"),
        # PostgreSQL quotes the value it cannot convert: the canary, in the driver's message
        "data": _pg_cfg(
            postgres_server,
            "hostile_errors",
            table=None,
            query="SELECT ref, CAST(ask AS integer) AS ask, gold, solution, origin, tool FROM kb",
        ),  # fmt: skip
    }
    for kind, cfg in cases.items():
        exc = _read_error(cfg)
        assert exc.kind == kind and not exc.transient, (kind, str(exc))
        assert not transient_db_error(None, None, Failed(data=exc))

    wrong = "not-the-password-" + postgres_server.password[:6]
    monkeypatch.setenv(PW_ENV, wrong)
    auth = _read_error(_pg_cfg(postgres_server, "hostile_errors"))
    assert auth.kind == "authentication" and not auth.transient
    assert wrong not in str(auth) and postgres_server.password not in str(auth)
    assert not transient_db_error(None, None, Failed(data=auth))

    monkeypatch.setenv(PW_ENV, postgres_server.password)
    refused = _read_error(_pg_cfg(postgres_server, "hostile_errors").model_copy(
        update={"url": f"postgresql+psycopg://{postgres_server.user}:${{{PW_ENV}}}"
                       f"@127.0.0.1:{free_port()}/hostile_errors"}))  # fmt: skip
    assert refused.kind == "connection" and refused.transient
    assert transient_db_error(None, None, Failed(data=refused))


def test_a_server_that_goes_away_mid_session_is_retried(postgres_server: PostgresServer) -> None:
    """The raw error of a terminated backend (what a failover looks like) is transient; the
    errors a retry cannot cure, raised by the same server, are not."""
    url = postgres_server.create_database("hostile_gone")
    engine = sa.create_engine(url)
    errors: dict[str, BaseException] = {}
    try:
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with postgres_server.admin_connect() as admin:
                admin.execute(f"SELECT pg_terminate_backend({pid})")
            try:
                conn.execute(sa.text("SELECT 1"))
            except sa.exc.DBAPIError as exc:
                errors["gone"] = exc
        with engine.connect() as conn:
            try:
                conn.execute(sa.text("SELECT * FROM no_such_table"))
            except sa.exc.DBAPIError as exc:
                errors["missing"] = exc
    finally:
        engine.dispose()
    assert classify_read_error(errors["gone"])[0] == "connection" and is_transient(errors["gone"])
    assert transient_db_error(None, None, Failed(data=errors["gone"]))
    assert not transient_db_error(None, None, Failed(data=errors["missing"]))


# -- quarantine evidence ---------------------------------------------------------------------

LEAK_ROW = ("kb-leak", f"What is 8 plus 5? Hint: {PRIV_CANARY}.", "13", PRIV_CANARY, "wiki/l",
            "math-answer")  # fmt: skip


def test_a_prompt_holding_its_privileged_text_is_kept_only_as_a_digest(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", [*GOOD_ROWS, LEAK_ROW])
    out = validate_source(_cfg(f"sqlite:///{store}"), VERIFIERS, out_dir=tmp_path / "v")
    (q,) = out.quarantined
    # the reviewer still learns which row, which check and which columns
    assert q["id"] == "kb-leak" and q["row_index"] == len(GOOD_ROWS)
    assert q["reasons"] == ["expect_column_values_to_be_in_set(student_prompt_contains_privileged)"]
    assert q["columns"] == ["ask", "solution"]
    assert q["prompt"] is None and q["prompt_sha256"].startswith("sha256:")
    assert q["withheld"] == {"prompt": "contains_privileged"}
    assert q["answer"] == "13" and "privileged_context" not in q
    _assert_clean(_evidence_text(tmp_path / "v"))


def test_store_privileged_text_keeps_the_redacted_text_for_the_reviewer(tmp_path: Path) -> None:
    row = ("kb-leak", f"Hint: {PRIV_CANARY}, mail ops@corp.example.com", "13",
           f"{PRIV_CANARY}, mail ops@corp.example.com", "wiki/l", "math-answer")  # fmt: skip
    store = make_store(tmp_path / "kb.sqlite", [*GOOD_ROWS, row])
    policy = PrivilegedContextPolicy(allowed_sources=["*"], store_privileged_text=True)
    out = validate_source(_cfg(f"sqlite:///{store}"), VERIFIERS, policy=policy)
    (q,) = out.quarantined
    assert PRIV_CANARY in q["prompt"] and "[REDACTED:email]" in q["prompt"]
    assert q["privileged_context"] == f"{PRIV_CANARY}, mail [REDACTED:email]"
    assert "ops@corp.example.com" not in json.dumps(q)


def test_the_leak_guard_runs_after_the_length_limits(tmp_path: Path) -> None:
    """A row over its length limits is quarantined for its length alone: the leak guard (and its
    cost on a huge row) never runs on it, and its unchecked text stays out of the evidence."""
    huge = PRIV_CANARY + " and so on" * 3000  # over privileged_length's 30_000
    row = ("kb-huge", f"What is 8 plus 5? {huge}", "13", huge, "wiki/h", "math-answer")
    store = make_store(tmp_path / "kb.sqlite", [*GOOD_ROWS, row])
    cfg = _cfg(f"sqlite:///{store}", expectations={
        "answer_regex": "^-?[0-9]+$", "prompt_length": [1, 40_000],
        "privileged_length": [1, 30_000]})  # fmt: skip
    out = validate_source(cfg, VERIFIERS, out_dir=tmp_path / "v")
    (q,) = out.quarantined
    assert q["reasons"] == ["expect_column_value_lengths_to_be_between(privileged_context)"]
    assert q["withheld"] == {"prompt": "leak_guard_not_run"} and q["prompt"] is None
    assert out.results["rlsd"]["n_outside_length_bounds"] == 1
    _assert_clean(_evidence_text(tmp_path / "v"))


# -- PII beyond the text columns -------------------------------------------------------------


def test_pii_in_id_metadata_and_number_columns_is_quarantined_and_redacted(tmp_path: Path) -> None:
    store = tmp_path / "kb.sqlite"
    con = sqlite3.connect(store)
    con.execute("CREATE TABLE kb (ref TEXT, ask TEXT, gold TEXT, solution TEXT, origin TEXT, "
                "tool TEXT, ticket INTEGER)")  # fmt: skip
    rows = [(*r, 1000 + i) for i, r in enumerate(GOOD_ROWS)] + [
        (ID_CANARY, "What is 1 plus 2?", "3", "Add 1 and 2: 1 + 2 = 3.", "wiki/i", "math-answer", 7),
        ("kb-meta", "What is 2 plus 2?", "4", "Add 2 and 2: 2 + 2 = 4.", f"export {META_CANARY}",
         "math-answer", 8),
        ("kb-num", "What is 3 plus 3?", "6", "Add 3 and 3: 3 + 3 = 6.", "wiki/n", "math-answer",
         int(CARD_CANARY.replace(" ", ""))),
    ]  # fmt: skip
    con.executemany("INSERT INTO kb VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    cfg = _cfg(f"sqlite:///{store}", metadata_columns=["origin", "ticket"])
    out = validate_source(cfg, VERIFIERS, out_dir=tmp_path / "v")
    assert sorted(t.id for t in out.tasks) == sorted(r[0] for r in GOOD_ROWS)
    by_index = {q["row_index"]: q for q in out.quarantined}
    n = len(GOOD_ROWS)
    assert by_index[n]["id"] == "[REDACTED:email]" and by_index[n]["pii"] == {"ref": ["email"]}
    assert by_index[n]["reasons"] == ["expect_column_values_to_be_in_set(pii_in_id)"]
    assert by_index[n]["columns"] == ["ref"]
    assert by_index[n + 1]["pii"] == {"origin": ["card_number"]}
    assert set(by_index[n + 1]["reasons"]) == {
        "expect_column_values_to_be_in_set(pii_in_source)",
        "expect_column_values_to_be_in_set(pii_in_metadata)",
    }
    assert by_index[n + 2]["pii"] == {"ticket": ["card_number"]}
    assert by_index[n + 2]["reasons"] == ["expect_column_values_to_be_in_set(pii_in_metadata)"]
    evidence = _evidence_text(tmp_path / "v")
    _assert_clean(evidence)  # the validation document lists the failing ids redacted too
    assert '"[REDACTED:email]"' in evidence


# -- re-ingestion ----------------------------------------------------------------------------


def test_reingesting_unchanged_tasks_records_the_new_bad_rows(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        json.dumps({"sources": [_cfg(f"sqlite:///{store}").model_dump(mode="json")]})
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowed_sources: ['*']\n")
    snaps = tmp_path / "snaps"
    first = ingest(sources, policy_path=policy, out_root=snaps)
    assert first.created and first.evidence == first.path and first.quarantined == 0

    with sqlite3.connect(store) as con:  # new bad rows; the good ones -- the tasks -- unchanged
        con.execute("INSERT INTO kb VALUES ('kb-new-bad', 'What is 4 plus 4?', 'eight', "
                    "'Add 4 and 4.', 'wiki/b', 'math-answer')")  # fmt: skip
    _plant_undecodable(store)
    second = ingest(sources, policy_path=policy, out_root=snaps)
    assert not second.created and second.path == first.path
    assert second.snapshot.digest == first.snapshot.digest
    assert second.status == QUARANTINE_CHANGED and second.quarantined == 2
    assert second.evidence != second.path and second.evidence.is_relative_to(snaps / "evidence")
    lines = (second.evidence / "quarantine" / "kb-hostile.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["kb-new-bad", "kb-utf8"]
    record = json.loads((second.evidence / "evidence.json").read_text())
    assert record["quarantine_sha256"] == second.quarantine_sha256 != first.quarantine_sha256
    assert record["snapshot"] == first.path.name and record["quarantined"] == 2
    summary = json.loads((second.evidence / "validation" / "summary.json").read_text())
    assert summary["sources"]["kb-hostile"]["n_quarantined"] == 2
    # the snapshot itself is as it was written (its manifest records the first ingestion)
    assert (first.path / "quarantine" / "kb-hostile.jsonl").read_text() == ""
    assert load_snapshot(first.path).manifest.validation.quarantined == 0
    _assert_clean(_evidence_text(snaps))

    third = ingest(sources, policy_path=policy, out_root=snaps)  # the same evidence again
    assert third.status == QUARANTINE_CHANGED and third.evidence == second.evidence
    assert len(list((snaps / "evidence" / first.path.name).iterdir())) == 1

    with sqlite3.connect(store) as con:  # bad rows gone: the snapshot's own evidence again
        con.execute("DELETE FROM kb WHERE ref IN ('kb-new-bad', 'kb-utf8')")
    fourth = ingest(sources, policy_path=policy, out_root=snaps)
    assert fourth.status == UNCHANGED and fourth.evidence == first.path


def test_the_ingest_stage_logs_this_ingestions_evidence_to_mlflow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from rlsd.context.stage import ingest_stage
    from rlsd.tracking.records import record_ingest

    store = make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        json.dumps({"sources": [_cfg(f"sqlite:///{store}").model_dump(mode="json")]})
    )
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowed_sources: ['*']\n")
    args = dict(sources=str(sources), demo_store=str(tmp_path / "unused.sqlite"),
                policy=str(policy), snapshots_dir=str(tmp_path / "snaps"),
                verifiers_root=None, only=None)  # fmt: skip
    ingest_stage(**args)
    with sqlite3.connect(store) as con:
        con.execute("INSERT INTO kb VALUES ('kb-new-bad', 'What is 4 plus 4?', 'eight', "
                    "'Add 4 and 4.', 'wiki/b', 'math-answer')")  # fmt: skip
    out = ingest_stage(**args)
    assert out.status == QUARANTINE_CHANGED and out.quarantined == 1
    assert "tasks unchanged, quarantine changed" in out.markdown()

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_experiment("hostile-ingest")
    with mlflow.start_run() as parent:
        record_ingest(parent.info.run_id, out)
    client = mlflow.MlflowClient()
    (child,) = client.search_runs(
        [parent.info.experiment_id], filter_string="tags.`rlsd.stage` = 'ingest_context'"
    )
    assert child.data.params["ingest_status"] == QUARANTINE_CHANGED
    assert child.data.params["quarantine_sha256"] == out.quarantine_sha256
    assert child.data.metrics["quarantined"] == 1.0
    local = Path(client.download_artifacts(child.info.run_id, "dataset", str(tmp_path / "dl")))
    assert "kb-new-bad" in (local / "quarantine" / "kb-hostile.jsonl").read_text()
    assert json.loads((local / "evidence.json").read_text())["quarantined"] == 1
