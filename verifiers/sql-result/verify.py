#!/usr/bin/env python3
"""sql-result: candidate SQL returns the same result set as the gold query (read-only SQLite).

Item: ``{"id", "response": "<SQL, optionally in a ```sql fence>", "reference": "<gold SQL>"}`` or
``"reference": {"sql": "<gold SQL>", "database": "chinook", "ordered": null|true|false}``
(``database`` may also be an item or ``metadata`` field; default ``chinook``).

The candidate must be ONE statement starting with SELECT, WITH or VALUES. It runs on a connection
opened ``mode=ro`` with ``PRAGMA query_only=ON``, an authorizer that allows only reads (no
ATTACH, PRAGMA, writes, temp objects), no attached-database slots, and a progress handler that
aborts it at the per-item time limit. Results compare as multisets unless the gold query has a
top-level ORDER BY (or ``ordered: true``); columns compare by position (names are ignored);
numbers compare with a relative tolerance of 1e-6 (integers exactly), text and blobs exactly,
NULL only with NULL. Standard library only.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_DATABASE = "chinook"
MAX_ROWS = 100_000
REL_TOL = 1e-6
ABS_TOL = 1e-9
HEAP_LIMIT = 256 * 1024 * 1024

# --- rlsd verifier protocol: keep this block identical in every verifiers/*/verify.py ---------
# stdin: one JSON item per line {"id", "response", "reference", ...}; stdout, per item, first a
# start marker {"start": id, "nonce"} and then its result {"id", "passed", "score", "detail",
# "nonce"}, each written and flushed at once, ASCII only. The marker tells the sandbox which item
# was being checked if the program dies or stalls, so only that item is charged. Only these lines
# reach the real stdout: fd 1 is pointed at stderr before any item is checked.
_MAX_LINE = 32 * 1024 * 1024
_MAX_DETAIL = 4000
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "HOME", "TMPDIR")
_LEADING_ID = re.compile(rb'\A\s*\{\s*"id"\s*:\s*("(?:[^"\\\r\n]|\\.){0,512}")')


class ItemTimeout(Exception):
    """Raised (by SIGALRM) when checking one item overruns its time limit."""


def item_timeout(default: float) -> float:
    """The per-item time limit: env RLSD_ITEM_TIMEOUT_S when set and sane, else ``default``."""
    try:
        value = float(os.environ.get("RLSD_ITEM_TIMEOUT_S", ""))
    except ValueError:
        return default
    return value if 0 < value < 86400 else default


def child_env(home: str = "/tmp") -> dict:
    """The whole environment a child process gets: no nonce, no credentials, nothing inherited."""
    return {"PATH": os.environ.get("PATH") or "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": home}


def _fmt_seconds(value: float) -> str:
    return f"{value:g}"


def _result(ident, passed, score, detail, nonce) -> str:
    try:
        score = float(score)
    except (TypeError, ValueError):
        score = 0.0
    if not 0.0 <= score <= 1.0:  # also false for NaN
        score = 0.0 if not score > 0.0 else 1.0
    detail = str(detail)
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    record = {"id": ident, "passed": bool(passed), "score": score, "detail": detail}
    record["nonce"] = nonce
    return json.dumps(record, ensure_ascii=True) + "\n"


def _harden() -> None:
    """Make this process non-dumpable (Linux): a same-uid child can then no longer open
    /proc/<our pid>/fd/* (our stdin and stdout), /proc/<our pid>/environ (the nonce's initial
    copy) or /proc/<our pid>/mem. Children that exec a program are dumpable again, so this does
    not restrict them otherwise."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:  # not Linux, no libc: nothing to harden
        pass


def _check_one(check, item, timeout: float, alarm: bool):
    def on_alarm(signum, frame):
        raise ItemTimeout

    try:
        try:
            if alarm:
                signal.signal(signal.SIGALRM, on_alarm)
                signal.setitimer(signal.ITIMER_REAL, timeout)
            passed, score, detail = check(item, timeout)
        finally:
            if alarm:
                signal.setitimer(signal.ITIMER_REAL, 0)
    except ItemTimeout:
        return False, 0.0, f"timeout: {_fmt_seconds(timeout)} s"
    except Exception as exc:  # a bad item is a failed item, never a crash
        return False, 0.0, f"verifier error: {type(exc).__name__}: {exc}"
    return bool(passed), score, detail


def serve(
    check, *, default_timeout: float, alarm: bool = True, nonce: str | None = None, after=None
) -> int:
    """Run ``check(item, timeout) -> (passed, score, detail)`` over the JSON lines on stdin.

    ``alarm`` enforces the per-item limit with SIGALRM (for checks that run in this process;
    a check that runs children enforces it itself). ``nonce``: when the program already took it
    from the environment. ``after()`` runs once a result is written (clean-up between items; if
    it raises SystemExit the program stops between two items, which charges no item). Returns
    the exit code.
    """
    _harden()
    if nonce is None:
        nonce = os.environ.pop("RLSD_RESULT_NONCE", None)
    timeout = item_timeout(default_timeout)
    for key in list(os.environ):
        if key not in _KEEP_ENV:
            del os.environ[key]
    out = os.fdopen(os.dup(1), "w", encoding="ascii", newline="\n")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    source = sys.stdin.buffer
    while True:
        line = source.readline(_MAX_LINE + 1)
        if not line:
            break
        ident = None
        if len(line) > _MAX_LINE and not line.endswith(b"\n"):
            while True:  # drop the rest of the overlong line
                chunk = source.readline(1 << 20)
                if not chunk or chunk.endswith(b"\n"):
                    break
            verdict = (False, 0.0, f"malformed item: line longer than {_MAX_LINE} bytes")
        elif not line.strip():
            continue
        else:
            try:
                item = json.loads(line.decode("utf-8", "replace"))
            except (ValueError, RecursionError) as exc:
                verdict = (False, 0.0, f"malformed item: not valid JSON ({exc})")
            else:
                if isinstance(item, dict):
                    ident = item.get("id")
                if not isinstance(ident, str):
                    print("verifier: skipped an item without a string id", file=sys.stderr)
                    continue
                try:
                    out.write(json.dumps({"start": ident, "nonce": nonce}) + "\n")
                    out.flush()
                except BrokenPipeError:
                    return 0
                verdict = _check_one(check, item, timeout, alarm)
        if ident is None:
            found = _LEADING_ID.match(line)
            try:
                ident = json.loads(found.group(1)) if found else None
            except ValueError:
                ident = None
            if not isinstance(ident, str):
                print("verifier: skipped a malformed line without a readable id", file=sys.stderr)
                continue
        try:
            out.write(_result(ident, *verdict, nonce))
            out.flush()
        except BrokenPipeError:
            return 0
        if after is not None:
            after()
    return 0


# --- end of rlsd verifier protocol --------------------------------------------------------------


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


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def strip_fences(response: str) -> str:
    blocks = [b for lang, b in _FENCE.findall(response) if lang.lower() in ("", "sql", "sqlite")]
    return blocks[0] if blocks else response


# ---------------------------------------------------------------------------------------------
# Read-only connections, one per database per batch.
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION}
_ALLOWED.add(getattr(sqlite3, "SQLITE_RECURSIVE", 33))
_DENIED_FUNCTIONS = {"load_extension", "readfile", "writefile", "edit", "fts3_tokenizer"}
_CONNECTIONS: dict[str, sqlite3.Connection] = {}
_GOLD_CACHE: dict[tuple[str, str], tuple[int, list]] = {}
_DEADLINE = [0.0]


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
    if hasattr(conn, "setlimit"):  # Python >= 3.11
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10_000_000)
        conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000)
    conn.set_authorizer(_authorize)
    conn.set_progress_handler(_progress, 1000)
    _CONNECTIONS[name] = conn
    return conn


class QueryError(Exception):
    pass


def run_query(conn: sqlite3.Connection, sql: str, timeout: float) -> tuple[int, list]:
    """(number of columns, rows) of one read-only statement; QueryError says why not."""
    statement, more = split_statement(sql)
    if more:
        raise QueryError("rejected: more than one statement")
    if not statement.strip():
        raise QueryError("rejected: empty query")
    keyword = first_keyword(statement)
    if keyword not in ("SELECT", "WITH", "VALUES"):
        raise QueryError(f"rejected: not a read-only query (starts with {keyword[:20]!r})")
    _DEADLINE[0] = time.monotonic() + timeout
    try:
        cursor = conn.execute(statement)
        if cursor.description is None:
            raise QueryError("rejected: the statement returns no result set")
        rows = cursor.fetchmany(MAX_ROWS + 1)
        width = len(cursor.description)
        cursor.close()
    except sqlite3.Warning as exc:  # "You can only execute one statement at a time."
        raise QueryError(f"rejected: {exc}") from None
    except sqlite3.DatabaseError as exc:
        message = str(exc)
        if message == "interrupted" and time.monotonic() > _DEADLINE[0]:
            raise QueryError(f"timeout: {_fmt_seconds(timeout)} s") from None
        if "not authorized" in message:
            raise QueryError(f"rejected: not a read-only query ({message})") from None
        raise QueryError(f"error: {type(exc).__name__}: {message}") from None
    except (sqlite3.ProgrammingError, ValueError, OverflowError, MemoryError) as exc:
        raise QueryError(f"error: {type(exc).__name__}: {exc}") from None
    if len(rows) > MAX_ROWS:
        raise QueryError(f"error: more than {MAX_ROWS} rows")
    return width, rows


# ---------------------------------------------------------------------------------------------
# Result comparison.
def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def same_value(a, b) -> bool:
    if _is_number(a) and _is_number(b):
        if isinstance(a, int) and isinstance(b, int):
            return a == b
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    return type(a) is type(b) and a == b


def same_row(a, b) -> bool:
    return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))


def _key_value(v):
    if v is None:
        return (0, 0)
    if _is_number(v):
        return (1, float(f"{float(v):.6g}") if math.isfinite(float(v)) else float(v))
    if isinstance(v, str):
        return (2, v)
    return (3, bytes(v))


def row_key(row):
    return tuple(_key_value(v) for v in row)


def same_multiset(got: list, want: list) -> bool:
    if len(got) != len(want):
        return False
    pairs = zip(sorted(got, key=row_key), sorted(want, key=row_key), strict=True)
    if all(same_row(a, b) for a, b in pairs):
        return True
    if len(want) > 1000:
        return False
    left = list(want)  # tolerant matching, for values that straddle a rounding boundary
    for row in got:
        for i, candidate in enumerate(left):
            if same_row(row, candidate):
                del left[i]
                break
        else:
            return False
    return True


def show_row(row, limit: int = 160) -> str:
    text = repr(tuple(row))
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
        missing = [r for r in want_rows if not any(same_row(r, g) for g in got_rows[:2000])]
        example = f"; e.g. missing {show_row(missing[0])}" if missing else ""
        return False, f"wrong result: the rows differ from the gold rows{example}"
    return True, f"result matches gold: {len(want_rows)} rows x {want_w} columns ({mode})"


# ---------------------------------------------------------------------------------------------
def _setting(item: dict, name: str):
    reference = item.get("reference")
    for place in (reference, item, item.get("metadata")):
        if isinstance(place, dict) and place.get(name) is not None:
            return place[name]
    return None


def check(item: dict, timeout: float) -> tuple[bool, float, str]:
    reference = item.get("reference")
    gold_sql = reference.get("sql") if isinstance(reference, dict) else reference
    if not isinstance(gold_sql, str) or not gold_sql.strip():
        return False, 0.0, "error: the item has no gold SQL (reference or reference.sql)"
    database = _setting(item, "database") or DEFAULT_DATABASE
    if not isinstance(database, str):
        return False, 0.0, "error: database must be a name"
    response = item.get("response")
    if not isinstance(response, str):
        return False, 0.0, f"error: response is not a string (got {type(response).__name__})"
    sql = strip_fences(response).strip()
    if not sql:
        return False, 0.0, "rejected: empty query"
    try:
        conn = connect(database)
    except (LookupError, sqlite3.Error) as exc:
        return False, 0.0, f"error: {exc}"
    key = (database, gold_sql)
    want = _GOLD_CACHE.get(key)
    if want is None:
        try:
            want = run_query(conn, gold_sql, max(timeout, 30.0))
        except QueryError as exc:
            return False, 0.0, f"error: the gold query failed: {exc}"
        if len(_GOLD_CACHE) > 256:
            _GOLD_CACHE.clear()
        _GOLD_CACHE[key] = want
    try:
        got = run_query(conn, sql, timeout)
    except QueryError as exc:
        return False, 0.0, str(exc)
    ordered = _setting(item, "ordered")
    if not isinstance(ordered, bool):
        ordered = has_top_level_order_by(split_statement(gold_sql)[0])
    passed, detail = compare(got, want, ordered)
    return passed, 1.0 if passed else 0.0, detail


if __name__ == "__main__":
    sys.exit(serve(check, default_timeout=DEFAULT_TIMEOUT_S, alarm=False))
