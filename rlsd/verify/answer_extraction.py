"""Final-answer extraction and the exact-answer verdict for math tasks -- standard library only.

This module is the ONE implementation behind both runners of the ``math-answer`` verifier: the
in-process checker (:mod:`rlsd.verify.math_answer`) imports it, and the container verifier
(``verifiers/math-answer``) gets a verbatim copy of this file from its ``prepare.py``. Keep it free
of third-party and ``rlsd`` imports. The policy being trained is an attacker: every rule below
closes a misreading that would let a response pass without stating the gold answer once.

**Final answers.** A response states its final answers with markers:

* ``#### <number>`` (GSM8K convention; the prompts ask for it). The answer is the rest of the
  marker's line, up to the next ``####`` or ``\\boxed``. It is an answer only when a number starts
  it (after spaces, ``:``, ``*``, ``$``, ``(``, ``\\(``); a ``####`` followed by text (a markdown
  heading such as ``#### Step 1``) is not an answer, but one followed by a number in words
  (``#### forty-two``) or by non-ASCII digits is an unusable answer.
* ``\\boxed{...}`` (braces matched at any depth; an unterminated ``\\boxed{`` is ignored, and a
  ``\\boxed`` inside another makes the outer one unusable).

EVERY stated answer counts, not just the last one. A response passes only when all its ``####``
and ``\\boxed{}`` answers are usable and have the same value, and that value equals the gold one
(``\\boxed{42} ... #### 42`` passes; ``#### 41 ... #### 42`` or ``\\boxed{41} ... #### 42`` fails
with ``several final answers: ...`` whatever the gold answer is: hedging never pays).

**One number per answer.** A final answer must hold exactly one number: a list or a range
(``\\boxed{41, 42, 43}``, ``#### 40-45``, ``#### 40–45``, ``#### 41 or 42``) fails as several final
answers. Words around the number are ignored (``#### 7 apples``, ``\\boxed{10 \\text{ apples}}``,
``\\boxed{x = 5}``, ``50%`` reads 50), but an answer also holding a number in words
(``#### 2 million``, ``one``, ``half``, ``dozen``...), a scale suffix (``5k``, ``3M``, ``2bn``), a
number in an exponent, subscript or function argument (``x^2``, ``sqrt(2)``) or a LaTeX command
other than formatting ones (``\\sqrt``, ``\\pi``, ``\\pm``, ``\\dots``, ``\\approx``...) is
unusable.

**Last-number fallback.** Only when the response holds no ``####`` at all and no ``\\boxed`` at
all, a declared fallback (on by default, recorded in ``detail`` as ``fallback:last-number``)
reads the last number of the text. It refuses (the response fails) when a number in words or a
non-ASCII digit comes after that number, and when that number is three digits after a space and
1-3 digits (``2 100``: one space-grouped number or two?).

**Numbers.** Compared exactly as rationals (:class:`fractions.Fraction`): ``10.0 == 10``,
``3/4 == 0.75``, ``0.333 != 1/3``. Accepted forms:

* an optional sign (``-``, ``+``, unicode minus U+2212) not glued to a preceding letter, digit or
  ``.`` (``7-3`` is 7 and 3, never -3), an optional ``$`` / ``\\$``;
* ASCII digits with optional decimals; thousands grouped with commas (``1,000``, LaTeX ``1{,}000``)
  or -- inside a ``####`` or ``\\boxed{}`` answer only -- with a space, NBSP U+00A0, thin space
  U+2009 (or LaTeX ``\\,``) or narrow NBSP U+202F (``1 000``); groups must have three digits
  after a first group of one to three: a **malformed digit grouping** (``1,0000``, ``10,00``,
  ``1.000,5``) or a number with two decimal points is never read as a number -- it makes the answer
  unusable (``unusable final answer: malformed digit grouping ...``), in the fallback too;
* scientific notation ``4.2e1`` / ``4.2E+1`` / ``5e-1``, and ``4.2 \\times 10^{1}`` (also ``×``,
  ``\\cdot``, ``·``, ``*``);
* integer powers ``2^{10}``, ``2^10`` (ASCII reading: the whole digit run is the exponent),
  ``2^(10)``, ``10^{-2}``; ``-2^2`` is -4; chained powers and ``0^0`` are unusable;
* fractions ``3/4``, ``\\frac{3}{4}``, ``\\dfrac``, ``\\tfrac`` with single-token LaTeX arguments
  (``\\frac34``, ``\\frac3 4``, ``\\frac{3}4``) and a leading sign (``-\\frac34``, ``- \\frac{3}{4}``).

A number (numerator, denominator, power or exponent result) with more than :data:`MAX_DIGITS`
digits is unusable and never computed (``2^{100000}`` and ``1e99999`` are refused by bound, not
evaluated). Non-ASCII digits are **rejected, never normalised**: NFKC would turn the superscript in
``10²`` into ``102``. A fullwidth ``４２``, Arabic-Indic ``٤٢``, superscript ``²`` or vulgar
fraction ``½`` in a final answer makes it unusable.

The gold answer is parsed with the same number rules as one final answer (``"1000"``,
``"-3/4"``, ``"0.75"``, ``"$1,000.50"``, ``"1 000"``, ``"7 apples"``, ``"#### 7"``); a gold answer
holding several numbers is unparsable, one holding none is "not a number".

Scanning is linear in the response length: every regex is free of nested or overlapping unbounded
quantifiers, each character is looked at a bounded number of times, and the fallback only parses
a bounded window before the last digit. A response with more than :data:`MAX_MARKERS` ``####``
markers or ``\\boxed{}`` answers, or more than :data:`MAX_BRACES` braces after its first
``\\boxed``, is unusable (no honest answer looks like that; it bounds the work).

Known strictness: a numbered markdown heading ``#### 1. Setup`` is read as a final answer (it
starts with a number), so a response using such headings fails unless they agree with its answer.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "MAX_DIGITS",
    "AnswerError",
    "Extraction",
    "SeveralAnswers",
    "check_answer",
    "extract_answer",
    "parse_number",
]

#: Numbers with more digits than this are rejected (and never handed to int()).
MAX_DIGITS = 200

_MINUS = "\u2212"  # unicode minus sign, common in model output copied from LaTeX renderers
_SIGNS = "-+\u2212"
_GROUP_SPACES = " \u00a0\u2009\u202f"
_DIGITS = "0123456789"
# A sign glued to one of these is an operator or a hyphen, not a sign ("7-3", "x-3", "1.-3").
_GLUE = _DIGITS + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ."
_WINDOW = 4 * MAX_DIGITS + 64  # how far before the last digit the fallback parses
#: More '####' markers or closed \boxed{} than this make a response unusable (no honest answer
#: states that many); bounds the work per response.
MAX_MARKERS = 1000
#: More braces than this after the first \boxed make a response unusable (bounds the work).
MAX_BRACES = 200_000

# The start of a number: a \frac, or a digit run (digits, commas and dots; validated in Python).
_ATOM = re.compile(r"\\[dt]?frac(?![A-Za-z])|[0-9][0-9,.]*|\.[0-9]+")
_GROUPED = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+")
_DECIMALS = re.compile(r"\.([0-9]+)")
_SCI = re.compile(r"[eE]([-+\u2212]?[0-9]+)(?![0-9])")
_POWERS = (
    re.compile(r"\^[ ]*\{[ ]*([-+\u2212]?[0-9]+)[ ]*\}"),
    re.compile(r"\^[ ]*\([ ]*([-+\u2212]?[0-9]+)[ ]*\)"),
    re.compile(r"\^([-+\u2212]?[0-9]+)"),
)
_TIMES_TEN = re.compile(r"[ ]*(?:\\times|\\cdot|\u00d7|\u00b7|\*)[ ]*10(?=\^)")
_DEN = re.compile(r"[ \t]?/[ \t]?([0-9]+)(?![0-9]|\.[0-9])")
_FRAC_ARG = re.compile(
    r"[ ]*(?:\{[ ]*(?P<braced>[-+\u2212]?(?:[0-9][0-9,.]*|\.[0-9]+))[ ]*\}|(?P<digit>[0-9]))"
)
_FRAC_SKIP = re.compile(r"(?:[ ]*\{[^{}]{0,200}\}){0,2}")
_SCALE = re.compile(r"(?:[kKMB]|bn|mn)(?![A-Za-z])")

_MARK = re.compile(r"#{4,}")
_LEAD = re.compile(r"[ \t:*$(\[]*(?:\\[(\[][ \t:*$(\[]*)*")
_START = re.compile(
    r"[-+\u2212]?(?:\\?\$)?(?:[0-9]|\.[0-9])|[-+\u2212]?[ ]?\\[dt]?frac(?![A-Za-z])"
)
_BRACE = re.compile(r"\\boxed(?![A-Za-z])[ \t\n]*\{|[{}]")
_CMD = re.compile(r"\\([A-Za-z]+)")
_NONASCII = re.compile(r"[^\x00-\x7f]+")
# Number words, grouped by first letter; matched on lower-cased text (a first-letter look-ahead
# keeps the scan fast).
_NUMBER_WORDS = (
    "z(?:ero)|o(?:ne)|t(?:wo|hree|en|welve|hirteen|wenty|hirty|housands?|rillions?)|"
    "f(?:our|ive|ourteen|ifteen|orty|ourty|ifty)|s(?:ix|even|ixteen|eventeen|ixty|eventy)|"
    "e(?:ight|leven|ighteen|ighty)|n(?:ine|ineteen|inety)|h(?:undreds?|alf|alves)|"
    "m(?:illions?)|b(?:illions?)|d(?:ozens?)|q(?:uarters?)"
)
_WORD = re.compile(rf"(?=[zotfsenhmbdq])(?<![a-z])(?:{_NUMBER_WORDS})(?![a-z])")
_FUNC_ARG = re.compile(r"[A-Za-z]\($")
#: LaTeX commands that only format an answer; any other one (\sqrt, \pi, \pm, \dots, ...) makes
#: a final answer unusable.
_FORMATTING = frozenset(
    "frac dfrac tfrac times cdot text textbf textit textrm textnormal textsf mathrm mathbf "  # noqa: SIM905
    "mathit mathsf mbox left right big Big bigl bigr Bigl Bigr displaystyle quad qquad circ "
    "degree".split()
)


class AnswerError(ValueError):
    """A final answer was found but cannot be used; the message says why."""


class SeveralAnswers(AnswerError):
    """The response states several different final answers (or a list / range as one)."""


class _Unusable(AnswerError):
    def __init__(self, message: str, end: int) -> None:
        super().__init__(message)
        self.end = end


def _show(x: object, limit: int = 48) -> str:
    s = str(x)
    return repr(s if len(s) <= limit else s[: limit - 3] + "...")


def _fmt(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else str(value)


def _ascii_digits(s: str) -> bool:
    return s.isascii() and s.isdigit()


def _too_long(end: int) -> _Unusable:
    return _Unusable(f"number too long (more than {MAX_DIGITS} digits)", end)


def _checked(value: Fraction, end: int) -> Fraction:
    if len(str(abs(value.numerator))) > MAX_DIGITS or len(str(value.denominator)) > MAX_DIGITS:
        raise _too_long(end)
    return value


def _exponent(text: str, end: int) -> int:
    text = text.replace(_MINUS, "-")
    if len(text.lstrip("+-")) > 6:
        raise _Unusable("number too long (an exponent of more than 6 digits)", end)
    return int(text)


def _power(base: Fraction, k: int, end: int) -> Fraction:
    if base == 0:
        if k <= 0:
            raise _Unusable("0^0 is undefined" if k == 0 else "division by zero", end)
        return Fraction(0)
    if base == 1 or k == 0:
        return Fraction(1)
    big = max(abs(base.numerator), base.denominator)
    if big > 1 and abs(k) * math.log10(big) > MAX_DIGITS + 1:
        raise _too_long(end)
    return _checked(base**k, end)


def _run_value(run: str, end: int) -> Fraction:
    """A digit run with optional comma grouping and decimals (already stripped)."""
    if run.count(".") > 1:
        raise _Unusable(f"malformed number {_show(run)} (two decimal points)", end)
    intpart, _, decimals = run.partition(".")
    if "," in decimals:
        raise _Unusable(f"malformed digit grouping {_show(run)}", end)
    if "," in intpart:
        if _GROUPED.fullmatch(intpart) is None:
            raise _Unusable(f"malformed digit grouping {_show(run)}", end)
        intpart = intpart.replace(",", "")
    if len(intpart) + len(decimals) > MAX_DIGITS:
        raise _too_long(end)
    return Fraction(f"{intpart or '0'}.{decimals or '0'}")


def _plain(s: str, a: int, e: int, spaces: bool) -> tuple[int, Fraction]:
    """Parse the number whose digit run is s[a:e]: grouping, decimals, then e-notation, a power
    or "x 10^k", then "/den". Returns (end, value); raises _Unusable."""
    run = s[a:e].rstrip(",.")  # a trailing comma or full stop is punctuation
    e = a + len(run)
    n = len(s)
    if spaces and "," not in run and "." not in run and len(run) <= 3:
        groups = [run]
        while (
            e + 3 < n
            and s[e] in _GROUP_SPACES
            and _ascii_digits(s[e + 1 : e + 4])
            and not (e + 4 < n and s[e + 4] in _DIGITS)
        ):
            groups.append(s[e + 1 : e + 4])
            e += 4
            if 3 * len(groups) > MAX_DIGITS:
                raise _too_long(e)
        if len(groups) > 1:
            run = "".join(groups)
            m = _DECIMALS.match(s, e)
            if m is not None:
                run += m.group(0)
                e = m.end()
    value = _run_value(run, e)
    sci = _SCI.match(s, e)
    if sci is not None:
        e = sci.end()
        k = _exponent(sci.group(1), e)
        if abs(k) > 2 * MAX_DIGITS:
            raise _too_long(e)
        value = _checked(value * Fraction(10) ** k, e)
    else:
        for pattern in _POWERS:
            p = pattern.match(s, e)
            if p is not None:
                e = p.end()
                value = _power(value, _exponent(p.group(1), e), e)
                if s.startswith("^", e):
                    raise _Unusable("chained powers", e + 1)
                break
        else:
            t = _TIMES_TEN.match(s, e)
            if t is not None:
                for pattern in _POWERS:
                    p = pattern.match(s, t.end())
                    if p is not None:
                        e = p.end()
                        value = _checked(
                            value * _power(Fraction(10), _exponent(p.group(1), e), e), e
                        )
                        break
    d = _DEN.match(s, e)
    if d is not None:
        e = d.end()
        if len(d.group(1)) > MAX_DIGITS:
            raise _too_long(e)
        den = int(d.group(1))
        if den == 0:
            raise _Unusable("division by zero", e)
        value = _checked(value / den, e)
    return e, value


def _frac(s: str, e: int) -> tuple[int, Fraction]:
    """Parse the two arguments of a \\frac ending at e (single-token or braced)."""
    values = []
    for _ in range(2):
        m = _FRAC_ARG.match(s, e)
        if m is None:
            skip = _FRAC_SKIP.match(s, e)
            raise _Unusable("\\frac of something that is not a number", skip.end())
        e = m.end()
        arg = m.group("braced") or m.group("digit")
        sign = arg[0] in _SIGNS
        value = _run_value(arg.lstrip(_SIGNS).rstrip(",.") if sign else arg.rstrip(",."), e)
        values.append(-value if arg[0] in ("-", _MINUS) else value)
    if values[1] == 0:
        raise _Unusable("division by zero", e)
    return e, _checked(values[0] / values[1], e)


def _sign_before(s: str, j: int) -> int:
    """Index of a sign just before s[j] (not glued to a word or digit), or -1."""
    if j > 0 and s[j - 1] in _SIGNS and (j == 1 or s[j - 2] not in _GLUE):
        return j - 1
    return -1


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    value: Fraction | None
    error: str | None


def _tokens(s: str, spaces: bool):
    """Every number of s, in order (errors included as tokens with a message)."""
    pos = 0
    while True:
        m = _ATOM.search(s, pos)
        if m is None:
            return
        a = m.start()
        try:
            if s.startswith("\\", a):
                start = a
                j = _sign_before(s, a)
                if j < 0 and a > 1 and s[a - 1] == " ":
                    j = _sign_before(s, a - 1)
                end, value = _frac(s, m.end())
            else:
                start = a - 1 if a > 0 and s[a - 1] == "$" else a
                if start > 0 and start < a and s[start - 1] == "\\":
                    start -= 1
                j = _sign_before(s, start)
                end, value = _plain(s, a, m.end(), spaces)
            if j >= 0:
                start = j
                if s[j] in ("-", _MINUS):
                    value = -value
            yield _Token(start, end, value, None)
        except _Unusable as exc:
            end = max(exc.end, a + 1)
            yield _Token(a, end, None, str(exc))
        pos = max(end, a + 1)


def _nonascii_numeric(s: str) -> str | None:
    if s.isascii():
        return None
    for run in _NONASCII.finditer(s):
        for ch in run.group():
            if ch.isnumeric():
                return ch
    return None


def _latex_clean(seg: str) -> str:
    return seg.replace("{,}", ",").replace("\\,", "\u2009").replace("\\!", "")


def _read_one(seg: str, what: str, *, strict: bool = True) -> Fraction | None:
    """The one number of a final answer (or a gold answer); None when it holds none.

    Raises SeveralAnswers for a list or range, AnswerError for an unusable answer."""
    seg = _latex_clean(seg)
    ch = _nonascii_numeric(seg)
    if ch is not None:
        raise AnswerError(
            f"non-ASCII digit {ch!r} (U+{ord(ch):04X}) in {_show(what)}; use ASCII digits"
        )
    if strict:
        for cmd in _CMD.finditer(seg):
            if cmd.group(1) not in _FORMATTING:
                raise AnswerError(f"unsupported LaTeX \\{cmd.group(1)} in {_show(what)}")
        word = _WORD.search(seg.lower())
        if word is not None:
            raise AnswerError(f"a number in words ({word.group()!r}) in {_show(what)}")
    found: list[_Token] = []
    for tok in _tokens(seg, spaces=True):
        found.append(tok)
        if len(found) == 4:
            break
    for tok in found:
        if tok.error is not None:
            raise AnswerError(f"{tok.error} in {_show(what)}")
    if len(found) > 1:
        shown = ", ".join(_fmt(t.value) for t in found[:3]) + (", ..." if len(found) > 3 else "")
        raise SeveralAnswers(f"several final answers in {_show(what)}: {shown}")
    if not found:
        return None
    tok = found[0]
    if strict:
        before = seg[max(0, tok.start - 2) : tok.start]
        if before.endswith(("^", "_", "^{", "_{")) or _FUNC_ARG.search(before):
            raise AnswerError(
                f"a number in an exponent, subscript or function argument in {_show(what)}"
            )
        if _SCALE.match(seg, tok.end):
            raise AnswerError(f"a scale suffix after the number in {_show(what)}")
    return tok.value


@dataclass(frozen=True)
class Extraction:
    """A final answer found in a text: ``method`` is '####', 'boxed' or 'fallback:last-number';
    ``count`` is how many final answers the text states (all with this value)."""

    value: Fraction
    text: str
    method: str
    count: int = 1


@dataclass(frozen=True)
class _Stated:
    pos: int
    method: str
    text: str
    value: Fraction | None
    error: AnswerError | None


def _hash_answers(text: str) -> list[_Stated]:
    out: list[_Stated] = []
    marks = []
    for m in _MARK.finditer(text):
        marks.append(m)
        if len(marks) > MAX_MARKERS:
            raise AnswerError(f"more than {MAX_MARKERS} '####' markers")
    n = len(text)
    nl = bx = -2  # cached positions of the next newline / \boxed (-1: none left)
    for i, m in enumerate(marks):
        p = m.end()
        if nl != -1 and nl < p:
            nl = text.find("\n", p)
        if bx != -1 and bx < p:
            bx = text.find("\\boxed", p)
        end = marks[i + 1].start() if i + 1 < len(marks) else n
        for stop in (nl, bx):
            if stop != -1 and stop < end:
                end = stop
        seg = text[p:end]
        shown = text[m.start() : end].rstrip()
        j = _LEAD.match(seg).end()
        if _START.match(seg, j) is None:
            if j < len(seg) and seg[j].isnumeric():
                err = AnswerError(f"non-ASCII digit {seg[j]!r} in {_show(shown)}; use ASCII digits")
            elif _WORD.match(seg[j : j + 24].lower()) is not None:
                err = AnswerError(f"a number in words in {_show(shown)}")
            else:
                continue  # a heading or text after '####', not an answer
            out.append(_Stated(m.start(), "####", shown, None, err))
            continue
        try:
            value = _read_one(seg, shown)
        except AnswerError as exc:
            out.append(_Stated(m.start(), "####", shown, None, exc))
            continue
        assert value is not None  # a number starts the segment
        out.append(_Stated(m.start(), "####", shown, value, None))
    return out


def _boxed_answers(text: str) -> list[_Stated]:
    out: list[_Stated] = []
    first = text.find("\\boxed")
    if first < 0:
        return out
    # Open \boxed{: (depth of its brace, content start, \boxed start, number opened before it).
    stack: list[tuple[int, int, int, int]] = []
    depth = opened = 0
    for count, t in enumerate(_BRACE.finditer(text, first)):
        g = t.group()
        if g == "{":
            depth += 1
        elif g == "}":
            if stack and stack[-1][0] == depth:
                _, cs, bs, index = stack.pop()
                out.append(_boxed(text, cs, bs, t.start(), t.end(), opened > index + 1))
                if len(out) > MAX_MARKERS:
                    raise AnswerError(f"more than {MAX_MARKERS} \\boxed{{}} answers")
            if depth:
                depth -= 1
        else:  # \boxed{
            depth += 1
            stack.append((depth, t.end(), t.start(), opened))
            opened += 1
        if count >= MAX_BRACES:
            raise AnswerError(f"more than {MAX_BRACES} braces after \\boxed")
    return out


def _boxed(text: str, cs: int, bs: int, ce: int, end: int, nested: bool) -> _Stated:
    """The answer of the \\boxed{} at ``bs`` whose content is text[cs:ce]."""
    shown = text[bs:end]
    if nested:  # a \boxed opened inside this one
        return _Stated(bs, "boxed", shown, None, AnswerError(f"a \\boxed inside {_show(shown)}"))
    try:
        value = _read_one(text[cs:ce], shown)
    except AnswerError as exc:
        return _Stated(bs, "boxed", shown, None, exc)
    if value is None:
        return _Stated(bs, "boxed", shown, None, AnswerError(f"no number in {_show(shown)}"))
    return _Stated(bs, "boxed", shown, value, None)


def _fallback(text: str) -> Extraction | None:
    last = max(text.rfind(d) for d in _DIGITS)
    if last < 0:
        ch = _nonascii_numeric(text)
        if ch is not None:
            raise AnswerError(f"non-ASCII digit {ch!r} (U+{ord(ch):04X}); use ASCII digits")
        return None
    w0 = max(0, last - _WINDOW)
    window = text[w0 : last + 16]
    tok = None
    for tok in _tokens(window, spaces=False):  # noqa: B007 - we want the final one
        pass
    if tok is None:  # pragma: no cover - a digit always starts a token
        return None
    shown = window[tok.start : tok.end]
    if tok.error is not None:
        raise AnswerError(f"{tok.error} (last number)")
    tail = text[w0 + tok.end :]
    word = _WORD.search(tail.lower())
    if word is not None:
        raise AnswerError(
            f"a number in words ({word.group()!r}) after the last number {_show(shown)}"
        )
    ch = _nonascii_numeric(tail)
    if ch is not None:
        raise AnswerError(f"non-ASCII digit {ch!r} after the last number {_show(shown)}")
    s = tok.start
    if (
        s >= 2
        and window[s - 1] in _GROUP_SPACES
        and window[s - 2] in _DIGITS
        and _ascii_digits(shown)
        and len(shown) == 3
    ):
        raise AnswerError(
            f"ambiguous last number {_show(window[max(0, s - 4) : tok.end])}: "
            "one space-grouped number or two? (write '#### n')"
        )
    assert tok.value is not None
    return Extraction(tok.value, shown, "fallback:last-number")


def extract_answer(text: str, *, fallback_last_number: bool = True) -> Extraction | None:
    """The final answer of ``text`` (see the module docstring), or None if there is none.

    Raises :class:`SeveralAnswers` when the text states several different final answers and
    :class:`AnswerError` (a ``ValueError``) for a found-but-unusable one.
    """
    stated = sorted(_hash_answers(text) + _boxed_answers(text), key=lambda a: a.pos)
    if stated:
        for a in stated:
            if a.error is not None:
                raise a.error
        values = {a.value for a in stated}
        if len(values) > 1:
            listed = ", ".join(f"{_show(a.text)} = {_fmt(a.value)}" for a in stated[:6])
            more = f", ... ({len(stated)} in all)" if len(stated) > 6 else ""
            raise SeveralAnswers(f"several final answers: {listed}{more}")
        hashes = [a for a in stated if a.method == "####"]
        chosen = (hashes or stated)[-1]
        assert chosen.value is not None
        return Extraction(chosen.value, chosen.text, chosen.method, len(stated))
    if fallback_last_number and "####" not in text and "\\boxed" not in text:
        return _fallback(text)
    return None


def parse_number(text: str) -> Fraction | None:
    """Parse a gold answer such as ``"10"``, ``"-3/4"``, ``"$1,000.50"`` or ``"#### 7"``.

    None when it holds no number; AnswerError when it holds several or an unusable one.
    """
    stripped = text.strip()
    if "####" in stripped or "\\boxed" in stripped:
        found = extract_answer(stripped, fallback_last_number=False)
        return None if found is None else found.value
    return _read_one(stripped, stripped, strict=False)


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
    except SeveralAnswers as exc:
        return False, str(exc)
    except (ValueError, ArithmeticError) as exc:
        return False, f"unusable final answer: {exc}"
    if found is None:
        if "####" in response or "\\boxed" in response:
            where = (
                "'####' or \\boxed without a usable number (the last-number fallback "
                "applies only when neither appears)"
            )
        elif fallback_last_number:
            where = "no '#### n', \\boxed{n} or any number"
        else:
            where = "no '#### n' or \\boxed{n} (last-number fallback off)"
        return False, f"no final answer found: {where}"
    agree = f" ({found.count} final answers, all equal)" if found.count > 1 else ""
    if found.value == gold_value:
        return True, (
            f"{found.method}: {_show(found.text)} = {_fmt(found.value)} matches gold{agree}"
        )
    return (
        False,
        f"{found.method}: {_show(found.text)} = {_fmt(found.value)} != gold "
        f"{_fmt(gold_value)}{agree}",
    )
