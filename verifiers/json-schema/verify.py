#!/usr/bin/env python3
"""json-schema: the payload is JSON, valid against a JSON Schema, and named fields equal the gold.

Item: ``{"id", "response": "<JSON, possibly in a ```json fence or inside prose>", "reference":
{"schema": {...}, "gold": {...}, "fields": ["a", "b.c", ["key.with.dots"]], "check_formats":
true}}``. The schema's ``$schema`` picks the draft (default 2020-12); ``format`` is asserted for
the formats the jsonschema library checks without extra packages (date, email, ipv4, ...).
Without ``fields`` every top-level key of ``gold`` is compared; without ``gold`` only the schema
is checked. Uses the jsonschema library (Debian's python3-jsonschema in the image).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys

try:
    import jsonschema
    from jsonschema import validators
except ImportError as _exc:  # pragma: no cover - a broken image, reported loudly
    print(f"json-schema: the jsonschema library is missing ({_exc})", file=sys.stderr)
    raise SystemExit(2) from None

DEFAULT_TIMEOUT_S = 5.0
MAX_ERRORS_SHOWN = 5

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


# --- JSON payload extraction: keep identical in json-schema and policy-rules ------------------
MAX_PAYLOAD_CHARS = 1_000_000
_JSON_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def _loads(text: str):
    value, end = _DECODER.raw_decode(text)
    if text[end:].strip():
        raise ValueError("extra data after the JSON value")
    return value


def extract_json(response: str) -> tuple[object, str]:
    """The JSON payload of a response and where it was found; ValueError says why there is none.

    In order: the whole response; the first ```json (or unlabelled) fenced block that parses;
    the first top-level JSON object embedded in prose (braces are counted naively, so an object
    nested in a broken one is not taken for the payload).
    """
    if len(response) > MAX_PAYLOAD_CHARS:
        raise ValueError(f"response longer than {MAX_PAYLOAD_CHARS} characters")
    text = response.strip()
    try:
        return _loads(text), "the whole response"
    except (ValueError, RecursionError) as exc:
        whole_error = f"{type(exc).__name__}: {exc}"
    for lang, block in _JSON_FENCE.findall(text):
        if lang.lower() in ("", "json", "jsonc", "json5"):
            try:
                return _loads(block.strip()), "a ```json block"
            except (ValueError, RecursionError):
                continue
    depth = attempts = 0
    for match in re.finditer(r"[{}]", text):
        if match.group() == "}":
            depth = max(0, depth - 1)
            continue
        if depth == 0 and attempts < 200:
            attempts += 1
            try:
                value, _ = _DECODER.raw_decode(text, match.start())
            except (ValueError, RecursionError):
                value = None
            if isinstance(value, dict):
                return value, "the first JSON object in the text"
        depth += 1
    if text[:1] in ("{", "["):
        raise ValueError(f"the response does not parse ({whole_error[:200]})")
    raise ValueError("no JSON object found in the response")


def json_equal(a, b) -> bool:
    """JSON equality: booleans are not numbers, 1 == 1.0, objects by keys, arrays in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def split_path(path) -> list:
    """``"a.b.0"`` or ``["a", "b", 0]`` -> components (list form allows dots in keys)."""
    if isinstance(path, list) and all(isinstance(p, str | int) for p in path):
        return list(path)
    if isinstance(path, str) and path:
        return path.split(".")
    raise ValueError(f"bad field path {path!r}")


def show_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "(root)"


def lookup(value, parts):
    """The value at ``parts`` (a list index may be given as a digit string); KeyError if absent."""
    for part in parts:
        if isinstance(value, dict) and str(part) in value:
            value = value[str(part)]
        elif isinstance(value, list) and str(part).isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(show_path(parts))
    return value


def show_value(value, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- end of JSON payload extraction -----------------------------------------------------------


def _reference(item: dict) -> dict:
    reference = item.get("reference")
    if isinstance(reference, str):
        with contextlib.suppress(ValueError):
            reference = json.loads(reference)
    if not isinstance(reference, dict) or not isinstance(reference.get("schema"), dict | bool):
        raise ValueError("the reference needs {'schema': {...}} (plus optional gold and fields)")
    return reference


def schema_errors(schema, payload, check_formats: bool) -> list[str]:
    cls = validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls.check_schema(schema)
    checker = getattr(cls, "FORMAT_CHECKER", None) if check_formats else None
    validator = cls(schema, format_checker=checker)
    problems = []
    for error in validator.iter_errors(payload):
        message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
        problems.append(f"at {show_path(list(error.absolute_path))}: {message}")
    return sorted(problems)


def check(item: dict, timeout: float) -> tuple[bool, float, str]:
    try:
        reference = _reference(item)
    except ValueError as exc:
        return False, 0.0, f"error: {exc}"
    response = item.get("response")
    if not isinstance(response, str):
        return False, 0.0, f"not JSON: response is not a string (got {type(response).__name__})"
    try:
        payload, where = extract_json(response)
    except ValueError as exc:
        return False, 0.0, f"not JSON: {exc}"
    try:
        problems = schema_errors(reference["schema"], payload, reference.get("check_formats", True))
    except jsonschema.SchemaError as exc:
        return False, 0.0, f"error: invalid schema in the reference: {exc.message[:300]}"
    if problems:
        shown = "; ".join(problems[:MAX_ERRORS_SHOWN])
        more = (
            f" (+{len(problems) - MAX_ERRORS_SHOWN} more)"
            if len(problems) > MAX_ERRORS_SHOWN
            else ""
        )
        return False, 0.0, f"schema: {len(problems)} error(s): {shown}{more}"
    gold = reference.get("gold")
    fields = reference.get("fields")
    if fields is None:
        fields = [[key] for key in gold] if isinstance(gold, dict) else []
    if not isinstance(fields, list):
        return False, 0.0, "error: reference.fields must be a list of paths"
    if fields and "gold" not in reference:
        return False, 0.0, "error: reference.fields given without reference.gold"
    mismatches = []
    for field in fields:
        try:
            parts = split_path(field)
        except ValueError as exc:
            return False, 0.0, f"error: {exc}"
        try:
            want = lookup(gold, parts)
        except KeyError:
            return False, 0.0, f"error: the gold has no field {show_path(parts)}"
        try:
            got = lookup(payload, parts)
        except KeyError:
            mismatches.append(f"{show_path(parts)}: missing, expected {show_value(want)}")
            continue
        if not json_equal(got, want):
            mismatches.append(f"{show_path(parts)}: {show_value(got)} != gold {show_value(want)}")
    if mismatches:
        return (
            False,
            0.0,
            f"fields differ from gold ({len(mismatches)}/{len(fields)}): "
            + "; ".join(mismatches[:MAX_ERRORS_SHOWN]),
        )
    matched = f"; {len(fields)} field(s) match gold" if fields else ""
    return True, 1.0, f"valid JSON ({where}) against the schema{matched}"


if __name__ == "__main__":
    sys.exit(serve(check, default_timeout=DEFAULT_TIMEOUT_S))
