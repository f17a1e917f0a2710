"""Copy tables between SQLAlchemy databases: e.g. the SQLite demo store into PostgreSQL.

A test helper (the PostgreSQL source tests copy the demo store with it); the product reads
stores, it never copies them.

``copy_store(src_url, dst_url)`` reflects the source schema and recreates it in the
destination -- columns with portable types, primary keys, NOT NULL, unique and CHECK
constraints, foreign keys, indexes and portable server defaults -- then copies the rows in
batches, parents before children, all in one destination transaction (on PostgreSQL a failure
leaves the destination as it was). In PostgreSQL the sequences behind serial columns are then
set to the largest copied value, so the next insert without an id does not collide.

Across dialects types go through SQLAlchemy's generic types (SQLite ``TEXT`` -> ``Text``,
``DATETIME`` -> ``DateTime``...); SQLite columns declared without a type become ``Text``.
Server defaults that are not plain literals or ``CURRENT_*`` are dropped with a warning
(their SQL belongs to the source dialect), as are collations. CHECK constraints are copied
verbatim: one written in SQL the destination does not accept fails the copy, naming the table.
Because SQLite lets any value sit in any column, each batch is checked against the declared
column types before it is sent, and a misfit names the table, column and row key (never the
value: it may be privileged text).

URLs may carry ``${ENV_VAR}`` references (credentials), resolved here and never echoed back:
errors show URLs with the password hidden.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.types import NullType

from rlsd.context.config import resolve_env

log = logging.getLogger(__name__)

# Server defaults every SQL dialect reads the same way.
_PORTABLE_DEFAULT = re.compile(
    r"^(?:-?\d+(?:\.\d+)?|'(?:[^']|'')*'|NULL|TRUE|FALSE|"
    r"CURRENT_TIMESTAMP|CURRENT_DATE|CURRENT_TIME)$",
    re.IGNORECASE,
)
_DDL_TARGET = re.compile(r"CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX)\s+(\S+)", re.IGNORECASE)


class StoreCopyError(RuntimeError):
    """A copy could not be made; the message names the table (and column) at fault."""


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except SQLAlchemyError:
        return "<unparseable url>"


def _db_message(exc: BaseException) -> str:
    """The database's own one-line reason, without SQL parameters or row contents.

    SQLAlchemy's str() appends the statement's parameters and PostgreSQL's DETAIL may quote a
    whole failing row: both could carry privileged text, so only the primary message and the
    names of the column/constraint at fault are kept.
    """
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    primary = getattr(diag, "message_primary", None) or (str(orig).strip().splitlines() or [""])[0]
    extra = []
    if diag is not None:
        if getattr(diag, "column_name", None):
            extra.append(f"column {diag.column_name!r}")
        if getattr(diag, "constraint_name", None):
            extra.append(f"constraint {diag.constraint_name!r}")
    return primary + (f" ({', '.join(extra)})" if extra else "")


# -- schema --------------------------------------------------------------------------------


def _portable_type(table: str, col: sa.Column[Any], same_dialect: bool, dst: Engine) -> Any:
    coltype = col.type
    if isinstance(coltype, NullType):
        # SQLite columns declared without a type: text is the closest container, and the batch
        # check refuses (naming the column) a non-text value rather than converting it silently
        return sa.Text()
    if same_dialect:
        return coltype
    try:
        generic = coltype.as_generic()
    except NotImplementedError:
        raise StoreCopyError(
            f"table {table!r} column {col.name!r}: type {coltype!r} has no portable "
            f"equivalent for {dst.dialect.name}"
        ) from None
    if getattr(generic, "collation", None):
        log.warning(
            "table %r column %r: collation %r dropped (it names a source-dialect collation)",
            table,
            col.name,
            generic.collation,
        )
        generic.collation = None
    try:
        generic.compile(dialect=dst.dialect)
    except SQLAlchemyError as exc:
        raise StoreCopyError(
            f"table {table!r} column {col.name!r}: type {coltype!r} (as {generic!r}) cannot be "
            f"declared in {dst.dialect.name}: {exc}"
        ) from None
    return generic


def _server_default(table: str, col: sa.Column[Any], same_dialect: bool) -> Any:
    default = col.server_default
    if default is None or not isinstance(default, sa.DefaultClause):
        return None
    arg = default.arg
    sql = arg if isinstance(arg, str) else str(getattr(arg, "text", arg))
    if "nextval(" in sql:  # a serial column's sequence: recreated by autoincrement instead
        return None
    if same_dialect:
        return sa.DefaultClause(arg if isinstance(arg, str) else sa.text(sql))
    inner = sql.strip()
    while inner.startswith("(") and inner.endswith(")"):
        inner = inner[1:-1].strip()
    if not _PORTABLE_DEFAULT.match(inner):
        log.warning(
            "table %r column %r: server default %r dropped (not portable SQL)", table, col.name, sql
        )
        return None
    if isinstance(col.type, sa.Boolean) and inner in ("0", "1"):
        inner = "TRUE" if inner == "1" else "FALSE"  # SQLite spells booleans as integers
    return sa.DefaultClause(sa.text(inner))


def _target_table(src: sa.Table, dst_md: sa.MetaData, same_dialect: bool, dst: Engine) -> sa.Table:
    columns = []
    for col in src.columns:
        autoincrement: Any = col.autoincrement
        if col.identity is not None:
            # GENERATED ALWAYS would refuse the copied ids: a serial (BY DEFAULT) column instead
            autoincrement = True
        columns.append(
            sa.Column(
                col.name,
                _portable_type(src.name, col, same_dialect, dst),
                primary_key=col.primary_key,
                # SQLite lets a non-integer PK hold NULL; everywhere else a PK is NOT NULL
                nullable=False if col.primary_key else col.nullable,
                autoincrement=autoincrement,
                server_default=_server_default(src.name, col, same_dialect),
                comment=col.comment,
            )
        )
    constraints: list[Any] = []
    pk_name = src.primary_key.name if same_dialect else None
    if pk_name:
        constraints.append(sa.PrimaryKeyConstraint(*src.primary_key.columns.keys(), name=pk_name))
    for fk in src.foreign_key_constraints:
        constraints.append(
            sa.ForeignKeyConstraint(
                [c.name for c in fk.columns],
                [f"{e.column.table.name}.{e.column.name}" for e in fk.elements],
                name=fk.name,
                ondelete=fk.ondelete,
                onupdate=fk.onupdate,
                deferrable=fk.deferrable,
                initially=fk.initially,
            )
        )
    for cons in src.constraints:
        if isinstance(cons, sa.UniqueConstraint):
            constraints.append(sa.UniqueConstraint(*cons.columns.keys(), name=cons.name))
        elif isinstance(cons, sa.CheckConstraint):
            sqltext = str(getattr(cons.sqltext, "text", cons.sqltext))
            constraints.append(sa.CheckConstraint(sa.text(sqltext), name=cons.name))
    table = sa.Table(src.name, dst_md, *columns, *constraints, comment=src.comment)
    for index in src.indexes:
        cols = [c.name for c in index.columns]
        if len(cols) != len(index.expressions):  # an expression index: its SQL is dialect's own
            log.warning("table %r: index %r skipped (expression index)", src.name, index.name)
            continue
        sa.Index(index.name, *(table.c[c] for c in cols), unique=index.unique)
    return table


# -- data ----------------------------------------------------------------------------------

_ACCEPTS: list[tuple[type, tuple[type, ...]]] = [
    (sa.Boolean, (bool, int)),
    (sa.Integer, (int,)),
    (sa.Numeric, (int, float, decimal.Decimal)),  # Float is a Numeric
    (sa.String, (str,)),  # Text, Unicode, Enum are Strings
    (sa.LargeBinary, (bytes, bytearray, memoryview)),
    (sa.DateTime, (dt.datetime,)),
    (sa.Date, (dt.date,)),
    (sa.Time, (dt.time,)),
]


def _checker(table: sa.Table) -> list[tuple[str, str, tuple[type, ...], int | None]]:
    out = []
    for col in table.columns:
        for sa_type, accepts in _ACCEPTS:
            if isinstance(col.type, sa_type):
                length = getattr(col.type, "length", None) if sa_type is sa.String else None
                out.append((col.name, repr(col.type), accepts, length))
                break
    return out


def _check_batch(
    table: sa.Table, rows: list[dict[str, Any]], checks: list[Any], pg: bool, offset: int
) -> None:
    pk = [c.name for c in table.primary_key.columns]
    for n, row in enumerate(rows):
        for name, type_repr, accepts, length in checks:
            value = row[name]
            if value is None:
                continue
            problem = None
            if not isinstance(value, accepts) or (isinstance(value, bool) and bool not in accepts):
                problem = f"holds a value of type {type(value).__name__}, not {type_repr}"
            elif isinstance(value, str):
                if length is not None and len(value) > length:
                    problem = f"holds {len(value)} characters, more than {type_repr} allows"
                elif pg and "\x00" in value:
                    problem = "holds a NUL character, which PostgreSQL text cannot store"
            if problem:
                where = ", ".join(f"{k}={row[k]!r}" for k in pk) if pk else f"row {offset + n + 1}"
                raise StoreCopyError(
                    f"table {table.name!r} column {name!r} ({where}) {problem}; fix the row "
                    "or the column's declared type in the source"
                )


def _reset_sequences(conn: Connection, tables: Iterable[sa.Table]) -> None:
    preparer = conn.dialect.identifier_preparer
    for table in tables:
        for col in table.columns:
            if not isinstance(col.type, sa.Integer):
                continue
            seq = conn.execute(
                sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                {"t": preparer.format_table(table), "c": col.name},
            ).scalar()
            if seq is None:
                continue
            qcol, qtab = preparer.quote(col.name), preparer.format_table(table)
            # is_called=false on an empty table, so the first id is the sequence's start
            conn.execute(
                sa.text(
                    f"SELECT setval(:seq, COALESCE((SELECT MAX({qcol}) FROM {qtab}), 1), "
                    f"(SELECT MAX({qcol}) FROM {qtab}) IS NOT NULL)"
                ),
                {"seq": seq},
            )


# -- the copy ------------------------------------------------------------------------------


def _engine(url: str, role: str) -> Engine:
    try:
        parsed = sa.engine.make_url(url)
    except SQLAlchemyError as exc:
        raise StoreCopyError(f"{role} url is not a SQLAlchemy URL: {exc}") from None
    if (
        role == "source"
        and parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not parsed.database.startswith("file:")
        and not Path(parsed.database).exists()
    ):
        # sqlite would silently create an empty database and copy nothing
        raise StoreCopyError(f"source SQLite file {parsed.database} does not exist")
    try:
        return sa.create_engine(parsed)
    except (SQLAlchemyError, ImportError) as exc:
        raise StoreCopyError(f"cannot use the {role} url {_safe_url(url)}: {exc}") from None


def copy_store(
    src_url: str,
    dst_url: str,
    tables: list[str] | None = None,
    *,
    replace: bool = True,
    batch_size: int = 1000,
) -> dict[str, int]:
    """Copy ``tables`` (default: every table) from ``src_url`` to ``dst_url``.

    With ``replace`` (the default) destination tables of the same names are dropped and
    recreated; without it an existing one is an error (nothing is appended or mixed). A foreign
    key to a table outside ``tables`` must find that table in the destination already.
    Returns ``{table: rows copied}`` in copy order (parents first).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    src_resolved = resolve_env(src_url, what="source url")
    dst_resolved = resolve_env(dst_url, what="destination url")
    if src_resolved == dst_resolved:
        raise StoreCopyError(f"source and destination are the same database {_safe_url(src_url)}")
    src = _engine(src_resolved, "source")
    dst = _engine(dst_resolved, "destination")
    try:
        return _copy(src, dst, tables, replace=replace, batch_size=batch_size)
    finally:
        src.dispose()
        dst.dispose()


def _copy(
    src: Engine, dst: Engine, tables: list[str] | None, *, replace: bool, batch_size: int
) -> dict[str, int]:
    same_dialect = src.dialect.name == dst.dialect.name
    src_md = sa.MetaData()
    try:
        with src.connect() as conn:
            available = sa.inspect(conn).get_table_names()
            wanted = list(dict.fromkeys(tables)) if tables is not None else available
            unknown = [t for t in wanted if t not in available]
            if unknown:
                raise StoreCopyError(
                    f"source has no table(s) {unknown}; it has {sorted(available)}"
                )
            src_md.reflect(conn, only=wanted)
    except DBAPIError as exc:
        raise StoreCopyError(
            f"cannot read the source schema at {src.url.render_as_string(hide_password=True)}: "
            f"{_db_message(exc)}"
        ) from None
    src_tables = [src_md.tables[t] for t in wanted]
    try:
        # one transaction: on PostgreSQL (transactional DDL) a failed copy leaves no trace
        with dst.begin() as conn:
            return _copy_into(conn, src, src_tables, wanted, same_dialect, dst, replace, batch_size)
    except DBAPIError as exc:
        raise StoreCopyError(
            f"destination {dst.url.render_as_string(hide_password=True)}: {_db_message(exc)}"
        ) from None


def _copy_into(
    conn: Connection,
    src: Engine,
    src_tables: list[sa.Table],
    wanted: list[str],
    same_dialect: bool,
    dst: Engine,
    replace: bool,
    batch_size: int,
) -> dict[str, int]:
    pg = dst.dialect.name == "postgresql"
    existing = set(sa.inspect(conn).get_table_names())
    clash = [t for t in wanted if t in existing]
    if clash and not replace:
        raise StoreCopyError(
            f"destination already has table(s) {clash}; pass replace=True to drop and recopy them"
        )

    dst_md = sa.MetaData()
    new_tables = [_target_table(t, dst_md, same_dialect, dst) for t in src_tables]
    # Foreign keys to tables left out of the copy must find them in the destination.
    for table in new_tables:
        for fk in table.foreign_key_constraints:
            for elem in fk.elements:
                ref = elem.target_fullname.split(".")[0]
                if ref in wanted or ref in dst_md.tables:
                    continue
                if ref not in existing:
                    raise StoreCopyError(
                        f"table {table.name!r} column {elem.parent.name!r} refers to table "
                        f"{ref!r}, which is neither copied nor in the destination; add {ref!r} "
                        "to tables"
                    )
                sa.Table(ref, dst_md, autoload_with=conn)

    if clash:
        drop_md = sa.MetaData()
        drop_md.reflect(conn, only=clash)
        for table in reversed(sa.schema.sort_tables([drop_md.tables[t] for t in clash])):
            try:
                table.drop(conn)
            except DBAPIError as exc:
                detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None)
                raise StoreCopyError(
                    f"cannot replace destination table {table.name!r}: {_db_message(exc)}"
                    + (f" ({'; '.join(detail.splitlines())})" if detail else "")
                    + "; copy the tables that refer to it too, or drop them first"
                ) from None

    ordered = sa.schema.sort_tables(new_tables)
    try:
        dst_md.create_all(conn, tables=ordered)
    except DBAPIError as exc:
        m = _DDL_TARGET.search(exc.statement or "")
        target = f"{m.group(1).lower()} {m.group(2)}" if m else "a table"
        raise StoreCopyError(
            f"creating {target} in the destination failed: {_db_message(exc)} (types, defaults "
            "and CHECK constraints come from the source; a CHECK written in the source's SQL "
            "dialect may not be valid here)"
        ) from None

    counts: dict[str, int] = {}
    with src.connect() as src_conn:
        for table in ordered:
            src_table = src_tables[wanted.index(table.name)]
            checks = _checker(table)
            # key order makes copies repeatable; a table without a key is copied as it comes
            # (ordering by every column would fail on types without equality, e.g. json)
            stmt = sa.select(src_table).order_by(*src_table.primary_key.columns)
            done = 0
            try:
                result = src_conn.execution_options(yield_per=batch_size).execute(stmt)
                for part in result.partitions(batch_size):
                    rows = [dict(r._mapping) for r in part]
                    _check_batch(table, rows, checks, pg, done)
                    try:
                        conn.execute(table.insert(), rows)
                    except DBAPIError as exc:
                        raise StoreCopyError(
                            f"copying table {table.name!r} failed at rows {done + 1}-"
                            f"{done + len(rows)}: {_db_message(exc)}"
                        ) from None
                    done += len(rows)
            except (DBAPIError, ValueError, TypeError) as exc:
                # raised while reading/converting source rows (e.g. an unparseable date)
                raise StoreCopyError(
                    f"reading table {table.name!r} from the source failed after {done} rows: "
                    f"{_db_message(exc)}"
                ) from None
            counts[table.name] = done
    if pg:
        _reset_sequences(conn, ordered)
    return counts
