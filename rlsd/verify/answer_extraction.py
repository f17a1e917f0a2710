"""Final-answer extraction and the exact-answer verdict for math tasks -- standard library only.

This module is the ONE implementation behind both runners of the ``math-answer`` verifier: the
in-process checker (:mod:`rlsd.verify.math_answer`) imports it, and the container verifier
(``verifiers/math-answer``) gets a verbatim copy of this file from its ``prepare.py``. Keep it free
of third-party and ``rlsd`` imports.

The final answer of a response is, in order of preference:

1. the number after the LAST ``#### `` marker (GSM8K convention; the prompts ask for it);
2. otherwise the LAST ``\\boxed{...}``;
3. otherwise -- a declared fallback, on by default and recorded in ``detail`` as
   ``fallback:last-number`` -- the last number anywhere in the text.

Numbers are compared exactly as rationals (:class:`fractions.Fraction`): ``"10.0" == "10"``,
``"3/4" == "0.75"``, ``"1,000" == "1000"``; a leading ``$`` or ``+`` and trailing words
(``"7 apples"``) are ignored. The gold answer is parsed the same way.

Every regex below is free of nested or overlapping unbounded quantifiers and never starts a
match with an unbounded optional run, so scanning is linear in the response length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "MAX_DIGITS",
    "Extraction",
    "check_answer",
    "extract_answer",
    "parse_number",
]

#: Numbers with more digits than this are rejected (and never handed to int()).
MAX_DIGITS = 200

_MINUS = "\u2212"  # unicode minus sign, common in model output copied from LaTeX renderers

# A number: optional sign (not when glued to a preceding word/digit, so "7-3" is not "-3"),
# optional "$", thousands-grouped or plain integer part, optional decimals, optional "/den".
_NUMBER = (
    r"(?:(?<![0-9A-Za-z.])(?P<sign>[-+\u2212]))?"
    r"\$?"
    r"(?P<body>(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)"
    r"(?:[ \t]?/[ \t]?(?P<den>[0-9]+)(?![0-9]|\.[0-9]))?"
)
_NUMBER_RE = re.compile(_NUMBER)
_HASH_RE = re.compile(r"####[\s:*]{0,16}" + _NUMBER)
# One level of nested braces inside \boxed{...}, bounded length.
_BOXED_RE = re.compile(r"\\boxed[ ]?\{(?P<content>(?:[^{}]|\{[^{}]{0,64}\}){0,256})\}")
_FRAC_RE = re.compile(
    r"^(?P<sign>[-+\u2212]?)[ ]?\\[dt]?frac[ ]?\{[ ]?(?P<num>[0-9.,]{1,64})[ ]?\}"
    r"[ ]?\{[ ]?(?P<den>[0-9.,]{1,64})[ ]?\}"
)


class _ParseError(ValueError):
    pass


def _to_fraction(sign: str | None, body: str, den: str | None) -> Fraction:
    body = body.replace(",", "")
    if len(body) > MAX_DIGITS or (den is not None and len(den) > MAX_DIGITS):
        raise _ParseError("number too long")
    value = Fraction(body)
    if den is not None:
        d = Fraction(den.replace(",", ""))
        if d == 0:
            raise _ParseError("division by zero")
        value /= d
    return -value if sign in ("-", _MINUS) else value


def _from_match(m: re.Match[str]) -> Fraction:
    return _to_fraction(m.group("sign"), m.group("body"), m.group("den"))


def _parse_boxed(content: str) -> Fraction | None:
    content = content.strip()
    frac = _FRAC_RE.match(content)
    if frac is not None:
        return _to_fraction(frac.group("sign"), frac.group("num"), frac.group("den"))
    m = _NUMBER_RE.search(content)
    return None if m is None else _from_match(m)


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - we want the final match
        pass
    return last


@dataclass(frozen=True)
class Extraction:
    """A final answer found in a text: ``method`` is '####', 'boxed' or 'fallback:last-number'."""

    value: Fraction
    text: str
    method: str


def extract_answer(text: str, *, fallback_last_number: bool = True) -> Extraction | None:
    """The final answer of ``text`` (see the module docstring), or None if there is none.

    Raises ``ValueError`` only for a found-but-unusable number (too long, ``x/0``).
    """
    m = _last(_HASH_RE, text)
    if m is not None:
        return Extraction(_from_match(m), m.group(0), "####")
    for b in reversed(list(_BOXED_RE.finditer(text))):
        value = _parse_boxed(b.group("content"))
        if value is not None:
            return Extraction(value, b.group(0), "boxed")
    if fallback_last_number:
        m = _last(_NUMBER_RE, text)
        if m is not None:
            return Extraction(_from_match(m), m.group(0), "fallback:last-number")
    return None


def parse_number(text: str) -> Fraction | None:
    """Parse a gold answer such as ``"10"``, ``"-3/4"``, ``"$1,000.50"`` or ``"#### 7"``."""
    stripped = text.strip()
    m = _NUMBER_RE.fullmatch(stripped)
    if m is not None:
        return _from_match(m)
    found = extract_answer(stripped, fallback_last_number=True)
    return None if found is None else found.value


def _show(x: object, limit: int = 48) -> str:
    s = str(x)
    return repr(s if len(s) <= limit else s[: limit - 3] + "...")


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(value)


def check_answer(
    response: object, gold: object, *, fallback_last_number: bool = True
) -> tuple[bool, str]:
    """The verdict on one response against a gold answer string: ``(passed, detail)``.

    Raises only on a bug; callers wrap it (a verifier never crashes on its input).
    """
    if not isinstance(gold, str):
        return False, f"task has no gold answer string (got {type(gold).__name__})"
    try:
        gold_value = parse_number(gold)
    except (ValueError, ArithmeticError) as exc:
        return False, f"gold answer {_show(gold)} unparsable: {exc}"
    if gold_value is None:
        return False, f"gold answer {_show(gold)} is not a number"
    if not isinstance(response, str):
        return False, f"response is not a string (got {type(response).__name__})"
    if not response.strip():
        return False, "empty response"
    try:
        found = extract_answer(response, fallback_last_number=fallback_last_number)
    except (ValueError, ArithmeticError) as exc:
        return False, f"unusable final answer: {exc}"
    if found is None:
        where = (
            "'#### n', \\boxed{n} or any number"
            if fallback_last_number
            else "'#### n' or \\boxed{n} (last-number fallback off)"
        )
        return False, f"no final answer found: no {where}"
    if found.value == gold_value:
        return True, f"{found.method}: {_show(found.text)} = {_fmt(found.value)} matches gold"
    return (
        False,
        f"{found.method}: {_show(found.text)} = {_fmt(found.value)} != gold {_fmt(gold_value)}",
    )
