#!/usr/bin/env python3
"""policy-rules: declarative business-policy rules applied to a JSON payload.

Item: ``{"id", "response": "<JSON payload, possibly fenced or in prose>", "reference": {"rules":
[...], "scoring": "all" | "fraction"}}``. Rule kinds (each may carry an ``"id"`` for the detail):

* ``{"kind": "forbidden_fields", "paths": ["ssn", "card.number", "items.*.secret"]}``
* ``{"kind": "required_fields", "paths": ["order_id", "items.*.sku"]}`` (null counts as absent)
* ``{"kind": "value_range", "path": "amount", "min": 0, "max": 1000, "optional": false}``
* ``{"kind": "allowed_values", "path": "currency", "values": ["EUR", "USD"], "optional": false}``
* ``{"kind": "pii_patterns", "patterns": ["email", "phone", "credit_card", "iban", "us_ssn"],
  "custom": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}], "paths": ["notes"]}``

Paths are dotted (``a.b.0``) or lists of keys; ``*`` matches every element of an array or value
of an object. PII is searched in every string and integer value (under ``paths`` if given);
credit cards need a major-network prefix and a valid Luhn digit, IBANs a valid mod-97 check (and
the registry length for known countries), US SSNs the dashed/spaced 3-2-4 form. The detail
lists every violated rule and where, never the PII itself. Score: 1.0 if no rule is violated,
else 0.0; ``"scoring": "fraction"`` gives the fraction of rules satisfied (``passed`` still
needs all). Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys

DEFAULT_TIMEOUT_S = 5.0
MAX_PROBLEMS_SHOWN = 5

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


# ---------------------------------------------------------------------------------------------
# Paths with wildcards.
def resolve(value, parts, prefix=()):
    """(found, missing): ``[(path, value)]`` for every match, ``[path]`` where a key is absent."""
    if not parts:
        return [(list(prefix), value)], []
    head, rest = str(parts[0]), parts[1:]
    if head == "*":
        if isinstance(value, dict):
            children = [(k, v) for k, v in value.items()]
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            return [], [list(prefix) + ["*"]]
        found, missing = [], []
        for key, child in children:
            f, m = resolve(child, rest, (*prefix, key))
            found += f
            missing += m
        return found, missing
    if isinstance(value, dict) and head in value:
        return resolve(value[head], rest, (*prefix, head))
    if isinstance(value, list) and head.isdigit() and int(head) < len(value):
        return resolve(value[int(head)], rest, (*prefix, int(head)))
    return [], [list(prefix) + [head]]


def _paths(rule: dict, key: str = "paths") -> list[list]:
    raw = rule.get(key)
    if key == "path":
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"needs {key!r}")
    return [split_path(p) for p in raw]


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# PII detectors: a regex finds candidates, a validator (checksum, length) confirms them.
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    iban = iban.upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", iban):
        return False
    if IBAN_LENGTHS.get(iban[:2], len(iban)) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}"
    r"(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
_PHONE_INTL = re.compile(r"(?<![\w+-])\+[0-9]{1,3}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}(?![\w-])")
_PHONE_NANP = re.compile(
    r"(?<![\w-])(?:\([0-9]{3}\)[ ]?|[0-9]{3}[-. ])[0-9]{3}[-. ][0-9]{4}(?![\w-])"
)
_CARD = re.compile(
    r"(?<![0-9-])(?:[0-9]{13,19}|[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{1,3})?"
    r"|[0-9]{4}([ -])[0-9]{6}\2[0-9]{5})(?![0-9-])"
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}(?:[ ]?[A-Za-z0-9]){11,32}")
_SSN = re.compile(
    r"(?<![0-9-])(?!000|666|9[0-9]{2})[0-9]{3}([- ])(?!00)[0-9]{2}\1(?!0000)[0-9]{4}(?![0-9-])"
)


def _find_email(text: str) -> bool:
    return _EMAIL.search(text) is not None


def _find_phone(text: str) -> bool:
    if _PHONE_NANP.search(text):
        return True
    return any(8 <= sum(c.isdigit() for c in m.group()) <= 15 for m in _PHONE_INTL.finditer(text))


def _find_card(text: str) -> bool:
    for m in _CARD.finditer(text):
        digits = re.sub(r"[ -]", "", m.group())
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn_ok(digits):
            return True
    return False


def _find_iban(text: str) -> bool:
    for m in _IBAN.finditer(text):
        raw = m.group()
        chars = [(i, c) for i, c in enumerate(raw) if c != " "]
        compact = "".join(c for _, c in chars).upper()
        known = IBAN_LENGTHS.get(compact[:2])
        for length in [known] if known else range(min(34, len(compact)), 14, -1):
            if length > len(compact):
                continue
            end = chars[length - 1][0] + 1  # the IBAN must end at a group boundary
            if (end == len(raw) or raw[end] == " ") and iban_ok(compact[:length]):
                return True
    return False


def _find_ssn(text: str) -> bool:
    return _SSN.search(text) is not None


BUILTIN_PII = {
    "email": _find_email,
    "phone": _find_phone,
    "credit_card": _find_card,
    "iban": _find_iban,
    "us_ssn": _find_ssn,
}


def _strings(value, prefix=()):
    """(path, text) for every string and integer value under ``value``."""
    if isinstance(value, str):
        yield list(prefix), value
    elif isinstance(value, int) and not isinstance(value, bool):
        yield list(prefix), str(value)
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _strings(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _strings(child, (*prefix, index))


# ---------------------------------------------------------------------------------------------
# Rules: each returns the list of its violations (empty when satisfied); ValueError = bad rule.
def rule_forbidden_fields(rule, payload):
    problems = []
    for parts in _paths(rule):
        found, _ = resolve(payload, parts)
        problems += [f"{show_path(path)} is forbidden but present" for path, _ in found]
    return problems


def rule_required_fields(rule, payload):
    problems = []
    for parts in _paths(rule):
        found, missing = resolve(payload, parts)
        problems += [f"{show_path(path)} is required but missing" for path in missing]
        problems += [f"{show_path(path)} is required but null" for path, v in found if v is None]
    return problems


def _single_path_values(rule, payload):
    [parts] = _paths(rule, "path")
    found, missing = resolve(payload, parts)
    problems = []
    if missing and not rule.get("optional", False):
        problems += [f"{show_path(path)} is missing" for path in missing]
    return found, problems


def rule_value_range(rule, payload):
    low, high = rule.get("min"), rule.get("max")
    if (low is None and high is None) or not all(b is None or _is_number(b) for b in (low, high)):
        raise ValueError("needs a numeric 'min' and/or 'max'")
    found, problems = _single_path_values(rule, payload)
    for path, value in found:
        if not _is_number(value):
            problems.append(f"{show_path(path)} is {show_value(value)}, not a number")
        elif (low is not None and value < low) or (high is not None and value > high):
            bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
            problems.append(f"{show_path(path)} = {show_value(value)} is outside {bounds}")
    return problems


def rule_allowed_values(rule, payload):
    values = rule.get("values")
    if not isinstance(values, list) or not values:
        raise ValueError("needs a non-empty 'values' list")
    found, problems = _single_path_values(rule, payload)
    for path, value in found:
        if not any(json_equal(value, allowed) for allowed in values):
            problems.append(f"{show_path(path)} = {show_value(value)} is not an allowed value")
    return problems


def rule_pii_patterns(rule, payload):
    names = rule.get("patterns", sorted(BUILTIN_PII) if "custom" not in rule else [])
    if not isinstance(names, list) or any(n not in BUILTIN_PII for n in names):
        raise ValueError(
            f"'patterns' must name built-in detectors: {', '.join(sorted(BUILTIN_PII))}"
        )
    detectors = [(name, BUILTIN_PII[name]) for name in names]
    custom = rule.get("custom", [])
    if not isinstance(custom, list):
        raise ValueError("'custom' must be a list of {name, regex}")
    for spec in custom:
        if not isinstance(spec, dict) or not isinstance(spec.get("regex"), str):
            raise ValueError("each custom pattern needs a 'regex'")
        try:
            pattern = re.compile(spec["regex"])
        except re.error as exc:
            raise ValueError(f"custom pattern {spec['regex'][:60]!r}: {exc}") from None
        detectors.append(
            (str(spec.get("name") or "custom"), lambda t, p=pattern: bool(p.search(t)))
        )
    if not detectors:
        raise ValueError("no patterns")
    scopes = [([], payload)]
    if "paths" in rule:
        scopes = [item for parts in _paths(rule) for item in resolve(payload, parts)[0]]
    problems = []
    for base, value in scopes:
        for path, text in _strings(value, tuple(base)):
            hits = [name for name, detect in detectors if detect(text)]
            problems += [f"{name} found at {show_path(path)}" for name in hits]
    return problems


RULES = {
    "forbidden_fields": rule_forbidden_fields,
    "required_fields": rule_required_fields,
    "value_range": rule_value_range,
    "allowed_values": rule_allowed_values,
    "pii_patterns": rule_pii_patterns,
}


def check(item: dict, timeout: float) -> tuple[bool, float, str]:
    reference = item.get("reference")
    if isinstance(reference, list):
        reference = {"rules": reference}
    rules = reference.get("rules") if isinstance(reference, dict) else None
    if not isinstance(rules, list) or not rules:
        return False, 0.0, "error: the reference needs a non-empty 'rules' list"
    scoring = reference.get("scoring", "all")
    if scoring not in ("all", "fraction"):
        return False, 0.0, "error: scoring must be 'all' or 'fraction'"
    response = item.get("response")
    if not isinstance(response, str):
        return False, 0.0, f"not JSON: response is not a string (got {type(response).__name__})"
    try:
        payload, _ = extract_json(response)
    except ValueError as exc:
        return False, 0.0, f"not JSON: {exc}"
    violations = []
    for number, rule in enumerate(rules, 1):
        kind = rule.get("kind") if isinstance(rule, dict) else None
        name = f"{rule.get('id') or kind}" if isinstance(rule, dict) else "?"
        if kind not in RULES:
            return False, 0.0, f"error: rule {number}: unknown kind {str(kind)[:40]!r}"
        try:
            problems = RULES[kind](rule, payload)
        except ValueError as exc:
            return False, 0.0, f"error: rule {number} ({name}): {exc}"
        if problems:
            shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
            more = len(problems) - MAX_PROBLEMS_SHOWN
            violations.append(f"[{name}] {shown}" + (f" (+{more} more)" if more > 0 else ""))
    satisfied = len(rules) - len(violations)
    if not violations:
        return True, 1.0, f"all {len(rules)} rules satisfied"
    score = satisfied / len(rules) if scoring == "fraction" else 0.0
    return (
        False,
        score,
        f"{len(violations)} of {len(rules)} rules violated: " + " | ".join(violations),
    )


if __name__ == "__main__":
    sys.exit(serve(check, default_timeout=DEFAULT_TIMEOUT_S))
