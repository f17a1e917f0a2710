#!/usr/bin/env python3
"""json-schema: the payload is one JSON document, valid against a JSON Schema, and named fields
equal the gold.

Item: ``{"id", "response": "<one JSON document, or one ```json fenced block>", "reference":
{"schema": {...}, "gold": {...}, "fields": ["a", "b.c", ["key.with.dots"]], "check_formats":
true}}``.

Payload (strict, the same rules as policy-rules): the whole response, or a single ```json (or
unlabelled) fenced block with only whitespace outside it; prose around it, a second document or
a second block fail. No duplicate keys (anywhere), no NaN / Infinity, no number literal that
overflows to infinity (``1e400``) or is longer than 100 characters, at most 64 levels of
nesting, at most 1,000,000 characters. ``-0`` is the number 0.

Schema: ``$schema`` picks the draft; without it, Draft 2020-12. Claimed drafts, each passing the
official JSON-Schema-Test-Suite (tests/verifiers_builtin/test_vb_json_schema_suite.py): 3, 4, 6,
7, 2019-09 and 2020-12. Any other ``$schema`` (draft-next, an unknown URI) is an error of the
item, never a guess. ``$ref`` resolves within the schema and to the drafts' meta-schemas only:
nothing is fetched. ``format`` is asserted (unless ``"check_formats": false``) for the formats
the library checks without extra packages: date, email, idn-email, ipv4, ipv6, regex, uuid.
Without ``fields`` every top-level key of ``gold`` is compared; without ``gold`` only the schema
is checked. Runs on a pinned jsonschema 4.26.0 (with attrs, referencing, rpds-py,
jsonschema-specifications, typing-extensions) that ``prepare.py`` vendors into ``build/``
(``vendor.zip`` beside this file in the image), not on the base image's jsonschema 4.10.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import sys
from collections import OrderedDict

# The vendored jsonschema (prepare.py): vendor.zip and the rpds extension beside it, in this
# folder in the image (/verifier), in build/ when run from the verifier's folder.
HERE = os.path.dirname(os.path.abspath(__file__))
for _where in (HERE, os.path.join(HERE, "build")):
    if os.path.isfile(os.path.join(_where, "vendor.zip")):
        sys.path[:0] = [os.path.join(_where, "vendor.zip"), _where]
        break

try:
    import jsonschema
    from jsonschema import validators

    _SPECIFICATIONS = validators.SPECIFICATIONS  # jsonschema >= 4.18 (referencing)
except (ImportError, AttributeError) as _exc:  # pragma: no cover - a broken image, loudly
    print(
        f"json-schema: no usable jsonschema ({_exc}); run prepare.py to vendor the pinned one",
        file=sys.stderr,
    )
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
# The payload is exactly one JSON document: the whole response (surrounding whitespace allowed)
# or a single ```json (or unlabelled) fenced block with only whitespace outside it. Strict JSON:
# no NaN / Infinity, no number that overflows to infinity (1e400), no number literal longer than
# MAX_NUMBER_CHARS, no duplicate key in any object, at most MAX_DEPTH levels of nesting.
MAX_PAYLOAD_CHARS = 1_000_000
MAX_DEPTH = 64
MAX_NUMBER_CHARS = 100
_FENCED = re.compile(r"\A```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\r?\n(.*?)[ \t]*```\Z", re.S)
_FENCE_LINE = re.compile(r"^[ \t]*```", re.M)


class JSONFloat(float):
    """A JSON number written with a fraction or an exponent; ``literal`` is its text as written."""

    __slots__ = ("literal",)


def _no_constants(name: str):
    raise ValueError(f"{name} is not JSON")


def _parse_float(text: str) -> JSONFloat:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number literal longer than {MAX_NUMBER_CHARS} characters")
    value = JSONFloat(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number literal overflows to infinity")
    value.literal = text
    return value


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number literal longer than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _unique_pairs(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("an object has a duplicate key")
    return value


_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_pairs,
    parse_float=_parse_float,
    parse_int=_parse_int,
    parse_constant=_no_constants,
)


def _check_depth(value) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))


def _loads(text: str):
    try:
        value, end = _DECODER.raw_decode(text)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    if text[end:].strip():
        raise ValueError(
            f"extra data after the JSON document at character {end} (a second document or prose)"
        )
    if isinstance(value, dict | list):
        _check_depth(value)
    return value


def extract_json(response: str) -> tuple[object, str]:
    """The JSON payload of a response and where it was found; ValueError says why there is none.

    The payload is the whole response, or the content of one ```json (or unlabelled) fenced
    block that is all the response is. Anything else (prose before or after, a second document,
    two blocks) is refused, so that nothing outside the checked document can carry content.
    """
    if len(response) > MAX_PAYLOAD_CHARS:
        raise ValueError(f"response longer than {MAX_PAYLOAD_CHARS} characters")
    text = response.strip()
    if not text:
        raise ValueError("empty response")
    fenced = _FENCED.match(text)
    if fenced is None:
        where = "the whole response"
        body = text
    else:
        label, body = fenced.group(1), fenced.group(2)
        if label.lower() not in ("", "json"):
            raise ValueError(f"the fenced block is labelled {label[:20]!r}, not json")
        if _FENCE_LINE.search(body):
            raise ValueError("more than one fenced block: the payload must be exactly one")
        where = "a ```json block"
    try:
        return _loads(body.strip()), where
    except ValueError as exc:
        problem = str(exc)[:200]
    if fenced is None and "```" in text:
        raise ValueError(
            "text outside the fenced block: the payload must be the whole response or one "
            f"```json block with nothing else ({problem})"
        )
    raise ValueError(
        f"the {'fenced block' if fenced else 'response'} is not one JSON document ({problem}); "
        "the payload must be the whole response or a single ```json block with nothing outside it"
    )


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


# ---------------------------------------------------------------------------------------------
# Schema validation.
#: The drafts this verifier claims (the meta-schema URI each declares) and their validators.
DRAFTS = {
    "http://json-schema.org/draft-03/schema#": jsonschema.Draft3Validator,
    "http://json-schema.org/draft-04/schema#": jsonschema.Draft4Validator,
    "http://json-schema.org/draft-06/schema#": jsonschema.Draft6Validator,
    "http://json-schema.org/draft-07/schema#": jsonschema.Draft7Validator,
    "https://json-schema.org/draft/2019-09/schema": jsonschema.Draft201909Validator,
    "https://json-schema.org/draft/2020-12/schema": jsonschema.Draft202012Validator,
}
DEFAULT_DRAFT = jsonschema.Draft202012Validator
#: The formats asserted: those whose checks need no package beyond the vendored ones, so the
#: set is the same on every interpreter (jsonschema adds others when optional packages happen to
#: be importable). draft3's "time" is stdlib-only too; its "ip-address" is ipv4.
FORMATS = ("date", "email", "idn-email", "ipv4", "ipv6", "regex", "uuid")
_DRAFT3_FORMATS = ("date", "email", "ip-address", "ipv6", "regex", "time")
_BY_URI = {uri.rstrip("#"): cls for uri, cls in DRAFTS.items()}
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 128


class SchemaProblem(ValueError):
    """The reference's schema cannot be used (invalid, unsupported draft, unresolvable $ref)."""


def _draft_of(uri, registry, hops: int = 0):
    if not isinstance(uri, str):
        raise SchemaProblem("$schema must be a string")
    cls = _BY_URI.get(uri.rstrip("#"))
    if cls is not None:
        return cls
    if registry is not None and hops < 4:  # a custom meta-schema: the draft it is written in
        with contextlib.suppress(Exception):
            meta = registry.contents(uri.rstrip("#"))
            if isinstance(meta, dict) and "$schema" in meta and meta["$schema"] != uri:
                return _draft_of(meta["$schema"], registry, hops + 1)
    raise SchemaProblem(
        f"unsupported $schema {uri[:100]!r} (supported: drafts 3, 4, 6, 7, 2019-09, 2020-12)"
    )


@functools.cache
def _format_checker(cls):
    names = _DRAFT3_FORMATS if cls is jsonschema.Draft3Validator else FORMATS
    checker = jsonschema.FormatChecker(formats=())
    checker.checkers = {k: v for k, v in cls.FORMAT_CHECKER.checkers.items() if k in names}
    return checker


def validator_class(schema, registry=None, default=DEFAULT_DRAFT):
    """The validator class for ``schema``'s ``$schema`` (``default`` when it has none)."""
    if isinstance(schema, bool):
        return default
    if not isinstance(schema, dict):
        raise SchemaProblem(f"a schema is an object or a boolean, not {type(schema).__name__}")
    if "$schema" not in schema:
        return default
    return _draft_of(schema["$schema"], registry)


def make_validator(schema, check_formats: bool = True, registry=None, default=DEFAULT_DRAFT):
    """A validator for ``schema`` (checked against its draft's meta-schema), cached per schema.

    ``registry`` (a ``referencing.Registry``) serves extra resources for ``$ref`` (the test
    suite's remotes); by default only the drafts' meta-schemas resolve and nothing is fetched.
    """
    key = None
    if registry is None:
        key = (json.dumps(schema, sort_keys=True), bool(check_formats), default.__name__)
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    cls = validator_class(schema, registry, default)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = show_path(list(exc.absolute_path))
        raise SchemaProblem(f"invalid schema (at {where}): {exc.message[:300]}") from None
    checker = _format_checker(cls) if check_formats else None
    validator = cls(
        schema,
        format_checker=checker,
        registry=_SPECIFICATIONS if registry is None else registry,
    )
    if key is not None:
        _CACHE[key] = validator
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return validator


def schema_errors(
    schema, payload, check_formats: bool = True, registry=None, default=DEFAULT_DRAFT
) -> list[str]:
    """Every way ``payload`` violates ``schema`` ([] = valid); SchemaProblem for a bad schema."""
    validator = make_validator(schema, check_formats, registry, default)
    problems = []
    try:
        for error in validator.iter_errors(payload):
            message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
            problems.append(f"at {show_path(list(error.absolute_path))}: {message}")
    except RecursionError:
        raise SchemaProblem("the schema recurses without end on this payload") from None
    except jsonschema.SchemaError as exc:
        raise SchemaProblem(f"invalid schema: {exc.message[:300]}") from None
    except Exception as exc:  # referencing.exceptions.Unresolvable and the like
        if type(exc).__module__.split(".")[0] not in ("referencing", "jsonschema"):
            raise
        raise SchemaProblem(f"cannot resolve a $ref: {str(exc)[:300]}") from None
    return sorted(problems)


def _reference(item: dict) -> dict:
    reference = item.get("reference")
    if isinstance(reference, str):
        with contextlib.suppress(ValueError):
            reference = json.loads(reference)
    if not isinstance(reference, dict) or not isinstance(reference.get("schema"), dict | bool):
        raise ValueError("the reference needs {'schema': {...}} (plus optional gold and fields)")
    return reference


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
    except SchemaProblem as exc:
        return False, 0.0, f"error: {exc}"
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
