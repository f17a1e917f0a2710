"""URIs shown without their secrets (rlsd/uris.py), and the places that show one: the lines
`rlsd retrain` prints, the lineage report and its error, the pipeline's parent run (its link,
its tags) on a real PostgreSQL-backed MLflow store.

Secrets are built from two distinctive fragments (``Zq7``, ``Wx9k``): a masker that cuts a
password at its '@' or '/' leaks the tail, and the tail is what is looked for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from rlsd.uris import MASK, mask_uri, mask_uri_in
from tests.helpers.postgres import PostgresServer

FRAGMENTS = ("Zq7", "Wx9k")


def _assert_no_fragment(text: str, what: str = "output") -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, f"{what} holds {fragment!r} of the secret:\n{text}"


MASKED = {
    # MLflow tracking / registry servers (http basic auth in the URI)
    "http": ("http://alice:Zq7Wx9k@mlflow.internal:5000", "http://alice:***@mlflow.internal:5000"),
    "https-fragment": (
        "https://alice:Zq7Wx9k@mlflow.internal/#/experiments/1",
        "https://alice:***@mlflow.internal/#/experiments/1",
    ),
    "https-unescaped": (
        "https://alice:Zq7@/:#?Wx9k@mlflow.internal/api",
        "https://alice:***@mlflow.internal/api",
    ),
    "https-token-as-user": ("https://Zq7Wx9k@mlflow.internal", "https://***@mlflow.internal"),
    "https-query-token": (
        "https://mlflow.internal/api?token=Zq7Wx9k&x=1#top",
        "https://mlflow.internal/api?token=***&x=1#top",
    ),
    "databricks-token": (
        "databricks://token:Zq7Wx9k@adb-1.azuredatabricks.net",
        "databricks://token:***@adb-1.azuredatabricks.net",
    ),
    # SQLAlchemy URLs (an MLflow backend store, a context source): SQLAlchemy renders them
    "postgresql": (
        "postgresql+psycopg://mlflow:Zq7Wx9k@db:5432/mlflow",
        "postgresql+psycopg://mlflow:***@db:5432/mlflow",
    ),
    "postgresql-escaped": (
        "postgresql://mlflow:Zq7%40%2F%3AWx9k@db/mlflow",
        "postgresql://mlflow:***@db/mlflow",
    ),
    # SQLAlchemy would read "Wx9k@db" as the host: masked as text up to the last '@'
    "postgresql-unescaped-at": (
        "postgresql://mlflow:Zq7@Wx9k@db:5432/mlflow",
        "postgresql://mlflow:***@db:5432/mlflow",
    ),
    "postgresql-unescaped-at-slash": (
        "postgresql://mlflow:Zq7@x/y:Wx9k@db:5432/mlflow",
        "postgresql://mlflow:***@db:5432/mlflow",
    ),
    "mysql-query": (
        "mysql+pymysql://mlflow@db/mlflow?password=Zq7Wx9k&charset=utf8mb4",
        "mysql+pymysql://mlflow@db/mlflow?password=***&charset=utf8mb4",
    ),
    "odbc-connect": (
        "mssql+pyodbc://db/mlflow?odbc_connect=DRIVER%3D%7Bx%7D%3BPWD%3DZq7Wx9k%3BUID%3Du",
        "mssql+pyodbc://db/mlflow?odbc_connect=DRIVER%3D%7Bx%7D%3BPWD%3D***%3BUID%3Du",
    ),
    # unparsable (a non-numeric port): text masking all the same
    "unparsable": ("postgresql://u:Zq7Wx9k@db:port/x", "postgresql://u:***@db:port/x"),
}

UNCHANGED = [
    "databricks",
    "databricks://my-profile",
    "databricks://scope:prefix",  # a secret scope's name, not a secret
    "databricks-uc",
    "file:///srv/mlruns",
    "/srv/mlruns",
    "./mlruns",
    "sqlite:////srv/mlflow/mlflow.db",
    "sqlite:///${RLSD_DEMO_STORE}",
    "sqlite:////data/team@corp/kb.sqlite",
    "mlflow-artifacts:/1/abc/artifacts",
    "s3://bucket/mlflow",
    "http://127.0.0.1:5000",
    "https://host/path?mail=a@b.example",
    # a whole ${VAR} reference names where the secret lives; it is not one
    "postgresql+psycopg://app:${PGPASSWORD}@db:5432/kb",
    "postgresql+psycopg://app:@db/kb",
    "",
]


@pytest.mark.parametrize(("uri", "expected"), MASKED.values(), ids=MASKED.keys())
def test_mask_uri_hides_the_password(uri: str, expected: str) -> None:
    masked = mask_uri(uri)
    assert masked == expected
    _assert_no_fragment(masked)
    assert mask_uri(masked) == masked  # idempotent: masking twice on the way out is harmless


@pytest.mark.parametrize("uri", UNCHANGED)
def test_mask_uri_leaves_what_holds_no_secret_as_written(uri: str) -> None:
    assert mask_uri(uri) == uri


@pytest.mark.parametrize(
    "junk",
    ["://", "a://@", "x://:@", "postgresql://[::1", "http://[bad:Zq7Wx9k@h", "\x00://u:Zq7Wx9k@",
     "postgresql://u:Zq7Wx9k@[::1]:notaport/db", "%%%://%:%@%", "http://u:Zq7Wx9k@"],
)  # fmt: skip
def test_mask_uri_never_raises_and_hides_userinfo_of_junk(junk: str) -> None:
    masked = mask_uri(junk)
    assert isinstance(masked, str)
    _assert_no_fragment(masked)


def test_an_escaped_reference_is_masked_as_text_it_is() -> None:
    # "%24%7B...%7D" decodes to "${...}", but as written it is a literal password
    assert mask_uri("postgresql://app:%24%7BZq7Wx9k%7D@db/kb") == "postgresql://app:***@db/kb"


def test_mask_uri_in_masks_a_quoted_uri_in_a_message() -> None:
    uri = "http://alice:Zq7@Wx9k@mlflow.internal:5000/"
    msg = f"API request to {uri.rstrip('/')}/api/2.0/mlflow/runs/get failed; store {uri}"
    out = mask_uri_in(msg, uri)
    assert out.count("http://alice:***@mlflow.internal:5000") == 2
    _assert_no_fragment(out)
    assert mask_uri_in(msg, "file:///srv/mlruns") == msg


# -- the places that show a URI -----------------------------------------------------------


def test_retrain_output_masks_the_tracking_and_prefect_uris() -> None:
    from rlsd.cli import retrain_pointers

    out = {"tracking_uri": "postgresql+psycopg://mlflow:Zq7@Wx9k@db:5432/mlflow",
           "mlflow_run_id": "r1", "flow_run_id": "f1", "registered_model": "m", "version": "3"}  # fmt: skip
    text = retrain_pointers(out, "https://admin:Zq7/Wx9k@prefect.internal/api")
    _assert_no_fragment(text, "the retrain output")
    assert "mlflow ui --backend-store-uri postgresql+psycopg://mlflow:***@db:5432/mlflow" in text
    assert "https://admin:***@prefect.internal/runs/flow-run/f1" in text
    http = retrain_pointers({**out, "tracking_uri": "https://u:Zq7Wx9k@mlflow.internal"}, None)
    assert http.startswith(f"MLflow UI:  https://u:{MASK}@mlflow.internal  (run r1)")


def test_lineage_report_masks_every_uri_it_shows() -> None:
    from rlsd.context.manifest import SnapshotManifest
    from rlsd.tracking import conventions as C
    from rlsd.tracking.lineage import Lineage, render_markdown

    record = {"name": "kb", "url": "postgresql+psycopg://app:Zq7/Wx9k@db.internal/kb",
              "query_sha256": "sha256:0", "domain": "arithmetic", "verifier": "math-answer",
              "split_column": False, "heldout_fraction": 0.1, "rows": 1, "tasks": 1,
              "quarantined": 0, "bad_fraction": 0.0, "max_bad_fraction": 0.0,
              "validation_success": True, "redactions": {}}  # fmt: skip
    manifest = SnapshotManifest.model_validate(
        {"format": "rlsd-snapshot/1", "name": "old", "digest": "sha256:0", "created_at": "",
         "counts": {"tasks": 1, "train": 1, "heldout": 0, "by_domain": {}, "by_source": {}},
         "files": {}, "sources": [record]}
    )  # fmt: skip
    pipeline = {"run_id": "p1", "tags": {C.PREFECT_FLOW_RUN: "f1",
                C.PREFECT_FLOW_RUN_URL: "https://admin:Zq7@Wx9k@prefect.internal/runs/f1"}}  # fmt: skip
    ingest_run = {"run_id": "i1", "tags": {}, "params": {}, "metrics": {},
                  "inputs": [{"name": "snap", "digest": "d",
                              "source": "https://u:Zq7Wx9k@store.internal/snap"}]}  # fmt: skip
    lin = Lineage(
        name="m", version="3", aliases=["champion"], version_tags={},
        source="https://u:Zq7Wx9k@artifacts.internal/models/m", pipeline=pipeline,
        stages={"ingest_context": [ingest_run]}, manifest=manifest,
    )  # fmt: skip
    text = render_markdown(lin)
    _assert_no_fragment(text, "the lineage report")
    for shown in ("postgresql+psycopg://app:***@db.internal/kb",
                  "https://admin:***@prefect.internal/runs/f1",
                  "https://u:***@store.internal/snap", "https://u:***@artifacts.internal"):  # fmt: skip
        assert shown in text


def test_configure_silences_mlflows_url_print_for_a_uri_with_a_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlflow

    from rlsd.tracking.runs import SUPPRESS_URL_PRINT, configure

    previous = mlflow.get_tracking_uri()
    # set, then deleted: monkeypatch then removes what configure sets
    monkeypatch.setenv(SUPPRESS_URL_PRINT, "false")
    monkeypatch.delenv(SUPPRESS_URL_PRINT)
    try:
        configure("http://127.0.0.1:5000")
        assert SUPPRESS_URL_PRINT not in os.environ
        configure("http://alice:Zq7Wx9k@127.0.0.1:5000")
        assert os.environ[SUPPRESS_URL_PRINT] == "true"
    finally:
        mlflow.set_tracking_uri(previous)


# -- a real PostgreSQL-backed MLflow store, its URI holding a password ----------------------


@pytest.fixture(scope="module")
def pg_tracking(postgres_server: PostgresServer) -> Iterator[dict[str, Any]]:
    """MLflow tracking straight on a PostgreSQL database, as a role whose password holds
    ``@ / : # ? %`` and a space (escaped in the URI, as SQLAlchemy and MLflow require)."""
    import mlflow
    from psycopg import sql
    from sqlalchemy.engine import URL

    password = "Zq7@/:#?% Wx9k"
    with postgres_server.admin_connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE uris_mlflow LOGIN PASSWORD {}").format(sql.Literal(password))
        )
        conn.execute("CREATE DATABASE rlsd_uris_mlflow OWNER uris_mlflow TEMPLATE template0")
    uri = URL.create("postgresql+psycopg", username="uris_mlflow", password=password,
                     host=postgres_server.host, port=postgres_server.port,
                     database="rlsd_uris_mlflow").render_as_string(hide_password=False)  # fmt: skip
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # restored on exit
        mlflow.set_tracking_uri(uri)
        try:
            yield {"uri": uri, "password": password}
        finally:
            mlflow.set_tracking_uri(previous)


def test_parent_run_yields_masked_uri_link_and_tags(
    pg_tracking: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from rlsd.tracking import conventions as C
    from rlsd.tracking.records import parent_run

    monkeypatch.chdir(tmp_path)  # runs/mlflow defaults stay out of the checkout
    flow_url = "https://admin:Zq7/Wx9k@prefect.internal/runs/flow-run/f1"
    with parent_run("rlsd-test-uris", "{}", "n", "f1", flow_url, False) as (
        run_id, _exp, tracking, link,
    ):  # fmt: skip
        assert mlflow.get_tracking_uri() == pg_tracking["uri"]  # MLflow keeps the real one
        tags = mlflow.get_run(run_id).data.tags
    assert tracking == mask_uri(pg_tracking["uri"]) and f":{MASK}@" in tracking
    for shown in (tracking, link, *tags.values()):
        _assert_no_fragment(shown)
    assert tags[C.PREFECT_FLOW_RUN_URL] == "https://admin:***@prefect.internal/runs/flow-run/f1"


def test_lineage_error_masks_the_tracking_uri(pg_tracking: dict[str, Any]) -> None:
    from rlsd.tracking.lineage import LineageError, collect_lineage

    with pytest.raises(LineageError) as exc:
        collect_lineage("no-such-model@champion")
    msg = str(exc.value)
    assert mask_uri(pg_tracking["uri"]) in msg
    _assert_no_fragment(msg, "the lineage error")
