#!/usr/bin/env python3
"""policy-rules: declarative business-policy rules applied to a JSON payload.

Item: ``{"id", "response": "<one JSON document, or one ```json fenced block>", "reference":
{"rules": [...], "scoring": "all" | "fraction"}}``. Rule kinds (each may carry an ``"id"``):

* ``{"kind": "forbidden_fields", "paths": ["ssn", "card.number", "items.*.secret"]}``
* ``{"kind": "required_fields", "paths": ["order_id", "items.*.sku"]}`` (null counts as absent)
* ``{"kind": "value_range", "path": "amount", "min": 0, "max": 1000, "optional": false}``
* ``{"kind": "allowed_values", "path": "currency", "values": ["EUR", "USD"], "optional": false}``
* ``{"kind": "pii_patterns", "patterns": ["email", "phone", "credit_card", "iban", "us_ssn"],
  "custom": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}], "paths": ["notes"]}``

Payload (strict, the same rules as json-schema): the whole response, or a single ```json (or
unlabelled) fenced block with only whitespace outside it; prose around it, a second document or
a second block fail. No duplicate keys, no NaN / Infinity / literals that overflow (``1e400``),
number literals of at most 100 characters, at most 64 levels of nesting.

Paths are dotted (``a.b.0``) or lists of keys; ``*`` matches every element of an array or value
of an object. ``forbidden_fields``, ``value_range`` and ``allowed_values`` also match keys that
differ from the path only in case, Unicode form, look-alike letters or punctuation
(``Card-Number``, ``card\u200b_number`` and ``ｃａｒｄ_number`` are ``card_number``);
``required_fields`` needs the exact key.

PII scanning (under ``paths`` if given, else the whole payload):

* what: every object key, every string, every number in every form: as written (the literal
  text, kept by the parser), as Python prints it, and, when it is integral, as an integer
  (``4.111111111111111e15`` is ``4111111111111111``);
* normalisation first: NFKC (fullwidth and other compatibility digits and ``@``), every decimal
  digit to ASCII, format characters (zero-width space / joiner, word joiner, BOM, soft hyphen),
  combining marks and invisible fillers removed, every Unicode dash to ``-``, every space,
  control and line separator to a space, dot and slash look-alikes to ``.`` and ``/``, common
  Cyrillic / Greek look-alike letters to Latin;
* numbers may be grouped by any separators (``.``, ``-``, space, ``/``, ``_``, ...; up to three
  between two groups, mixed allowed);
* splits: the values of the payload in document order (and, separately, its keys) are joined
  with spaces and scanned for cards and IBANs; within each array / object, consecutive string
  elements (values, keys) are scanned joined with spaces (phone, SSN) and with nothing (IBAN,
  e-mail, custom patterns), and any run of consecutive all-digit strings for a card.

Detectors (a candidate is confirmed by a checksum where one exists, to keep false positives
low): ``credit_card``: 13-19 digits of a card network's prefix and length (Visa, Mastercard,
Amex, Discover, Diners, JCB, UnionPay, Mir, Maestro) passing Luhn; within one string contiguous
or in card-like groups (equal groups with the first and last possibly shorter, 4-6-5 / 4-6-4,
or two to four groups of 4+ digits); spread over values only as whole all-digit values in 3+
groups of one length (up to 6 digits for 14-16 digits in all, up to 2 for any length) or
4-6-5 / 4-6-4, so that amounts, quantities and ids of one payload do not add up to a card.
``iban``: a registry country, its exact length, mod-97. ``us_ssn``: 3-2-4 with separators, not
the never-issued areas 000 / 666 / 9xx, groups 00 or serials 0000 (bare 9-digit numbers are not
flagged). ``phone``: ``+`` and 8-15 digits, or North American NXX-NXX-XXXX (area code and
exchange starting 2-9); no checksum, so bare digit runs and numbers spread over JSON numbers are
not phones. ``email``: local@domain.tld (Unicode letters allowed).

The detail lists every violated rule and where, never the PII itself. Score: 1.0 if no rule is
violated, else 0.0; ``"scoring": "fraction"`` gives the fraction of rules satisfied (``passed``
still needs all). Standard library only.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import unicodedata

# The shared modules (`shared:` in verifier.yaml) sit beside this file in the image (/verifier)
# and in build/ when it runs from the verifier's folder.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the image's /verifier is read-only; keep build/ clean locally
sys.path[:0] = [p for p in (HERE, os.path.join(HERE, "build")) if p not in sys.path]

from json_payload import extract_json, json_equal, show_path, show_value, split_path  # noqa: E402
from verifier_protocol import serve  # noqa: E402

DEFAULT_TIMEOUT_S = 5.0
MAX_PROBLEMS_SHOWN = 5


# ---------------------------------------------------------------------------------------------
# Unicode normalisation: what the PII detectors and the loose key matching see.
_MINUS_LIKE = "\u2212\u02d7\u2043\u2796\ufe63\uff0d\u2010\u2011"
_DOT_LIKE = "\u00b7\u0387\u2022\u2024\u2027\u2219\u22c5\u2e31\u3002\u30fb\uff0e\uff61\uff65"
_SLASH_LIKE = "\u2044\u2215\u2571\u29f5\u29f8\uff0f"
_FILLERS = "\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0"
_CONFUSABLES = dict(
    zip(
        "аеорсухіјѕԁһӏԛԝАВЕКМНОРСТХІЈЅοαιкνρτυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧ",
        "aeopcyxijsdhlqwABEKMHOPCTXIJSoaikvptuxABEZHIKMNOPTYX",
        strict=True,
    )
)
_ASCII_CONTROLS = {i: " " for i in [*range(32), 127]}
_CHAR_MAP: dict[str, str] = {}


def _map_char(ch: str) -> str:
    out = _CHAR_MAP.get(ch)
    if out is None:
        category = unicodedata.category(ch)
        if category == "Nd":
            out = str(unicodedata.decimal(ch))
        elif category in ("Cf", "Mn", "Me") or ch in _FILLERS:
            out = ""
        elif category[0] in "ZC":  # spaces, line / paragraph separators, controls, unassigned
            out = " "
        elif category == "Pd" or ch in _MINUS_LIKE:
            out = "-"
        elif ch in _DOT_LIKE:
            out = "."
        elif ch in _SLASH_LIKE:
            out = "/"
        else:
            out = _CONFUSABLES.get(ch, ch)
        if len(_CHAR_MAP) < 100_000:
            _CHAR_MAP[ch] = out
    return out


def normalize(text: str) -> str:
    """``text`` as the detectors see it (see the module docstring)."""
    if len(text) <= 200:
        return _normalize_short(text)
    return _normalize(text)


def _normalize(text: str) -> str:
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text)
        if not text.isascii():
            text = "".join(c if c < "\x80" else _map_char(c) for c in text)
    if not text.isprintable():
        text = text.translate(_ASCII_CONTROLS)
    return text


_normalize_short = functools.lru_cache(maxsize=8192)(_normalize)


@functools.lru_cache(maxsize=8192)
def _key_form(key: str) -> str:
    return re.sub(r"[\W_]+", "", _normalize(key).casefold())


def key_form(key: str) -> str:
    """A key as loose matching compares it: normalised, case-folded, letters and digits only."""
    return _key_form(key) if len(key) <= 200 else re.sub(r"[\W_]+", "", normalize(key).casefold())


# ---------------------------------------------------------------------------------------------
# Paths with wildcards.
def resolve(value, parts, prefix=(), loose=False):
    """(found, missing): ``[(path, value)]`` for every match, ``[path]`` where a key is absent.
    ``loose``: an object key matches when its :func:`key_form` equals the path's."""
    if not parts:
        return [(list(prefix), value)], []
    head, rest = str(parts[0]), parts[1:]
    if head == "*":
        if isinstance(value, dict):
            children = list(value.items())
        elif isinstance(value, list):
            children = list(enumerate(value))
        else:
            return [], [list(prefix) + ["*"]]
    elif isinstance(value, dict):
        form = key_form(head) if loose else ""
        if form:
            children = [(k, v) for k, v in value.items() if k == head or key_form(k) == form]
        else:
            children = [(head, value[head])] if head in value else []
    elif isinstance(value, list) and head.isdigit() and int(head) < len(value):
        children = [(int(head), value[int(head)])]
    else:
        children = []
    if not children and head != "*":  # an empty array / object has no element to check
        return [], [list(prefix) + [head]]
    found, missing = [], []
    for key, child in children:
        f, m = resolve(child, rest, (*prefix, key), loose)
        found += f
        missing += m
    return found, missing


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
# PII detectors, on normalised text: a regex finds candidates, a validator (checksum, length,
# numbering plan) confirms them.
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_ok(digits: str) -> bool:
    """A card number: a network's prefix (IIN) and length, and a valid Luhn digit."""
    n = len(digits)
    if not 13 <= n <= 19 or not luhn_ok(digits):
        return False
    p2, p3, p4, p6 = int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4":  # Visa
        return n in (13, 16, 19)
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:  # Mastercard
        return n == 16
    if p2 in (34, 37):  # American Express
        return n == 15
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65 or 622126 <= p6 <= 622925:  # Discover
        return n >= 16
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):  # Diners Club
        return n >= 14
    if 3528 <= p4 <= 3589 or p2 == 62 or 2200 <= p4 <= 2204:  # JCB, UnionPay, Mir
        return n >= 16
    return p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763)  # Maestro


def _card_like(lens: list[int], loose: bool) -> bool:
    """Digit groups as cards are written: one group; equal groups, the last possibly shorter
    (4-4-4-4, 4-4-4-4-3, 2-2-2-..., 1-1-1-...); Amex / Diners 4-6-5, 4-6-4. ``loose`` (within
    one string) also: the first group shorter too (thousands style, 1-3-3-3-3-3) and two to four
    groups of 4+ digits (4-8-4). Across values only the strict forms count, so that amounts, ids
    and quantities of different lengths never add up to a card."""
    if len(lens) == 1 or lens in ([4, 6, 5], [4, 6, 4]):
        return True
    size = lens[1] if loose and len(lens) > 2 else lens[0]
    if all(n == size for n in lens[1:-1]) and lens[0] <= size and lens[-1] <= size:
        return loose or lens[0] == size
    return loose and len(lens) <= 4 and min(lens) >= 4


def _card_in_groups(groups: list[str], loose: bool) -> bool:
    lens = [len(g) for g in groups]
    for i in range(len(groups)):
        total = 0
        for j in range(i, len(groups)):
            total += lens[j]
            if total > 19:
                break
            window = lens[i : j + 1]
            if total >= 13 and _card_like(window, loose) and card_ok("".join(groups[i : j + 1])):
                return True
    return False


_DIGIT_RUN = re.compile(r"[0-9]+(?:[\W_]{1,3}[0-9]+)*")
_DIGITS = re.compile(r"[0-9]+")


def _find_card(text: str, loose: bool = True) -> bool:
    return any(
        _card_in_groups(_DIGITS.findall(m.group()), loose) for m in _DIGIT_RUN.finditer(text)
    )


IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    iban = iban.upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}", iban):
        return False
    if IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


_IBAN_START = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}")


def _alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _find_iban(text: str) -> bool:
    """A registry country code, check digits, then the country's length of letters and digits
    (up to three separators between any two), ending where the letters and digits end."""
    end = len(text)
    for m in _IBAN_START.finditer(text):
        length = IBAN_LENGTHS.get(m.group()[:2].upper())
        if length is None:
            continue
        chars, i = m.group(), m.end()
        while len(chars) < length:
            j = i
            while j < end and j - i < 3 and not _alnum(text[j]):
                j += 1
            if j >= end or not _alnum(text[j]):
                break
            chars += text[j]
            i = j + 1
        if len(chars) == length and (i == end or not _alnum(text[i])) and iban_ok(chars):
            return True
    return False


_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]{1,64}@(?:[^\W_][\w-]{0,62}\.){1,8}[^\W\d_]{2,24}(?![\w-])"
)
_PHONE_INTL = re.compile(r"(?<![\w+-])\+[0-9]{1,3}(?:[ .\-/_]{0,2}\(?[0-9]{1,4}\)?){2,5}(?![\w-])")
_PHONE_NANP = re.compile(
    r"(?<![\w-])(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}[ .\-/_]{1,2})"
    r"[2-9][0-9]{2}[ .\-/_]{1,2}[0-9]{4}(?![\w-])"
)
_SSN = re.compile(
    r"(?<![0-9])(?<![0-9][ .\-/_])(?!000|666|9[0-9]{2})[0-9]{3}[ .\-/_]{1,3}(?!00)[0-9]{2}"
    r"[ .\-/_]{1,3}(?!0000)[0-9]{4}(?![0-9])(?![ .\-/_][0-9])"
)


def _find_email(text: str) -> bool:
    return _EMAIL.search(text) is not None


def _find_phone(text: str) -> bool:
    if _PHONE_NANP.search(text):
        return True
    return any(8 <= sum(c.isdigit() for c in m.group()) <= 15 for m in _PHONE_INTL.finditer(text))


def _find_ssn(text: str) -> bool:
    return _SSN.search(text) is not None


BUILTIN_PII = {
    "email": _find_email,
    "phone": _find_phone,
    "credit_card": _find_card,
    "iban": _find_iban,
    "us_ssn": _find_ssn,
}
#: detectors run on the strings of one array / object joined with spaces, or with nothing
_SPACED = ("phone", "us_ssn")
_GLUED = ("iban", "email")


# ---------------------------------------------------------------------------------------------
# What is scanned: every key and scalar, alone and joined (see the module docstring).
def _number_forms(value) -> list[str]:
    """A number as written, as printed, and as an integer when it is integral."""
    if isinstance(value, int):
        return [str(value)]
    forms = [getattr(value, "literal", None) or repr(value)]
    if repr(value) not in forms:
        forms.append(repr(value))
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
        forms.append(str(int(value)))
    return forms


def _token(value) -> str | None:
    """The text a scalar contributes where values are joined (None: not a string or number)."""
    if isinstance(value, str):
        return normalize(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    return getattr(value, "literal", None) or repr(value)


class _Scan:
    """The texts of one scope of the payload."""

    def __init__(self, value, base: list) -> None:
        self.singles: list[tuple[str, str, str]] = []  # (where, raw text, normalised text)
        self.values: list[str] = []  # every value token, in document order
        self.keys: list[str] = []  # every key, normalised, in document order
        self.strings: list[tuple[str, list]] = []  # (where, consecutive strings of a container)
        self._walk(value, base)

    def _scalar(self, value, path: list) -> None:
        where = f"at {show_path(path)}"
        if isinstance(value, str):
            self.singles.append((where, value, normalize(value)))
        elif _is_number(value):
            self.singles += [(where, form, form) for form in _number_forms(value)]
        token = _token(value)
        if token is not None:
            self.values.append(token)

    def _runs(self, where: str, items: list) -> None:
        run: list[str] = []
        for item in [*items, None]:
            if isinstance(item, str):
                run.append(normalize(item))
                continue
            if len(run) > 1:
                self.strings.append((where, run))
            run = []

    def _walk(self, value, path: list) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                self.singles.append((f"in a key of {show_path(path)}", key, normalize(key)))
                self.keys.append(normalize(key))
                self._walk(child, [*path, key])
            self._runs(f"across the keys of {show_path(path)}", list(value))
            self._runs(f"across the values of {show_path(path)}", list(value.values()))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                self._walk(child, [*path, index])
            self._runs(f"across the elements of {show_path(path)}", value)
        else:
            self._scalar(value, path)


_ALL_DIGITS = re.compile(r"[\W_]*[0-9]+(?:[\W_]+[0-9]+)*[\W_]*")


def _digit_groups(token: str) -> list[str] | None:
    """The digit groups of a token made of digits and separators only (else None)."""
    return _DIGITS.findall(token) if _ALL_DIGITS.fullmatch(token) else None


def _even_groups(lens: list[int]) -> bool:
    if lens in ([4, 6, 5], [4, 6, 4]):
        return True
    if min(lens) != max(lens):
        return False
    return lens[0] <= 2 or (lens[0] <= 6 and 14 <= sum(lens) <= 16)


def _card_across_values(tokens: list[str]) -> bool:
    """A card spread over consecutive values (or keys): whole tokens of digits only, three or
    more groups in all, of one length: up to 6 digits for the common card lengths 14-16 (4-4-4-4,
    5-5-5, 7-7 is two groups: not counted), up to 2 for any length; or Amex / Diners 4-6-5 /
    4-6-4. Stricter than within one string: ids and amounts sit next to each other."""
    parts = [_digit_groups(t) for t in tokens]
    for i in range(len(parts)):
        groups: list[str] = []
        for part in parts[i:]:
            if part is None:
                break
            groups += part
            lens = [len(g) for g in groups]
            total = sum(lens)
            if total > 19:
                break
            if total >= 13 and len(lens) >= 3 and _even_groups(lens) and card_ok("".join(groups)):
                return True
    return False


def _card_glued(run: list[str]) -> bool:
    """A card split anyhow over consecutive all-digit strings of one array / object: every
    maximal such run, its digits glued together, is checked as one number."""
    digits = ""
    for groups in [*(_digit_groups(t) for t in run), None]:
        if groups is None:
            if 13 <= len(digits) <= 19 and card_ok(digits):
                return True
            digits = ""
        else:
            digits += "".join(groups)
    return False


def pii_hits(value, base: list, detectors: list[tuple[str, object, bool]]) -> list[str]:
    """``"<name> found <where>"`` for every detector that fires somewhere under ``value``.
    ``detectors``: (name, function of a text, built-in?)."""
    scan = _Scan(value, base)
    hits: list[str] = []
    found: set[str] = set()

    def hit(name: str, where: str) -> None:
        found.add(name)
        message = f"{name} found {where}"
        if message not in hits:
            hits.append(message)

    for where, raw, norm in scan.singles:
        for name, detect, builtin in detectors:
            if detect(norm) or (not builtin and raw != norm and detect(raw)):
                hit(name, where)
    scope = show_path(base)
    across = {"credit_card": _card_across_values, "iban": lambda t: _find_iban(" ".join(t))}
    for name, _, builtin in detectors:
        if name in found or not builtin or name not in across:
            continue
        for label, tokens in (("values", scan.values), ("keys", scan.keys)):
            if across[name](tokens):
                hit(name, f"split across the {label} under {scope}")
    for where, run in scan.strings:
        spaced, glued = " ".join(run), "".join(run)
        for name, detect, builtin in detectors:
            if name in found:
                continue
            if not builtin:
                if detect(spaced) or detect(glued):
                    hit(name, f"split {where}")
            elif name == "credit_card":
                if _card_glued(run):
                    hit(name, f"split {where}")
            elif (name in _SPACED and detect(spaced)) or (name in _GLUED and detect(glued)):
                hit(name, f"split {where}")
    return hits


# ---------------------------------------------------------------------------------------------
# Rules: each returns the list of its violations (empty when satisfied); ValueError = bad rule.
def rule_forbidden_fields(rule, payload):
    problems = []
    for parts in _paths(rule):
        found, _ = resolve(payload, parts, loose=True)
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
    found, missing = resolve(payload, parts, loose=True)
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
    detectors = [(name, BUILTIN_PII[name], True) for name in names]
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
        name = str(spec.get("name") or "custom")
        detectors.append((name, lambda t, p=pattern: p.search(t) is not None, False))
    if not detectors:
        raise ValueError("no patterns")
    scopes = [([], payload)]
    if "paths" in rule:
        scopes = [item for parts in _paths(rule) for item in resolve(payload, parts)[0]]
    problems = []
    for base, value in scopes:
        problems += [h for h in pii_hits(value, base, detectors) if h not in problems]
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
