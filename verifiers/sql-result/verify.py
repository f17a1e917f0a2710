#!/usr/bin/env python3
"""sql-result: candidate SQL returns the same result set as the gold query (read-only SQLite).

Item: ``{"id", "response": "<SQL, optionally in a ```sql fence>", "reference": "<gold SQL>"}`` or
``"reference": {"sql": "<gold SQL>", "database": "chinook", "ordered": null|true|false}``
(``database`` may also be an item or ``metadata`` field; default ``chinook``).

The candidate must be ONE statement starting with SELECT, WITH or VALUES, at most
MAX_SQL_BYTES long. It runs on a connection opened ``mode=ro`` with ``PRAGMA query_only=ON``, an
authorizer that allows only reads (no ATTACH, PRAGMA, writes, temp objects), no attached-database
slots, and a progress handler that aborts it at the per-item time limit. The gold query gets the
same limit (never more: the sandbox stops a run whose item has had no result for
2 x item_timeout_s + 5 s); its result is cached per process, keyed by database and gold SQL.

Bounds, so that no candidate can take the program down (it must live in 512 MB): SQLite may
build no value longer than MAX_VALUE_BYTES (SQLITE_LIMIT_LENGTH) and no result row wider than
MAX_COLUMNS, and holds at most HEAP_LIMIT of heap (temporary tables and sorts included:
``temp_store = MEMORY``); the result is fetched in chunks and stops with "error: more than N rows"
past MAX_ROWS rows, or "error: the result is larger than N bytes" once the rows fetched take more
than MAX_RESULT_BYTES (Python's own size of the row tuples and values). The queries run in a
child process forked from this one: a query that runs away inside one SQLite step (where the
progress handler is not called) is killed GRACE_S after its limit ("timeout: ..."), and one that
takes its process down fails its own item only (a fresh child serves the next one).

Results compare as multisets unless the gold query has a top-level ORDER BY (or
``ordered: true``); columns compare by position (names are ignored); the column and row counts
must match. Values: an INTEGER gold value matches only a number exactly equal to it (``5.0``
matches ``5``, ``5.0000001`` does not, nor does ``2**53`` as a float for ``2**53 + 1``); a REAL
gold value that is not a whole number matches a number within max(REL_TOL * |gold|, ABS_TOL)
(relative 1e-9: summation-order differences of SQLite's double sums are about 1e-15 relative,
a changed answer at least a unit of its last stored digit, far above); a REAL gold value that is
a whole number (``round(x, 2)`` = 14.0) only within ABS_TOL; +-inf only itself. Text, blobs and
NULL match only the same type and value (``'5'`` is not ``5``, ``x'41'`` is not ``'A'``).
Standard library only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import select
import signal
import sqlite3
import sys
import time
from collections import Counter

# The shared modules (`shared:` in verifier.yaml) sit beside this file in the image (/verifier)
# and in build/ when it runs from the verifier's folder.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the image's /verifier is read-only; keep build/ clean locally
sys.path[:0] = [p for p in (HERE, os.path.join(HERE, "build")) if p not in sys.path]

from verifier_protocol import fmt_seconds, serve  # noqa: E402

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_DATABASE = "chinook"
REL_TOL = 1e-9  # a REAL gold value that is not a whole number: relative tolerance ...
ABS_TOL = 1e-9  # ... or this absolute one, whichever is larger (whole numbers: this one only)
MAX_ROWS = 100_000  # rows of one result (gold or candidate)
MAX_RESULT_BYTES = 16 * 1024 * 1024  # Python size of one result's rows and values
MAX_VALUE_BYTES = 1_000_000  # SQLITE_LIMIT_LENGTH: the longest string or blob SQLite may build
MAX_SQL_BYTES = 100_000  # SQLITE_LIMIT_SQL_LENGTH, checked before the query is parsed
MAX_COLUMNS = 100  # SQLITE_LIMIT_COLUMN: result columns (and table/index columns)
MAX_LIKE_PATTERN = 1_000  # SQLITE_LIMIT_LIKE_PATTERN_LENGTH
HEAP_LIMIT = 128 * 1024 * 1024  # PRAGMA hard_heap_limit: all of SQLite's memory in the process
GOLD_CACHE_BYTES = 64 * 1024 * 1024  # the cached gold results, all together
GRACE_S = 1.5  # a query still running this long after its limit is killed with its process
TOLERANT_MATCH_MAX = 1000  # rows left to match one by one once exact matching is done
PIN_S = 0.5  # the program and its query process share one CPU, chosen again this often


# ---------------------------------------------------------------------------------------------
# A small SQL lexer: enough to find statement ends and a top-level ORDER BY.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<block_comment>/\*.*?(?:\*/|\Z))
  | (?P<string>'(?:[^']|'')*(?:'|\Z))
  | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`(?:[^`]|``)*(?:`|\Z)|\[[^\]]*(?:\]|\Z))
  | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
  | (?P<other>.)
    """,
    re.S | re.X,
)


def tokens(sql: str):
    """(kind, text) for the meaningful tokens of ``sql`` (whitespace and comments dropped)."""
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup
        if kind in ("space", "line_comment", "block_comment"):
            continue
        yield kind, m.group()


def split_statement(sql: str) -> tuple[str, bool]:
    """The first statement of ``sql`` (without its ``;``) and whether another one follows."""
    for m in _TOKEN.finditer(sql):
        if m.lastgroup == "other" and m.group() == ";":
            rest = sql[m.end() :]
            more = any(not (kind == "other" and text == ";") for kind, text in tokens(rest))
            return sql[: m.start()], more
    return sql, False


def first_keyword(sql: str) -> str:
    for kind, text in tokens(sql):
        if kind == "other" and text == "(":
            continue
        return text.upper()
    return ""


def has_top_level_order_by(sql: str) -> bool:
    depth = 0
    previous = None
    for kind, text in tokens(sql):
        if kind == "other":
            depth += {"(": 1, ")": -1}.get(text, 0)
        elif kind == "word" and depth == 0:
            word = text.upper()
            if word == "BY" and previous == "ORDER":
                return True
            previous = word
            continue
        previous = None
    return False


_FENCE_LANG = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")


def strip_fences(response: str) -> str:
    """The body of the first ```` ``` ````, ```` ```sql ```` or ```` ```sqlite ```` block, else the
    whole response. A linear scan (a regular expression with a lazy body backtracks
    quadratically on a long run of unclosed fences)."""
    pos = 0
    while True:
        start = response.find("```", pos)
        if start < 0:
            return response
        eol = response.find("\n", start + 3)
        if eol < 0:
            return response
        lang = _FENCE_LANG.match(response, start + 3, eol).group(1)
        end = response.find("```", eol + 1)
        if lang.lower() in ("", "sql", "sqlite"):
            return response[eol + 1 :] if end < 0 else response[eol + 1 : end]
        if end < 0:
            return response
        pos = end + 3


# ---------------------------------------------------------------------------------------------
# Read-only connections, one per database per process.
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_ALLOWED.add(getattr(sqlite3, "SQLITE_RECURSIVE", 33))
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
_CONNECTIONS: dict[str, sqlite3.Connection] = {}
# (database, gold SQL) -> (columns, rows, size); rows is a tuple of tuples, so nothing that
# compares with it can change it, and a candidate's query only ever reads the database
_GOLD_CACHE: dict[tuple[str, str], tuple[int, tuple, int]] = {}
_GOLD_CACHE_SIZE = [0]
_DEADLINE = [0.0]
_LIMITS = (
    ("SQLITE_LIMIT_ATTACHED", 0),
    ("SQLITE_LIMIT_LENGTH", MAX_VALUE_BYTES),
    ("SQLITE_LIMIT_SQL_LENGTH", MAX_SQL_BYTES),
    ("SQLITE_LIMIT_COLUMN", MAX_COLUMNS),
    ("SQLITE_LIMIT_LIKE_PATTERN_LENGTH", MAX_LIKE_PATTERN),
    ("SQLITE_LIMIT_WORKER_THREADS", 0),
)


def _authorize(action, arg1, arg2, db_name, trigger):
    if action not in _ALLOWED:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and str(arg2).lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _progress() -> int:
    return 1 if time.monotonic() > _DEADLINE[0] else 0


def database_path(name: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        return None
    for folder in (HERE, os.path.join(HERE, "build")):
        path = os.path.join(folder, name + ".sqlite")
        if os.path.isfile(path):
            return path
    return None


def connect(name: str) -> sqlite3.Connection:
    conn = _CONNECTIONS.get(name)
    if conn is not None:
        return conn
    path = database_path(name)
    if path is None:
        raise LookupError(f"no database {name[:80]!r} (looked for {name[:80]}.sqlite)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA query_only = ON")
    conn.execute(f"PRAGMA hard_heap_limit = {HEAP_LIMIT}")
    conn.execute("PRAGMA trusted_schema = OFF")
    conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temporary b-trees: under the heap limit
    if hasattr(conn, "setlimit"):  # Python >= 3.11
        for name_, value in _LIMITS:
            if hasattr(sqlite3, name_):
                conn.setlimit(getattr(sqlite3, name_), value)
    conn.set_authorizer(_authorize)
    conn.set_progress_handler(_progress, 1000)
    _CONNECTIONS[name] = conn
    return conn


def _drop_connection(conn: sqlite3.Connection) -> None:
    """Forget a connection that ran out of memory (the next query opens a fresh one)."""
    for name, known in list(_CONNECTIONS.items()):
        if known is conn:
            del _CONNECTIONS[name]
    with contextlib.suppress(sqlite3.Error):
        conn.close()


class QueryError(Exception):
    pass


def _row_size(row: tuple) -> int:
    return sys.getsizeof(row) + sum(map(sys.getsizeof, row))


def _fetch(cursor: sqlite3.Cursor, width: int) -> tuple[list, int]:
    """Every row of ``cursor``, in chunks small enough that one chunk cannot overshoot the byte
    cap by more than one row (a value is at most MAX_VALUE_BYTES)."""
    rows: list = []
    size = 0
    widest_row = 64 + width * (MAX_VALUE_BYTES + 64)
    while True:
        room = max(MAX_RESULT_BYTES - size, 0)
        chunk = cursor.fetchmany(max(1, min(1024, room // widest_row, MAX_ROWS + 1 - len(rows))))
        if not chunk:
            return rows, size
        rows += chunk
        size += sum(map(_row_size, chunk))
        if size > MAX_RESULT_BYTES:
            raise QueryError(f"error: the result is larger than {MAX_RESULT_BYTES} bytes")
        if len(rows) > MAX_ROWS:
            raise QueryError(f"error: more than {MAX_ROWS} rows")


def run_query(conn: sqlite3.Connection, sql: str, timeout: float) -> tuple[int, list, int]:
    """(number of columns, rows, their size in bytes) of one read-only statement; QueryError
    says why not."""
    statement, more = split_statement(sql)
    if more:
        raise QueryError("rejected: more than one statement")
    if not statement.strip():
        raise QueryError("rejected: empty query")
    keyword = first_keyword(statement)
    if keyword not in ("SELECT", "WITH", "VALUES"):
        raise QueryError(f"rejected: not a read-only query (starts with {keyword[:20]!r})")
    _DEADLINE[0] = time.monotonic() + timeout
    cursor = None
    try:
        cursor = conn.execute(statement)
        if cursor.description is None:
            raise QueryError("rejected: the statement returns no result set")
        width = len(cursor.description)
        rows, size = _fetch(cursor, width)
    except sqlite3.Warning as exc:  # "You can only execute one statement at a time." (3.11)
        raise QueryError(f"rejected: {exc}") from None
    except sqlite3.DatabaseError as exc:
        message = str(exc)
        if message == "interrupted" and time.monotonic() > _DEADLINE[0]:
            raise QueryError(f"timeout: {fmt_seconds(timeout)} s") from None
        if "not authorized" in message:
            raise QueryError(f"rejected: not a read-only query ({message})") from None
        if "string or blob too big" in message:
            raise QueryError(
                f"error: a value is longer than {MAX_VALUE_BYTES} bytes ({message})"
            ) from None
        raise QueryError(f"error: {type(exc).__name__}: {message[:300]}") from None
    except MemoryError:
        cursor = None
        _drop_connection(conn)
        raise QueryError(
            f"error: out of memory (SQLite may use {HEAP_LIMIT >> 20} MiB in all)"
        ) from None
    except sqlite3.ProgrammingError as exc:  # one statement at a time (3.12), bindings, ...
        if "one statement" in str(exc):
            raise QueryError(f"rejected: {exc}") from None
        raise QueryError(f"error: ProgrammingError: {str(exc)[:300]}") from None
    except (sqlite3.Error, ValueError, OverflowError, RecursionError) as exc:
        raise QueryError(f"error: {type(exc).__name__}: {str(exc)[:300]}") from None
    finally:
        if cursor is not None:
            with contextlib.suppress(sqlite3.Error):
                cursor.close()
    return width, rows, size


# ---------------------------------------------------------------------------------------------
# Result comparison. Values come from sqlite3: None, int, float, str or bytes. Every comparison
# is (candidate value, gold value): the tolerance belongs to the gold value.
def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def same_value(got, want) -> bool:
    """Does the candidate value ``got`` match the gold value ``want``?"""
    if isinstance(want, bool) or not isinstance(want, int | float):
        return type(got) is type(want) and got == want
    if not _is_number(got):
        return False
    if got == want:  # exact, also between int and float (5.0 == 5; 2.0**53 != 2**53 + 1)
        return True
    if isinstance(want, int) or not math.isfinite(want):
        return want != want and got != got  # integers, inf: exactly; NaN only NaN
    if want.is_integer():
        return abs(got - want) <= ABS_TOL
    return abs(got - want) <= max(REL_TOL * abs(want), ABS_TOL)


def same_row(got, want) -> bool:
    return len(got) == len(want) and all(map(same_value, got, want))


def _has_float(row) -> bool:
    return any(isinstance(v, float) for v in row)


def _coarse(v):
    if v is None:
        return (0, 0.0)
    if _is_number(v):
        f = float(v)
        if f != f:
            return (1, math.inf)
        return (1, float(f"{f:.6g}") if math.isfinite(f) else f)
    if isinstance(v, str):
        return (2, v)
    return (3, bytes(v))


def _fine(v):
    if _is_number(v):
        return (1, math.inf if v != v else v)
    return _coarse(v)


def row_key(row):
    """A sort key for tolerant matching: the values rounded to 6 significant digits first (so
    values within the tolerance mostly tie and the next column decides), then exactly (so equal
    values always sort alike). Pairing the two sorted lists is only a first attempt: every pair
    is checked with same_row, so the key can never make unequal rows match."""
    return tuple(map(_coarse, row)), tuple(map(_fine, row))


def same_multiset(got, want) -> bool:
    """Is there a one-to-one pairing of the candidate rows with the gold rows, each pair
    matching by same_row?"""
    if len(got) != len(want):
        return False
    # 1. exact matches (tuple equality implies same_row: 5.0 == 5, '5' != 5, b'A' != 'A')
    counts = Counter(want)
    left_got = []
    for row in got:
        n = counts.get(row, 0)
        if n:
            counts[row] = n - 1
        else:
            left_got.append(row)
    if not left_got:
        return True
    left_want = [row for row, n in counts.items() for _ in range(n)]
    # a gold row without a REAL value matches only an equal row: those are all taken
    if not all(map(_has_float, left_want)):
        return False
    # 2. the rest within the tolerance: pair the sorted lists, else one by one (bounded)
    pairs = zip(sorted(left_got, key=row_key), sorted(left_want, key=row_key), strict=True)
    if all(same_row(a, b) for a, b in pairs):
        return True
    if len(left_want) > TOLERANT_MATCH_MAX:
        return False
    for row in left_got:
        for i, candidate in enumerate(left_want):
            if same_row(row, candidate):
                del left_want[i]
                break
        else:
            return False
    return True


def _missing_example(got, want):
    """A gold row that no candidate row matches (a bounded search; None if none was found)."""
    have = Counter(got)
    tolerant_scans = 0
    for row in want:
        if have.get(row):
            continue
        if _has_float(row):
            tolerant_scans += 1
            if tolerant_scans > 50:
                return None
            if any(same_row(g, row) for g in got[:200]):
                continue
        return row
    return None


def show_row(row, limit: int = 160) -> str:
    text = repr(tuple(v if not isinstance(v, str | bytes) else v[:limit] for v in row[:20]))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def compare(got: tuple[int, list], want: tuple[int, list], ordered: bool) -> tuple[bool, str]:
    (got_w, got_rows), (want_w, want_rows) = got, want
    mode = "in order" if ordered else "order-insensitive"
    if got_w != want_w:
        return False, f"wrong result: {got_w} columns, expected {want_w}"
    if len(got_rows) != len(want_rows):
        return False, f"wrong result: {len(got_rows)} rows, expected {len(want_rows)}"
    if ordered:
        for i, (a, b) in enumerate(zip(got_rows, want_rows, strict=True)):
            if not same_row(a, b):
                if same_multiset(got_rows, want_rows):
                    return False, "wrong order: the right rows, but the gold query orders them"
                return False, f"wrong result: row {i + 1} is {show_row(a)}, expected {show_row(b)}"
    elif not same_multiset(got_rows, want_rows):
        missing = _missing_example(got_rows, want_rows)
        example = f"; e.g. missing {show_row(missing)}" if missing is not None else ""
        return False, f"wrong result: the rows differ from the gold rows{example}"
    return True, f"result matches gold: {len(want_rows)} rows x {want_w} columns ({mode})"


# ---------------------------------------------------------------------------------------------
# One item: read it (in the parent), then run both queries and compare (in the query process).
def _setting(item: dict, name: str):
    reference = item.get("reference")
    for place in (reference, item, item.get("metadata")):
        if isinstance(place, dict) and place.get(name) is not None:
            return place[name]
    return None


def _too_long(sql: str) -> bool:
    return len(sql) > MAX_SQL_BYTES or len(sql.encode("utf-8", "surrogatepass")) > MAX_SQL_BYTES


def read_item(item: dict) -> dict | tuple[bool, float, str]:
    """The query request of an item (database, gold, sql, ordered), or its verdict if the item
    cannot be run."""
    reference = item.get("reference")
    gold_sql = reference.get("sql") if isinstance(reference, dict) else reference
    if not isinstance(gold_sql, str) or not gold_sql.strip():
        return False, 0.0, "error: the item has no gold SQL (reference or reference.sql)"
    if _too_long(gold_sql):
        return False, 0.0, f"error: the gold query is longer than {MAX_SQL_BYTES} bytes"
    database = _setting(item, "database") or DEFAULT_DATABASE
    if not isinstance(database, str):
        return False, 0.0, "error: database must be a name"
    response = item.get("response")
    if not isinstance(response, str):
        return False, 0.0, f"error: response is not a string (got {type(response).__name__})"
    sql = strip_fences(response).strip()
    if not sql:
        return False, 0.0, "rejected: empty query"
    if _too_long(sql):
        return False, 0.0, f"rejected: the query is longer than {MAX_SQL_BYTES} bytes"
    ordered = _setting(item, "ordered")  # None: the gold query's top-level ORDER BY decides
    ordered = ordered if isinstance(ordered, bool) else None
    return {"database": database, "gold": gold_sql, "sql": sql, "ordered": ordered}


_ORDERED_CACHE: dict[str, bool] = {}


def _gold_ordered(gold_sql: str) -> bool:
    """Does the gold query order its result (a top-level ORDER BY)? Cached per gold SQL."""
    ordered = _ORDERED_CACHE.get(gold_sql)
    if ordered is None:
        if len(_ORDERED_CACHE) >= 1024:
            _ORDERED_CACHE.clear()
        ordered = _ORDERED_CACHE[gold_sql] = has_top_level_order_by(split_statement(gold_sql)[0])
    return ordered


def _gold(conn: sqlite3.Connection, database: str, gold_sql: str, timeout: float, ran=None):
    """The gold result (columns, rows), from the cache or run now (then ``ran()`` is called)."""
    key = (database, gold_sql)
    cached = _GOLD_CACHE.get(key)
    if cached is None:
        width, rows, size = run_query(conn, gold_sql, timeout)
        if ran is not None:
            ran()
        if len(_GOLD_CACHE) >= 256 or _GOLD_CACHE_SIZE[0] + size > GOLD_CACHE_BYTES:
            _GOLD_CACHE.clear()
            _GOLD_CACHE_SIZE[0] = 0
        cached = (width, tuple(rows), size)
        if size <= GOLD_CACHE_BYTES:
            _GOLD_CACHE[key] = cached
            _GOLD_CACHE_SIZE[0] += size
    return cached[0], cached[1]


def run_request(request: dict, timeout: float, gold_done=None) -> tuple[bool, float, str]:
    """Run the gold query unless it is cached (at most ``timeout``; then ``gold_done()`` is
    called), run the candidate (at most ``timeout``) and compare."""
    database = request["database"]
    try:
        conn = connect(database)
    except (LookupError, sqlite3.Error) as exc:
        return False, 0.0, f"error: {exc}"
    try:
        want = _gold(conn, database, request["gold"], timeout, gold_done)
    except QueryError as exc:
        return False, 0.0, f"error: the gold query failed: {exc}"
    try:
        conn = connect(database)  # again: the gold query may have dropped it (out of memory)
        width, rows, _ = run_query(conn, request["sql"], timeout)
    except (LookupError, sqlite3.Error) as exc:
        return False, 0.0, f"error: {exc}"
    except QueryError as exc:
        return False, 0.0, str(exc)
    try:
        ordered = request.get("ordered")
        if not isinstance(ordered, bool):
            ordered = _gold_ordered(request["gold"])
        passed, detail = compare((width, rows), want, ordered)
    except MemoryError:
        return False, 0.0, "error: out of memory while comparing the results"
    return passed, 1.0 if passed else 0.0, detail


def check(item: dict, timeout: float) -> tuple[bool, float, str]:
    """Check one item in this process (the program runs the queries in a child: QueryProcess)."""
    request = read_item(item)
    if isinstance(request, tuple):
        return request
    return run_request(request, timeout)


# ---------------------------------------------------------------------------------------------
# The query process. The parent (the protocol loop) reads the items and writes the results; a
# child forked from it runs the queries: one JSON request line in, b"g\n" once the gold query
# has run, then one JSON verdict line out. The parent gives each phase its time limit plus
# GRACE_S and then kills the child: so a query stuck inside one SQLite step (a quadratic
# instr() or LIKE on long strings, which the progress handler cannot interrupt) and a query that
# takes its process down (killed for memory) each fail their own item, and the next item gets a
# fresh child. The child holds the connections and the gold cache; the parent holds none. (A
# cached gold result sends no b"g": the first wait then covers the candidate's query.)
_MAX_REPLY = 1 << 20


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _close_other_fds(keep: set[int]) -> None:
    try:
        open_fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        open_fds = range(3, 4096)
    for fd in open_fds:
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)


def _child_main(requests: int, replies: int, parent: int) -> int:
    try:  # die with the parent (PR_SET_PDEATHSIG = 1)
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass
    if os.getppid() != parent:
        return 0
    try:  # the items are the parent's: nothing to read on stdin
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    except OSError:
        os.close(0)
    _close_other_fds({requests, replies})
    reader = os.fdopen(requests, "rb")
    while True:
        line = reader.readline()
        if not line:
            return 0
        try:
            request = json.loads(line)
            timeout = float(request["timeout"])
            verdict = run_request(request, timeout, lambda: os.write(replies, b"g\n"))
            passed, score, detail = bool(verdict[0]), float(verdict[1]), str(verdict[2])
        except MemoryError:
            passed, score, detail = False, 0.0, "error: out of memory"
        except Exception as exc:  # a bad item is a failed item
            passed, score, detail = False, 0.0, f"verifier error: {type(exc).__name__}: {exc}"
        reply = json.dumps([passed, score, detail[:4000]], ensure_ascii=True) + "\n"
        _write_all(replies, reply.encode("ascii"))


class QueryProcess:
    """The child that runs the queries, started on the first item and again after it is lost."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self.requests = self.replies = -1
        self.buffer = b""
        self.cpu = -1  # the CPU both processes are pinned to, -1: not pinned
        self.release_at = 0.0
        self.getcpu = None
        try:
            import ctypes

            self.getcpu = ctypes.CDLL(None).sched_getcpu
            self.cpus = os.sched_getaffinity(0)
        except Exception:  # not glibc, not Linux: the scheduler places both processes
            self.getcpu = None

    def place(self) -> None:
        """Keep the child on the CPU the parent runs on. Parent and child take turns, and a
        wakeup on the same CPU is a fast switch, where one on another CPU costs tens of
        microseconds an item (a third of the throughput): so both are pinned to one CPU, and
        every PIN_S the parent is let go for one item, for the scheduler to move it (and then
        both) where there is room."""
        try:
            now = time.monotonic()
            if self.cpu < 0:
                cpu = self.getcpu()
                if cpu < 0:
                    return
                os.sched_setaffinity(0, {cpu})
                os.sched_setaffinity(self.pid, {cpu})
                self.cpu, self.release_at = cpu, now + PIN_S
            elif now > self.release_at:
                os.sched_setaffinity(0, self.cpus)
                self.cpu = -1
        except Exception:  # a CPU outside our set, no such call: stop trying
            self.getcpu = None
            with contextlib.suppress(Exception):
                os.sched_setaffinity(0, self.cpus)

    def start(self) -> None:
        requests_r, requests_w = os.pipe()
        replies_r, replies_w = os.pipe()
        parent = os.getpid()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the protocol loop
            code = 1
            try:
                os.close(requests_w)
                os.close(replies_r)
                code = _child_main(requests_r, replies_w, parent)
            except BaseException:
                pass
            os._exit(code)
        os.close(requests_r)
        os.close(replies_w)
        self.pid, self.requests, self.replies, self.buffer = pid, requests_w, replies_r, b""

    def stop(self) -> str:
        """Kill the child (if it still lives) and say how it ended."""
        if self.pid is None:
            return "not started"
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        try:
            _, status = os.waitpid(self.pid, 0)
        except ChildProcessError:
            status = 0
        for fd in (self.requests, self.replies):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.pid, self.requests, self.replies, self.buffer = None, -1, -1, b""
        if os.WIFSIGNALED(status):
            number = os.WTERMSIG(status)
            try:
                name = signal.Signals(number).name
            except ValueError:
                name = f"signal {number}"
            return f"killed by {name}"
        return f"exit status {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status}"

    def _line(self, wait: float) -> bytes | None:
        """The next reply line (without its newline); b"" if the child is gone, None if ``wait``
        seconds pass first."""
        deadline = time.monotonic() + wait
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                ready, _, _ = select.select([self.replies], [], [], left)
            except InterruptedError:
                continue
            if not ready:
                return None
            chunk = os.read(self.replies, 65536)
            if not chunk or len(self.buffer) > _MAX_REPLY:
                return b""
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def check(self, item: dict, timeout: float) -> tuple[bool, float, str]:
        request = read_item(item)
        if isinstance(request, tuple):
            return request
        request["timeout"] = timeout
        if self.pid is None:
            self.start()
            self.cpu = -1
        if self.getcpu is not None:
            self.place()
        try:
            _write_all(self.requests, (json.dumps(request) + "\n").encode("utf-8", "replace"))
        except OSError:
            return False, 0.0, f"error: the query process was lost ({self.stop()})"
        line = self._line(timeout + GRACE_S)
        if line == b"g":  # the gold query ran (not cached): the candidate's limit starts now
            line = self._line(timeout + GRACE_S)
        if line is None:
            self.stop()
            why = "a query ran on inside one SQLite step and was killed"
            return False, 0.0, f"timeout: {fmt_seconds(timeout)} s ({why})"
        if not line:
            how = self.stop()
            why = f"the query took its process down ({how}; out of memory?)"
            return False, 0.0, f"error: {why}; the next item gets a fresh one"
        try:
            passed, score, detail = json.loads(line)
        except (ValueError, TypeError):
            self.stop()
            return False, 0.0, "error: the query process answered garbage"
        return bool(passed), score, detail


if __name__ == "__main__":
    sys.exit(serve(QueryProcess().check, default_timeout=DEFAULT_TIMEOUT_S, alarm=False))
