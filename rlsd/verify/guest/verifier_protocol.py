"""The rlsd verifier protocol, as the verifier program speaks it (standard library only).

This file is not imported by rlsd: it is copied into the build context of every verifier that
lists ``verifier_protocol`` under ``shared:`` in its ``verifier.yaml`` (``build/`` beside its
``verify.py``, ``/verifier`` in the image), and ``verify.py`` imports it from there. The host
side of the protocol is :mod:`rlsd.verify.protocol`.

stdin: one JSON item per line {"id", "response", "reference", ...}; stdout, per item, first a
start marker {"start": id, "nonce"} and then its result {"id", "passed", "score", "detail",
"nonce"}, each written and flushed at once, ASCII only. The marker tells the sandbox which item
was being checked if the program dies or stalls, so only that item is charged. Only these lines
reach the real stdout: fd 1 is pointed at stderr before any item is checked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys

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


def fmt_seconds(value: float) -> str:
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
        return False, 0.0, f"timeout: {fmt_seconds(timeout)} s"
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
