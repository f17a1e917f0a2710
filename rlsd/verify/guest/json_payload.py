"""Strict JSON payload extraction, shared by the json-schema and policy-rules verifiers.

Standard library only; copied into the build context of the verifiers that list
``json_payload`` under ``shared:`` (see :mod:`rlsd.verify.guest`).

The payload is exactly one JSON document: the whole response (surrounding whitespace allowed)
or a single ```json (or unlabelled) fenced block with only whitespace outside it. Strict JSON:
no NaN / Infinity, no number that overflows to infinity (1e400), no number literal longer than
MAX_NUMBER_CHARS, no duplicate key in any object, at most MAX_DEPTH levels of nesting.
"""

from __future__ import annotations

import json
import re

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
