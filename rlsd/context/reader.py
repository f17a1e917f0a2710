"""Read a declared source through SQLAlchemy and turn its rows into task records.

``read_source`` returns plain dicts keyed by task field (the column mapping applied);
``rows_to_tasks`` builds :class:`rlsd.tasks.Task` records from them. A row that the task record
rejects -- missing fields, or a student prompt that contains its privileged context -- becomes a
quarantined row carrying the reason; nothing is dropped silently.

Rows are decoded value by value: a value that is not valid UTF-8 marks its row *undecodable*
(the row is quarantined alone, the rest of the source goes on) instead of failing the whole
read. Database errors never leave this module as the driver raised them: their messages may
quote row values (SQLite's decode error quotes the whole column, PostgreSQL's data errors the
offending value) or, for a bad URL, the password. They become a :class:`SourceReadError` that
names the source, the error's class and what kind of failure it is -- and says whether a retry
may help (only connection-level failures: refused, reset, server gone).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import create_engine, event, literal_column, select, table, text
from sqlalchemy.engine import make_url

from rlsd.context.config import SourceConfig
from rlsd.tasks import leak
from rlsd.tasks.record import ChatMessage, Task

# -- errors ----------------------------------------------------------------------------------


def _restore(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    obj = cls.__new__(cls)
    BaseException.__init__(obj, *args)
    return obj


class IngestError(RuntimeError):
    """An ingestion failed; the message names the source and quotes no row value, no database
    message and no credential (raised ``from None``: nothing raw rides along as a cause)."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        super().__init__(message)
        self.source = source

    def __str__(self) -> str:
        # KeyError (a base of SourceShapeError) would repr() the message
        return str(self.args[0]) if self.args else ""

    def __reduce__(self) -> tuple[Any, ...]:
        # Prefect pickles a failed task's exception; keyword-only fields travel in the state
        return (_restore, (type(self), self.args), self.__dict__)


class SourceShapeError(IngestError, KeyError):
    """The query does not return the columns the source maps (a KeyError, as it always was)."""


#: What each kind of read failure means, in the words the error shows (never the driver's).
READ_FAILURES: dict[str, str] = {
    "connection": "could not reach the database server (connection refused, reset or lost)",
    "host": "the database host name does not resolve",
    "authentication": "the database refused the credentials (check the values the URL's "
    "${VAR} references hold)",
    "missing_database": "the database does not exist",
    "missing_file": "the SQLite database file does not exist",
    "cannot_open": "the SQLite database file cannot be opened (permissions?)",
    "not_a_database": "the file is not a SQLite database (or is corrupt)",
    "missing_object": "the query names a table, column or function that does not exist",
    "permission": "permission denied on something the query reads",
    "syntax": "the query is not valid SQL for this database",
    "busy": "the database is locked by another process",
    "data": "the database could not convert a value (the value is withheld)",
    "url": "the URL is not a valid SQLAlchemy URL (it is not shown: it may hold a password)",
    "driver": "no database driver is installed for the URL's scheme",
    "other": "the database's message is withheld, as it may quote row values",
}
#: Failures a retry can cure: the server was unreachable or went away, nothing about the query.
TRANSIENT_FAILURES = frozenset({"connection"})


class SourceReadError(IngestError):
    """A source could not be read. ``kind`` is a key of :data:`READ_FAILURES`; ``transient`` says
    whether retrying may help; ``row`` is the 0-based position of the row being read, if any."""

    def __init__(
        self,
        source: str,
        kind: str,
        error_class: str,
        *,
        row: int | None = None,
        detail: str | None = None,
    ) -> None:
        where = f" at row {row}" if row is not None else ""
        what = detail or READ_FAILURES.get(kind, READ_FAILURES["other"])
        super().__init__(f"source {source!r}: {error_class}{where}: {what}", source=source)
        self.kind = kind
        self.error_class = error_class
        self.row = row
        self.transient = kind in TRANSIENT_FAILURES


_PG_TRANSIENT_STATES = {"57P01", "57P02", "57P03", "53300"}  # shutdown, crash, starting, full
_PG_STATES = {
    "3D000": "missing_database",
    "42P01": "missing_object",
    "42703": "missing_object",
    "42883": "missing_object",
    "42501": "permission",
    "42601": "syntax",
}
# libpq reports connection-time failures without a SQLSTATE: only its (English) text tells a
# refused connection from a wrong password. The text is read here and never passed on.
_CONNECT_TEXT = (
    ("password authentication failed", "authentication"),
    ("authentication failed", "authentication"),
    ("no password supplied", "authentication"),
    ("pg_hba.conf", "authentication"),
    ("does not exist", "missing_database"),
    ("failed to resolve host", "host"),
    ("could not translate host name", "host"),
    ("connection refused", "connection"),
    ("server closed the connection", "connection"),
    ("connection reset", "connection"),
    ("could not receive data", "connection"),
    ("could not send data", "connection"),
    ("terminating connection", "connection"),
    ("timeout expired", "connection"),
    ("no route to host", "connection"),
    ("network is unreachable", "connection"),
    ("the database system is starting up", "connection"),
    ("the database system is shutting down", "connection"),
    ("too many clients", "connection"),
)
_SQLITE_NAMES = {
    "SQLITE_CANTOPEN": "cannot_open",
    "SQLITE_NOTADB": "not_a_database",
    "SQLITE_CORRUPT": "not_a_database",
    "SQLITE_BUSY": "busy",
    "SQLITE_LOCKED": "busy",
    "SQLITE_PERM": "permission",
    "SQLITE_AUTH": "permission",
    "SQLITE_READONLY": "permission",
}


def classify_read_error(exc: BaseException) -> tuple[str, str]:
    """``(kind, class label)`` of an error raised while reading a source.

    Decided from the error's class, its SQLSTATE or SQLite error name, and -- for the failures
    libpq reports without a SQLSTATE -- its text; the label is class names only.
    """
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, SourceReadError):
        return exc.kind, exc.error_class
    orig = getattr(exc, "orig", None) if isinstance(exc, sa_exc.DBAPIError) else None
    label = type(exc).__name__
    if orig is not None and type(orig).__name__ != label:
        label = f"{label} ({type(orig).__name__})"
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return "connection", label  # the dialect recognised a lost connection
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return "connection", label
    if isinstance(exc, sa_exc.NoSuchModuleError | ImportError):
        return "driver", label
    if isinstance(exc, sa_exc.ArgumentError):
        return "url", label
    if isinstance(exc, ConnectionError | TimeoutError):
        return "connection", label
    if isinstance(exc, UnicodeDecodeError):
        return "data", label
    source = orig if orig is not None else exc
    if isinstance(source, sqlite3.Error):
        name = getattr(source, "sqlite_errorname", "") or ""
        if name in _SQLITE_NAMES:
            return _SQLITE_NAMES[name], label
        text_ = str(source).lower()
        if "no such table" in text_ or "no such column" in text_ or "no such function" in text_:
            return "missing_object", label
        if "syntax error" in text_:
            return "syntax", label
        if isinstance(source, sqlite3.DataError) or "could not decode" in text_:
            return "data", label
        return "other", label
    sqlstate = getattr(source, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        if sqlstate.startswith("08") or sqlstate in _PG_TRANSIENT_STATES:
            return "connection", label
        if sqlstate.startswith("28"):
            return "authentication", label
        if sqlstate.startswith("22"):
            return "data", label
        return _PG_STATES.get(sqlstate, "other"), label
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        text_ = str(source).lower()
        for needle, kind in _CONNECT_TEXT:
            if needle in text_:
                return kind, label
    return "other", label


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the read that raised ``exc`` may help: a connection-level failure."""
    if isinstance(exc, SourceReadError):
        return exc.transient
    if isinstance(exc, IngestError):
        return False
    return classify_read_error(exc)[0] in TRANSIENT_FAILURES


def read_failure(source: str, exc: BaseException, row: int | None = None) -> SourceReadError:
    """``exc`` reduced to a :class:`SourceReadError` (create it inside ``except``, raise it
    after the block: raised there, it would carry ``exc`` as its ``__context__``)."""
    kind, label = classify_read_error(exc)
    return SourceReadError(source, kind, label, row=row)


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Undecodable:
    """A value whose bytes are not valid UTF-8: its size and digest, never the bytes."""

    nbytes: int
    sha256: str

    @classmethod
    def of(cls, raw: bytes) -> Undecodable:
        return cls(len(raw), "sha256:" + hashlib.sha256(raw).hexdigest())


def _decode_text(raw: bytes) -> str | Undecodable:
    """SQLite's text factory: one value at a time, so a bad value marks its row instead of
    raising an error whose message quotes the column (privileged text, PII) and stops the read."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return Undecodable.of(raw)


def _as_text(value: Any) -> str | Undecodable | None:
    if value is None or isinstance(value, Undecodable):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        # a BLOB column, or text from a database that hands out bytes (SQL_ASCII)
        return _decode_text(bytes(value))
    return str(value)


def _metadata_value(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return _decode_text(bytes(value))
    return value


def _sqlite_file(url: str) -> Path | None:
    """The file a SQLite URL opens, if it names one (not memory, not a file: URI)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - create_engine reports the bad URL, cleanly
        return None
    db = parsed.database
    if parsed.get_backend_name() != "sqlite" or db in (None, "", ":memory:"):
        return None
    if db.startswith("file:") or parsed.query.get("uri"):
        return None
    return Path(db)


# -- reading ---------------------------------------------------------------------------------


def read_source(
    cfg: SourceConfig, variables: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Run the source's query (or read its table) and apply the column mapping.

    ``variables`` fill the URL's ``${VAR}`` references before the environment does.

    Each returned dict has the keys ``id, prompt, answer, privileged_context, split, source,
    verifier, domain, metadata, undecodable`` (values may be None where the row has none;
    validation decides). ``undecodable`` maps each column whose value is not valid UTF-8 to an
    :class:`Undecodable` (the field itself is then None). Raises :class:`SourceReadError` when
    the source cannot be read, :class:`SourceShapeError` when a mapped column is missing.
    """
    url = cfg.resolved_url(variables)
    sqlite_file = _sqlite_file(url)
    if sqlite_file is not None and not sqlite_file.exists():
        # sqlite would create an empty database there and fail later on "no such table"
        raise SourceReadError(
            cfg.name,
            "missing_file",
            "FileNotFoundError",
            detail=f"the SQLite database file {sqlite_file} does not exist",
        )
    failure: SourceReadError | None = None
    raw_rows: list[dict[str, Any]] = []
    try:
        engine = create_engine(url)
    except Exception as exc:  # noqa: BLE001 - reduced to its class; the URL may hold a password
        failure = read_failure(cfg.name, exc)
    if failure is not None:
        raise failure
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _per_value_decoding(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.text_factory = _decode_text

    try:
        stmt = (
            text(cfg.query)
            if cfg.query is not None
            else select(literal_column("*")).select_from(table(cfg.table))
        )
        with engine.connect() as conn:
            for r in conn.execute(stmt):  # row by row: a failure knows its row
                raw_rows.append(dict(r._mapping))
    except Exception as exc:  # noqa: BLE001 - reduced to its class, raised below
        failure = read_failure(cfg.name, exc, row=len(raw_rows) if raw_rows else None)
    finally:
        engine.dispose()
    if failure is not None:
        raise failure
    if raw_rows:
        wanted = set(cfg.columns.values()) | set(cfg.metadata_columns)
        missing = sorted(wanted - set(raw_rows[0]))
        if missing:
            raise SourceShapeError(
                f"source {cfg.name!r}: the query returns no column(s) {missing}; "
                f"it returns {sorted(raw_rows[0])}",
                source=cfg.name,
            )
    return [_map_row(cfg, row) for row in raw_rows]


def _map_row(cfg: SourceConfig, row: Mapping[str, Any]) -> dict[str, Any]:
    undecodable: dict[str, Undecodable] = {}
    mapped: dict[str, Any] = {}
    for f, c in cfg.columns.items():
        value = _as_text(row[c])
        if isinstance(value, Undecodable):
            undecodable[c] = value
            value = None
        mapped[f] = value
    metadata = {}
    for c in cfg.metadata_columns:
        value = _metadata_value(row[c])
        if isinstance(value, Undecodable):
            undecodable[c] = value
            value = None
        metadata[c] = value
    mapped.setdefault("split", None)
    mapped.setdefault("source", None)
    mapped.setdefault("verifier", None)
    mapped["split"] = mapped["split"] or hash_split(mapped.get("id"), cfg.heldout_fraction)
    mapped["verifier"] = mapped["verifier"] or cfg.verifier
    mapped["domain"] = cfg.domain
    mapped["metadata"] = metadata
    mapped["undecodable"] = undecodable
    return mapped


#: Salt of the split hash; changing it would reshuffle every snapshot, so it is versioned.
SPLIT_SALT = "rlsd-split-v1"


def hash_split(task_id: str | None, heldout_fraction: float) -> str:
    """'heldout' for a stable ``heldout_fraction`` share of ids, else 'train'.

    The position of an id in [0, 1) is its salted sha256, so the assignment depends on the id
    alone: adding or removing other rows never moves it.
    """
    if task_id is None:
        return "train"  # the row is quarantined for its null id anyway
    h = hashlib.sha256(f"{SPLIT_SALT}:{task_id}".encode()).digest()
    position = int.from_bytes(h[:8], "big") / 2**64
    return "heldout" if position < heldout_fraction else "train"


def privileged_digest(text_: str | None) -> str | None:
    """sha256 of privileged text: what artifacts record instead of the text itself."""
    if text_ is None:
        return None
    return "sha256:" + hashlib.sha256(text_.encode("utf-8")).hexdigest()


# -- quarantine ------------------------------------------------------------------------------

#: Fields of a quarantine record that show the row's own text to the reviewer.
SHOWN_FIELDS = ("id", "prompt", "answer")
#: A ``withhold`` reason that digests the field whatever the policy: a value over its length
#: limit is not copied into the evidence (it may be megabytes, and it was never checked).
OVER_LENGTH = "over_length"


def quarantine_record(
    cfg: SourceConfig,
    row: dict[str, Any],
    reasons: list[str],
    index: int,
    redact: Callable[[str], str] | None = None,
    *,
    withhold: Mapping[str, str] | None = None,
    store_privileged_text: bool = False,
    columns: Sequence[str] = (),
    pii: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    """A quarantine entry: why the row was held back, and as much of it as the policy allows.

    The privileged text is only ever its digest (or, where the policy sets
    ``store_privileged_text``, its redacted text). The prompt and answer are shown to the
    reviewer PII-redacted by ``redact`` -- unless they hold the privileged text, or ``withhold``
    names them (``field -> why``: a leak the guard found, a check that could not run); then they
    are withheld as a digest like the privileged text itself. ``columns`` and ``pii`` (column ->
    PII kinds) say where in the source row the trouble is; reasons and the id are redacted too
    (an id can itself be an e-mail address).
    """

    def scrub(value: Any) -> Any:
        return redact(value) if redact is not None and isinstance(value, str) else value

    undecodable: Mapping[str, Undecodable] = row.get("undecodable") or {}
    privileged = row.get("privileged_context")
    withheld = dict(withhold or {})
    priv_column = cfg.columns.get("privileged_context")
    for f in SHOWN_FIELDS:
        value = row.get(f)
        if not isinstance(value, str) or f in withheld:
            continue
        if isinstance(privileged, str) and leak.contains(value, privileged):
            withheld[f] = "contains_privileged"
        elif priv_column in undecodable and f != "id":
            withheld[f] = "privileged_undecodable"  # nothing to compare it with

    record: dict[str, Any] = {
        "source": cfg.name,
        "row_index": index,
        "privileged_sha256": privileged_digest(privileged)
        if privileged is not None
        else (undecodable[priv_column].sha256 if priv_column in undecodable else None),
        "reasons": [scrub(r) for r in reasons],
    }
    for f in SHOWN_FIELDS:
        value = row.get(f)
        if f in withheld and isinstance(value, str):
            keep = store_privileged_text and withheld[f] != OVER_LENGTH
            record[f] = scrub(value) if keep else None
            record[f"{f}_sha256"] = privileged_digest(value)
        else:
            record[f] = scrub(value)
    if store_privileged_text and isinstance(privileged, str):
        record["privileged_context"] = scrub(privileged)
    if withheld:
        record["withheld"] = dict(sorted(withheld.items()))
    named = list(dict.fromkeys([*columns, *undecodable]))
    if named:
        record["columns"] = named
    if undecodable:
        record["undecodable"] = {c: {"bytes": u.nbytes} for c, u in undecodable.items()}
    if pii:
        record["pii"] = {c: sorted(k) for c, k in sorted(pii.items())}
    return record


def row_to_task(cfg: SourceConfig, row: dict[str, Any]) -> Task:
    """Build one task record (raises pydantic ValidationError / ValueError when it is invalid)."""
    if row.get("undecodable"):
        raise ValueError(f"undecodable column(s) {sorted(row['undecodable'])}")
    if row.get("prompt") is None:
        raise ValueError("prompt is null")
    messages = []
    if cfg.system_prompt:
        messages.append(ChatMessage(role="system", content=cfg.system_prompt))
    messages.append(
        ChatMessage(role="user", content=cfg.prompt_template.replace("{prompt}", row["prompt"]))
    )
    provenance = row.get("source")
    return Task(
        id=row.get("id"),
        prompt=messages,
        answer=row.get("answer"),
        privileged_context=row.get("privileged_context"),
        verifier=row.get("verifier"),
        split=row.get("split"),
        source=f"context:{cfg.name}" + (f" {provenance}" if provenance else ""),
        metadata={"domain": cfg.domain, "context_source": cfg.name, **row.get("metadata", {})},
    )


def task_record_reason(exc: Exception) -> str:
    """Why the task record refused a row, as a quarantine reason (no input values: pydantic's
    messages name the rule, its ``input`` -- the value -- is left out)."""
    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "record"
            parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        return "task_record: " + "; ".join(parts)
    return f"task_record: {exc}"


def rows_to_tasks(
    cfg: SourceConfig,
    rows: list[dict[str, Any]],
    redact: Callable[[str], str] | None = None,
    *,
    store_privileged_text: bool = False,
) -> tuple[list[Task], list[dict[str, Any]]]:
    """Map rows to tasks; rows the task record rejects come back as quarantine entries (an
    undecodable row with the reason ``undecodable``)."""
    tasks, quarantined = [], []
    for i, row in enumerate(rows):
        if row.get("undecodable"):
            quarantined.append(
                quarantine_record(cfg, row, ["undecodable"], i, redact,
                                  store_privileged_text=store_privileged_text)
            )  # fmt: skip
            continue
        try:
            tasks.append(row_to_task(cfg, row))
        except (ValidationError, ValueError, TypeError) as exc:
            quarantined.append(
                quarantine_record(cfg, row, [task_record_reason(exc)], i, redact,
                                  store_privileged_text=store_privileged_text)
            )  # fmt: skip
    return tasks, quarantined
