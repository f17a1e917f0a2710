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
  the leak check looks for it in the student prompt.

Detection favours precision over recall where the two collide with the domains the product
trains on: arithmetic traces are full of digit runs, so card numbers must pass the Luhn check,
IBANs the mod-97 check, and phone numbers need an international prefix, an area code in
parentheses or the North-American 3-3-4 grouping.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Callable
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


def _iban_ok(match: str) -> bool:
    s = match.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _phone_ok(match: str) -> bool:
    return 9 <= sum(c.isdigit() for c in match) <= 15


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
    "card_number": (r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])", _luhn_ok),
    "iban": (r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])", _iban_ok),
    "national_id": (
        # US SSN (not the never-issued 000/666/9xx areas) and UK National Insurance numbers
        r"(?<![\w-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-])"
        r"|(?<![A-Za-z0-9])[A-CEGHJ-PR-TW-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])",
        None,
    ),
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
        self._detectors: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = []
        # most specific first: an IBAN's digit run would otherwise pass as a card number
        for name in sorted(settings.builtin, key=_PRECEDENCE.index):
            pattern, check = _BUILTIN_PATTERNS[name]
            self._detectors.append((name, re.compile(pattern), check))
        for c in settings.custom:
            flags = re.IGNORECASE if c.ignore_case else 0
            self._detectors.append((c.name, re.compile(c.pattern, flags), None))

    @property
    def kinds(self) -> list[str]:
        return [name for name, _, _ in self._detectors]

    def find(self, text: str) -> list[PiiMatch]:
        """Non-overlapping matches, earlier detectors first where two overlap."""
        found: list[PiiMatch] = []
        taken: list[tuple[int, int]] = []
        for name, pattern, check in self._detectors:
            for m in pattern.finditer(text):
                if check is not None and not check(m.group(0)):
                    continue
                if any(m.start() < e and s < m.end() for s, e in taken):
                    continue
                found.append(PiiMatch(name, m.start(), m.end()))
                taken.append((m.start(), m.end()))
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
    student = leak.normalise(student_text)
    reasons = []
    if leak.contains(student_text, privileged_raw):
        reasons.append("contains_privileged")
    if leak.normalise(privileged_redacted) != leak.normalise(privileged_raw) and leak.contains(
        student_text, privileged_redacted
    ):
        reasons.append("contains_redacted_privileged")
    if not reasons:
        splitter = re.compile(f"{redactor.placeholder_regex().pattern}|{_PIECE_BREAK}")
        pieces = [p for p in (leak.normalise(x) for x in splitter.split(privileged_redacted)) if p]
        total = sum(len(p) for p in pieces)
        covered = sum(len(p) for p in pieces if len(p) >= leakage.min_piece_chars and p in student)
        if total and covered / total >= leakage.max_covered_fraction:
            reasons.append("contains_redacted_remnant")
    return reasons


def pii_kinds(text: str, redactor: Redactor) -> list[str]:
    return sorted({m.kind for m in redactor.find(text)})


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
