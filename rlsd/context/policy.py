"""The privileged-context data policy: which sources may feed the teacher, and what it may see.

``policies/privileged_context.yaml`` declares

* ``allowed_sources`` -- glob patterns of source names allowed to feed privileged context;
  ingesting any other source is refused;
* ``redaction`` -- PII patterns (built-in: e-mail addresses, phone numbers, card numbers, IBANs,
  national ids; plus custom regexes) replaced in privileged text before it reaches the teacher;
* ``store_privileged_text`` -- whether privileged text may be written into artifacts (MLflow,
  reports) at all; the default is no: artifacts carry digests and counts only;
* ``student_pii`` -- what to do with a row whose student-visible text holds PII (quarantine);
* ``leakage`` -- when the student prompt holds a redacted remnant of the privileged text (most
  of its pieces, split at placeholders and clause ends): the thresholds of that leak check.

Detection favours precision over recall where the two collide with the domains the product
trains on: arithmetic traces are full of digit runs, so card numbers must pass the Luhn check,
IBANs the mod-97 check, and phone numbers need an international prefix, an area code in
parentheses or the North-American 3-3-4 grouping. Card numbers may be grouped with spaces, dashes
or dots (dotted only in groups, so a decimal such as 3.14159265358979 is not a card); IBANs may be
upper, lower or mixed case, unspaced or in the printed groups of four.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from rlsd.configs.loading import load_yaml_model
from rlsd.context.config import SourceConfigError
from rlsd.tasks import leak

BuiltinPii = Literal["email", "phone", "card_number", "iban", "national_id"]
BUILTIN_PII: tuple[str, ...] = ("email", "phone", "card_number", "iban", "national_id")

#: Default policy file, relative to the working directory (else the source checkout's).
DEFAULT_POLICY_PATH = Path("policies/privileged_context.yaml")


def default_policy_path() -> Path:
    """``policies/privileged_context.yaml`` in the working directory, else in the checkout."""
    from rlsd.paths import policies_dir

    return policies_dir() / DEFAULT_POLICY_PATH.name


def _luhn_ok(match: str) -> bool:
    digits = [int(c) for c in match if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return total % 10 == 0


def _card_ok(match: str) -> bool:
    if "." in match:
        # dots also write decimals and thousands (3.14159265358979, 1.234.567.890.123): dotted
        # card numbers must come in groups, the first of four digits, none under three
        groups = re.split(r"[ .-]", match)
        if len(groups) < 3 or len(groups[0]) != 4 or min(map(len, groups)) < 3:
            return False
    return _luhn_ok(match)


#: Letters as IBAN check digits count them: A = 10 ... Z = 35.
_IBAN_DIGITS = {ord(c): str(ord(c) - ord("A") + 10) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"}


def _iban_ok(match: str) -> bool:
    s = match.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s.isascii() or not s.isalnum():
        return False
    return int((s[4:] + s[:4]).translate(_IBAN_DIGITS)) % 97 == 1


#: Where an IBAN may start: country code and check digits at the start of a word, any case.
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}[0-9]{2}")
_IBAN_RUN = re.compile(r"[A-Za-z0-9]{0,31}")
# at most 34 characters: seven more groups of four and a short one (bounded, so a text made of
# groups of four cannot make the search quadratic)
_IBAN_GROUPS = re.compile(r"(?: [A-Za-z0-9]{4}(?![A-Za-z0-9])){0,7}")
_IBAN_LAST = re.compile(r" [A-Za-z0-9]{1,3}(?![A-Za-z0-9])")


def _iban_spans(text: str) -> Iterator[tuple[int, int]]:
    """IBANs unspaced or in printed groups of four (the last group shorter), mod-97 valid.

    In the grouped form the IBAN may end at any group, and the words after it can look like
    groups ("... 1332 then"): the longest valid one is taken. A regex with a check cannot do
    that, as it never backtracks into a shorter match once the check refuses the longest.
    """
    taken_to = 0
    for head in _IBAN_HEAD.finditer(text):
        start, pos = head.start(), head.end()
        if start < taken_to:
            continue
        run = _IBAN_RUN.match(text, pos).end()
        if run > pos:  # unspaced: the whole word or nothing
            ends = [run] if run == len(text) or not _is_alnum(text[run]) else []
        else:
            groups = _IBAN_GROUPS.match(text, pos).end()
            ends = list(range(pos + 15, groups + 1, 5))  # 16 characters or more
            last = _IBAN_LAST.match(text, groups)
            if last is not None:
                ends.append(last.end())
        for e in reversed(ends):
            if _iban_ok(text[start:e]):
                yield start, e
                taken_to = e
                break


def _is_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _phone_ok(match: str) -> bool:
    return 9 <= sum(c.isdigit() for c in match) <= 15


#: A detector yields the (start, end) spans of its matches, in order and not overlapping.
Finder = Callable[[str], Iterator[tuple[int, int]]]


def _regex_finder(
    pattern: str, check: Callable[[str], bool] | None = None, flags: int = 0
) -> Finder:
    compiled = re.compile(pattern, flags)

    def find(text: str) -> Iterator[tuple[int, int]]:
        for m in compiled.finditer(text):
            # an empty match has nothing to redact (a custom pattern may match empty mid-text)
            if m.end() > m.start() and (check is None or check(m.group(0))):
                yield m.start(), m.end()

    return find


_BUILTIN_PATTERNS: dict[str, tuple[str, Callable[[str], bool] | None]] = {
    "email": (
        r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
        None,
    ),
    "phone": (
        r"(?<![\w+.=-])(?:"
        r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]\d{2,5}){1,4}"  # +44 20 7946 0958
        r"|\(\d{2,5}\)[ .]?\d{3,4}[ .-]\d{3,5}"  # (555) 555-0123
        r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-555-0123
        r")(?![\w=]|[.-]\d)",
        _phone_ok,
    ),
    # not inside a decimal either side: "2.4111111111111111" and "4111111111111111.5"
    "card_number": (r"(?<![\w-])(?<!\d\.)\d(?:[ .-]?\d){12,18}(?![\w-]|\.\d)", _card_ok),
    "national_id": (
        # US SSN (not the never-issued 000/666/9xx areas) and UK National Insurance numbers
        r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"
        r"|(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])",
        None,
    ),
}

_BUILTIN_FINDERS: dict[str, Finder] = {
    **{name: _regex_finder(pattern, check) for name, (pattern, check) in _BUILTIN_PATTERNS.items()},
    "iban": _iban_spans,
}


_PRECEDENCE = ["email", "iban", "card_number", "national_id", "phone"]


class CustomPattern(BaseModel):
    """A site-specific PII pattern, e.g. employee ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Label used in placeholders.")
    pattern: str = Field(min_length=1, description="Python regular expression.")
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"pattern does not compile: {exc}") from exc
        if compiled.match(""):
            raise ValueError("pattern matches the empty string")
        return v


class RedactionSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    builtin: list[BuiltinPii] = Field(
        default_factory=lambda: list(BUILTIN_PII), description="Built-in PII detectors to apply."
    )
    custom: list[CustomPattern] = Field(default_factory=list)
    replacement: str = Field(
        "[REDACTED:{name}]", description="Placeholder; '{name}' is the detector's name."
    )

    @field_validator("custom")
    @classmethod
    def _unique(cls, v: list[CustomPattern]) -> list[CustomPattern]:
        names = [c.name for c in v]
        clash = sorted({n for n in names if names.count(n) > 1 or n in BUILTIN_PII})
        if clash:
            raise ValueError(f"custom pattern names {clash} repeat or shadow a built-in")
        return v


class LeakageSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_piece_chars: int = Field(
        12,
        ge=4,
        description="Pieces of redacted privileged text (split at placeholders and clause ends) "
        "shorter than this, after normalisation, are too generic to count as a leak.",
    )
    max_covered_fraction: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="A student prompt that contains pieces making up at least this share of the "
        "redacted privileged text holds a redacted remnant of it, and is quarantined.",
    )


class PrivilegedContextPolicy(BaseModel):
    """``policies/privileged_context.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    allowed_sources: list[str] = Field(
        min_length=1, description="Glob patterns of source names that may feed privileged context."
    )
    redaction: RedactionSettings = Field(default_factory=RedactionSettings)
    store_privileged_text: bool = Field(
        False,
        description="May privileged text be written into artifacts (MLflow, reports)? "
        "No: artifacts carry digests and counts only.",
    )
    student_pii: Literal["quarantine", "allow"] = Field(
        "quarantine", description="A row whose student-visible text holds PII is quarantined."
    )
    leakage: LeakageSettings = Field(default_factory=LeakageSettings)

    def allows(self, source: str) -> bool:
        return any(fnmatch.fnmatchcase(source, pat) for pat in self.allowed_sources)

    def digest(self) -> str:
        canon = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()


class SourceNotAllowedError(PermissionError):
    """A source is not allowed to feed privileged context by the data policy."""


def load_privileged_policy(path: Path | str = DEFAULT_POLICY_PATH) -> PrivilegedContextPolicy:
    """Load and validate the policy; errors name the file, the field and the value at fault."""
    return load_yaml_model(
        path,
        PrivilegedContextPolicy,
        what="data policy",
        error=lambda where, detail: SourceConfigError(f"{where}: {detail}"),
    )


@dataclass(frozen=True)
class PiiMatch:
    kind: str
    start: int
    end: int


class Redactor:
    """Finds and replaces the PII a policy names."""

    def __init__(self, settings: RedactionSettings | None = None) -> None:
        settings = settings or RedactionSettings()
        self.replacement = settings.replacement
        self._detectors: list[tuple[str, Finder]] = []
        # most specific first: an IBAN's digit run would otherwise pass as a card number
        for name in sorted(settings.builtin, key=_PRECEDENCE.index):
            self._detectors.append((name, _BUILTIN_FINDERS[name]))
        for c in settings.custom:
            flags = re.IGNORECASE if c.ignore_case else 0
            self._detectors.append((c.name, _regex_finder(c.pattern, flags=flags)))

    @property
    def kinds(self) -> list[str]:
        return [name for name, _ in self._detectors]

    def find(self, text: str) -> list[PiiMatch]:
        """Non-overlapping matches, earlier detectors first where two overlap."""
        found: list[PiiMatch] = []
        # the spans taken so far, sorted and disjoint: an overlap test is two bisections, not a
        # scan of every earlier match (a row full of PII would make that quadratic)
        starts: list[int] = []
        ends: list[int] = []
        for name, finder in self._detectors:
            # one detector's own matches never overlap: test them against earlier detectors
            # only, and merge them in once the detector is done
            new: list[tuple[int, int]] = []
            for s, e in finder(text):
                i = bisect.bisect_left(starts, e)  # spans starting before this one ends
                if i and ends[i - 1] > s:
                    continue
                new.append((s, e))
                found.append(PiiMatch(name, s, e))
            if new:
                spans = sorted([*zip(starts, ends, strict=True), *new])
                starts, ends = [s for s, _ in spans], [e for _, e in spans]
        return sorted(found, key=lambda p: p.start)

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        """The text with each match replaced by the placeholder, and counts per kind."""
        out, counts, pos = [], {}, 0
        for m in self.find(text):
            out.append(text[pos : m.start])
            out.append(self.replacement.replace("{name}", m.kind))
            counts[m.kind] = counts.get(m.kind, 0) + 1
            pos = m.end
        out.append(text[pos:])
        return "".join(out), counts

    def placeholder_regex(self) -> re.Pattern[str]:
        """Matches any placeholder this redactor writes (to split redacted text into pieces)."""
        parts = [re.escape(self.replacement.replace("{name}", k)) for k in self.kinds]
        return re.compile("|".join(parts) if parts else r"(?!x)x")


_PIECE_BREAK = r"(?<=[.;:!?,])\s+|\n+"


def leak_findings(
    student_text: str,
    privileged_raw: str,
    privileged_redacted: str,
    redactor: Redactor,
    leakage: LeakageSettings | None = None,
) -> list[str]:
    """Why the student-visible text leaks the privileged text; empty when it does not.

    Three checks: the raw privileged text; the redacted privileged text; and a *redacted
    remnant* -- the student prompt holds pieces (split at placeholders and clause ends) that
    make up at least ``max_covered_fraction`` of the redacted text. A single restated sentence
    (a worked solution quoting the question) is not a remnant; most of the solution is.
    """
    leakage = leakage or LeakageSettings()
    # each text normalised once; the checks are those of :func:`rlsd.tasks.leak.contains`, so
    # the record, ingestion and the trainer agree on what a leak of the privileged text is
    student = leak.normalise(student_text)
    raw = leak.normalise(privileged_raw)
    redacted = leak.normalise(privileged_redacted)
    reasons = []
    if leak.holds(student, raw):
        reasons.append("contains_privileged")
    if redacted != raw and leak.holds(student, redacted):
        reasons.append("contains_redacted_privileged")
    if not reasons and _holds_remnant(student, privileged_redacted, redactor, leakage):
        reasons.append("contains_redacted_remnant")
    return reasons


def _holds_remnant(
    student: str, privileged_redacted: str, redactor: Redactor, leakage: LeakageSettings
) -> bool:
    """Do the pieces of the redacted text found in the (normalised) student text make up
    ``max_covered_fraction`` of it? :func:`rlsd.tasks.leak.occurring` finds every piece in one
    go, linear in the sizes, where a substring search per piece was quadratic."""
    splitter = re.compile(f"{redactor.placeholder_regex().pattern}|{_PIECE_BREAK}")
    pieces = [p for p in (leak.normalise(x) for x in splitter.split(privileged_redacted)) if p]
    total = sum(len(p) for p in pieces)
    if not total:
        return False
    candidates = [p for p in pieces if len(p) >= leakage.min_piece_chars]
    if sum(len(p) for p in candidates) / total < leakage.max_covered_fraction:
        return False  # not even every candidate piece found would be enough: skip the search
    found = leak.occurring(student, candidates)
    covered = sum(len(p) for p in candidates if p in found)
    return covered / total >= leakage.max_covered_fraction


def pii_kinds(text: str, redactor: Redactor) -> list[str]:
    """The kinds of PII ``redactor`` finds in ``text``, sorted."""
    return sorted({m.kind for m in redactor.find(text)})


def _field_texts(value: object) -> Iterator[str]:
    """The strings inside a column value: itself, or the keys and values of a mapping and the
    items of a list, however nested (JSON metadata); numbers as written (a card as an int)."""
    stack, seen = [value], set()
    while stack:
        v = stack.pop()
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, str):
            yield v
        elif isinstance(v, bytes | bytearray):
            yield bytes(v).decode("utf-8", errors="replace")
        elif isinstance(v, Mapping | list | tuple | set | frozenset):
            if id(v) in seen:  # a self-referencing container: scanned once
                continue
            seen.add(id(v))
            items = [x for kv in v.items() for x in kv] if isinstance(v, Mapping) else list(v)
            stack.extend(reversed(items))
        else:
            yield str(v)


def pii_in_fields(fields: Mapping[str, object], redactor: Redactor) -> dict[str, list[str]]:
    """Column -> the PII kinds ``redactor`` finds in its value (sorted), for the columns that
    hold any: ids, metadata and provenance carry PII past redaction as easily as text does."""
    out: dict[str, list[str]] = {}
    for column, value in fields.items():
        kinds = {kind for text in _field_texts(value) for kind in pii_kinds(text, redactor)}
        if kinds:
            out[column] = sorted(kinds)
    return out


def check_sources_allowed(
    policy: PrivilegedContextPolicy, names: list[str], policy_path: Path | str | None = None
) -> None:
    refused = [n for n in names if not policy.allows(n)]
    if refused:
        where = f" by {policy_path}" if policy_path else ""
        raise SourceNotAllowedError(
            f"source(s) {refused} may not feed privileged context{where}; allowed_sources: "
            f"{policy.allowed_sources}"
        )


def describe(policy: PrivilegedContextPolicy) -> dict[str, Any]:
    """The policy as recorded in manifests: its settings and digest (no data)."""
    return {"digest": policy.digest(), **policy.model_dump(mode="json")}
