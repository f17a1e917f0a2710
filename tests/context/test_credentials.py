"""Credentials of context sources, under attack: a literal password is refused however it is
written, a password from the environment may hold any character and still connects (to a real
PostgreSQL server), and no error message, manifest or snapshot file carries a piece of it.

Every secret here is built from two distinctive fragments (``Zq7`` and ``Wx9k``) joined by the
character under test, so "no fragment of the secret" is checked fragment by fragment: a parser
that cuts a password at its '@' or '/' leaks the tail, not the whole.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from rlsd.context import (
    MissingEnvVarError,
    SourceConfig,
    SourceConfigError,
    load_sources,
    read_source,
)
from rlsd.context.ingest import ingest
from rlsd.context.manifest import SnapshotManifest
from rlsd.context.report import sources_table
from tests.helpers.context_store import GOOD_ROWS
from tests.helpers.postgres import PostgresServer

FRAGMENTS = ("Zq7", "Wx9k")
PW_ENV = "RLSD_TEST_CRED_PASSWORD"
USER_ENV = "RLSD_TEST_CRED_USER"
DB = "rlsd_credentials"
COLUMNS = {
    "id": "ref",
    "prompt": "ask",
    "answer": "gold",
    "privileged_context": "solution",
    "source": "origin",
    "verifier": "tool",
}


def _secret(sep: str) -> str:
    return f"{FRAGMENTS[0]}{sep}{FRAGMENTS[1]}"


def _assert_no_fragment(text: str, what: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, f"{what} holds {fragment!r} of the secret:\n{text}"


def _source(url: str, name: str = "kb") -> dict[str, Any]:
    return {"name": name, "url": url, "table": "kb", "columns": COLUMNS, "domain": "arithmetic"}


def _write(tmp_path: Path, url: str, name: str = "kb") -> Path:
    path = tmp_path / "sources.yaml"
    # JSON is YAML: no quoting rules of our own to get right around '#', ':' or '%'
    path.write_text(json.dumps({"sources": [_source(url, name)]}))
    return path


# -- literal passwords ------------------------------------------------------------------------

LITERAL = {
    "slash": "postgresql+psycopg://app:Zq7/Wx9k@db.internal:5432/kb",
    "at": "postgresql+psycopg://app:Zq7@Wx9k@db.internal:5432/kb",
    "leading-at": "postgresql+psycopg://app:@Zq7Wx9k@db.internal:5432/kb",
    "slash-and-at": "postgresql+psycopg://app:Zq7/x:y@Wx9k@db.internal/kb",
    "colon-hash-question": "postgresql+psycopg://app:Zq7:#?Wx9k@db.internal/kb",
    "percent-escaped-slash": "postgresql+psycopg://app:Zq7%2FWx9k@db.internal:5432/kb",
    "percent-escaped-at": "postgresql+psycopg://app:Zq7%40Wx9k@db.internal/kb",
    # an escaped "${...}" is text that decodes to a reference, not a reference
    "escaped-reference": "postgresql+psycopg://app:%24%7BZq7Wx9k%7D@db.internal/kb",
    "reference-inside": "postgresql+psycopg://app:Zq7${PW}Wx9k@db.internal/kb",
    "query-password": "mysql+pymysql://app@db.internal/kb?password=Zq7/Wx9k",
    "query-sslpassword": "postgresql+psycopg://app@db.internal/kb?sslpassword=Zq7@Wx9k",
    "odbc-pwd": "mssql+pyodbc://db.internal/kb?odbc_connect=DRIVER%3D%7Bx%7D%3BPWD%3DZq7%2FWx9k",
    # unparsable: where the secret sits cannot be told, so the URL is not quoted at all
    "secret-as-port": "postgresql+psycopg://app@db.internal:Zq7Wx9k/kb",
}


@pytest.mark.parametrize("url", LITERAL.values(), ids=LITERAL.keys())
def test_literal_password_is_refused_without_quoting_it(url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, url, name="kb-orders")
    with pytest.raises(SourceConfigError) as exc:
        load_sources(path)
    msg = str(exc.value)
    assert str(path) in msg and "sources[0].url" in msg and "'kb-orders'" in msg, msg
    assert "literal password" in msg or "not a SQLAlchemy URL" in msg, msg
    _assert_no_fragment(msg, "the load_sources error")

    # built in code, pydantic's own message must not quote the input either
    with pytest.raises(ValidationError) as direct:
        SourceConfig.model_validate(_source(url, name="kb-orders"))
    _assert_no_fragment(str(direct.value), "the validation error")
    _assert_no_fragment(repr(direct.value), "the validation error's repr")


ALLOWED = [
    "postgresql+psycopg://app:${KB_PASSWORD}@db.internal:5432/kb",
    "postgresql+psycopg://${KB_USER}:${KB_PASSWORD}@${KB_HOST}:5432/${KB_DB}",
    "postgresql+psycopg://ops@corp:${KB_PASSWORD}@db.internal/kb",  # an Azure-style username
    "postgresql+psycopg://app:@db.internal/kb",  # an empty password is no secret
    "mysql+pymysql://app@db.internal/kb?password=${KB_PASSWORD}&charset=utf8mb4",
    "sqlite:////data/team@corp/kb.sqlite",  # an '@' in a path, no password anywhere
    "sqlite:///${KB_DIR}/kb.sqlite",
    "${KB_URL}",  # the whole URL from the environment
]


@pytest.mark.parametrize("url", ALLOWED)
def test_credentials_by_reference_are_accepted(url: str) -> None:
    assert SourceConfig.model_validate(_source(url)).url == url


# -- resolution: every character, field by field ---------------------------------------------


def test_resolution_escapes_what_the_url_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    password = "p@ss/w:rd#?% x+%41"
    cfg = SourceConfig.model_validate(
        _source("postgresql+psycopg://${KB_USER}:${KB_PASSWORD}@db.internal:5432/${KB_DB}")
    )
    monkeypatch.setenv("KB_USER", "ops@corp:eu")
    monkeypatch.setenv("KB_PASSWORD", password)
    monkeypatch.setenv("KB_DB", "kb main")
    url = sa.engine.make_url(cfg.resolved_url())  # what create_engine will read back
    assert (url.username, url.password, url.host, url.port, url.database) == (
        "ops@corp:eu", password, "db.internal", 5432, "kb main"
    )  # fmt: skip
    assert password not in repr(cfg) and password not in cfg.model_dump_json()


def test_missing_variable_is_named_with_its_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KB_PASSWORD", raising=False)
    cfg = SourceConfig.model_validate(_source("postgresql+psycopg://app:${KB_PASSWORD}@db/kb"))
    with pytest.raises(MissingEnvVarError, match=r"'kb'.*\$\{KB_PASSWORD\} \(in its password\)"):
        cfg.resolved_url()


def test_resolution_errors_quote_no_value(monkeypatch: pytest.MonkeyPatch) -> None:
    # a whole-URL variable that holds no URL
    monkeypatch.setenv("KB_URL", f"not a url {_secret(' ')}")
    with pytest.raises(SourceConfigError, match=r"\$\{KB_URL\} does not hold") as exc:
        SourceConfig.model_validate(_source("${KB_URL}")).resolved_url()
    _assert_no_fragment(str(exc.value), "the whole-URL error")
    # a host that cannot be written in a URL (it would be read back as host + database)
    monkeypatch.setenv("KB_HOST", _secret("/"))
    cfg = SourceConfig.model_validate(_source("postgresql+psycopg://app@${KB_HOST}/kb"))
    with pytest.raises(SourceConfigError, match="in its host cannot be written") as exc:
        cfg.resolved_url()
    _assert_no_fragment(str(exc.value), "the round-trip error")


# -- a real PostgreSQL server --------------------------------------------------------------


class Roles:
    """Login roles on the test server, each with the password a test gives it."""

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self._n = itertools.count()

    def create(self, password: str, name: str | None = None) -> str:
        from psycopg import sql

        name = name or f"cred_{next(self._n)}"
        with self.server.admin_connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
        with self.server.admin_connect(DB) as conn:
            conn.execute(sql.SQL("GRANT SELECT ON kb TO {}").format(sql.Identifier(name)))
        return name

    def url(self, user: str) -> str:
        """A sources file's URL for ``user``: the password as an env reference."""
        return f"postgresql+psycopg://{user}:${{{PW_ENV}}}@127.0.0.1:{self.server.port}/{DB}"


@pytest.fixture(scope="module")
def roles(postgres_server: PostgresServer) -> Roles:
    engine = sa.create_engine(postgres_server.create_database(DB))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "CREATE TABLE kb (ref text, ask text, gold text, solution text, origin text,"
                    " tool text)"
                )
            )
            conn.execute(
                sa.text("INSERT INTO kb VALUES (:ref, :ask, :gold, :solution, :origin, :tool)"),
                [dict(zip(("ref", "ask", "gold", "solution", "origin", "tool"), r, strict=True))
                 for r in GOOD_ROWS],
            )  # fmt: skip
    finally:
        engine.dispose()
    return Roles(postgres_server)


SPECIAL = {"at": "@", "slash": "/", "colon": ":", "hash": "#", "question": "?", "percent": "%",
           "space": " "}  # fmt: skip


@pytest.mark.parametrize("char", SPECIAL.values(), ids=SPECIAL.keys())
def test_env_password_with_special_character_connects(
    char: str, roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "%41" after the character: unescaped text substitution would turn it into "A"
    password = f"{FRAGMENTS[0]}{char}41{FRAGMENTS[1]}{char}"
    user = roles.create(password)
    monkeypatch.setenv(PW_ENV, password)
    (cfg,) = load_sources(_write(tmp_path, roles.url(user)))
    rows = read_source(cfg)
    assert sorted(r["id"] for r in rows) == sorted(r[0] for r in GOOD_ROWS)


def test_env_username_and_password_with_every_character_connect(
    roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = "".join(SPECIAL.values()).join(FRAGMENTS) + "%41+"
    user = roles.create(password, name="ops@corp:eu #1")
    monkeypatch.setenv(USER_ENV, user)
    monkeypatch.setenv(PW_ENV, password)
    port = roles.server.port
    url = f"postgresql+psycopg://${{{USER_ENV}}}:${{{PW_ENV}}}@127.0.0.1:{port}/{DB}"
    (cfg,) = load_sources(_write(tmp_path, url))
    assert len(read_source(cfg)) == len(GOOD_ROWS)


def test_a_wrong_password_fails_without_quoting_it(
    roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = roles.create("right-one")
    # unescaped, its '@' would make "Wx9k..." the host, named in the connection error
    monkeypatch.setenv(PW_ENV, f"{FRAGMENTS[0]}@{FRAGMENTS[1]}/x")
    (cfg,) = load_sources(_write(tmp_path, roles.url(user)))
    # SQLAlchemy's and the driver's own message: the server was reached and refused the login
    engine = sa.create_engine(cfg.resolved_url(), poolclass=sa.NullPool)
    with pytest.raises(sa.exc.OperationalError) as raw:
        engine.connect()
    assert "password authentication failed" in str(raw.value)
    _assert_no_fragment(str(raw.value), "the connection error")
    with pytest.raises(Exception) as exc:  # noqa: PT011 - whatever the reader reduces it to
        read_source(cfg)
    _assert_no_fragment(str(exc.value), "the read error")


def test_ingested_manifest_holds_no_password(
    roles: Roles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = _secret("@/:#?% ")
    user = roles.create(password)
    monkeypatch.setenv(PW_ENV, password)
    template = roles.url(user)
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowed_sources: ['*']\n")
    res = ingest(_write(tmp_path, template, name="kb-pg"), policy_path=policy,
                 out_root=tmp_path / "snaps")  # fmt: skip
    assert res.snapshot.manifest.counts.tasks > 0
    # the template, which names the variable: the same wherever the snapshot is made
    assert [s.url for s in res.snapshot.manifest.sources] == [template]
    for f in res.path.rglob("*"):
        if f.is_file():
            _assert_no_fragment(f.read_text(encoding="utf-8", errors="replace"), str(f))


def test_old_manifest_with_a_literal_password_is_shown_masked() -> None:
    """A manifest written before literal passwords were refused (or by hand) is shown by the
    sources table -- `rlsd ingest`, the ingest artifact, the lineage report -- masked."""
    record = {"name": "kb", "url": f"postgresql+psycopg://app:{_secret('/')}@db.internal/kb",
              "query_sha256": "sha256:0", "domain": "arithmetic", "verifier": "math-answer",
              "split_column": False, "heldout_fraction": 0.1, "rows": 1, "tasks": 1,
              "quarantined": 0, "bad_fraction": 0.0, "max_bad_fraction": 0.0,
              "validation_success": True, "redactions": {}}  # fmt: skip
    manifest = SnapshotManifest.model_validate(
        {"format": "rlsd-snapshot/1", "name": "old", "digest": "sha256:0", "created_at": "",
         "counts": {"tasks": 1, "train": 1, "heldout": 0, "by_domain": {}, "by_source": {}},
         "files": {}, "sources": [record]}
    )  # fmt: skip
    shown = sources_table(manifest, ["source", "url"]).markdown()
    assert "postgresql+psycopg://app:***@db.internal/kb" in shown
    _assert_no_fragment(shown, "the sources table")
