"""The batch protocol between a sandbox and a verifier program (both backends).

* stdin: one JSON object per line per item, ``{"id": str, "response": str, "reference": ..., ...}``;
  then end of file.
* stdout: one JSON object per line per item,
  ``{"id": str, "passed": bool, "score": float in [0, 1], "detail": str, "nonce": str}``.
* environment: ``RLSD_RESULT_NONCE`` (a fresh random value per batch run; the program echoes it in
  every result line and must remove it from the environment of every child it starts) and
  ``RLSD_ITEM_TIMEOUT_S`` (the spec's ``limits.item_timeout_s``, for the program to enforce).

The sandbox accepts only lines that parse, carry the nonce, name a known id, and only the first such
line per id. Everything else on stdout is ignored and counted. An item without an accepted result
gets ``passed=False, score=0`` and a reason.

Verifier programs that run candidate code as the same uid should also make themselves non-dumpable
(``prctl(PR_SET_DUMPABLE, 0)``) so that a candidate cannot read the nonce from
``/proc/<verifier>/environ`` or write into the verifier's stdout through ``/proc/<verifier>/fd/1``.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field
from typing import Any

NONCE_ENV = "RLSD_RESULT_NONCE"
ITEM_TIMEOUT_ENV = "RLSD_ITEM_TIMEOUT_S"
#: How much of the program's stderr is kept for error details.
STDERR_TAIL_BYTES = 4096


def new_nonce() -> str:
    return secrets.token_hex(16)


def normalise_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every item a string id (its index when it has none); reject duplicate ids."""
    out = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} is not a JSON object (got {type(item).__name__})")
        item_id = str(item.get("id", i))
        if item_id in seen:
            raise ValueError(f"duplicate item id {item_id!r} in one batch")
        seen.add(item_id)
        out.append({**item, "id": item_id})
    return out


def encode_items(items: list[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps(item, ensure_ascii=False, default=str).encode() + b"\n" for item in items
    )


@dataclass
class Accepted:
    passed: bool
    score: float
    detail: str


@dataclass
class ParsedOutput:
    accepted: dict[str, Accepted] = field(default_factory=dict)
    #: id -> why the first nonce-carrying line for this id was unusable
    malformed: dict[str, str] = field(default_factory=dict)
    ignored_lines: int = 0
    duplicate_lines: int = 0


def _check_result(obj: dict[str, Any]) -> Accepted | str:
    passed = obj.get("passed")
    if not isinstance(passed, bool):
        return f"'passed' must be true or false (got {str(passed)[:40]!r})"
    score = obj.get("score", 1.0 if passed else 0.0)
    if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
        return f"'score' must be a number in [0, 1] (got {str(score)[:40]!r})"
    if not 0.0 <= float(score) <= 1.0:
        return f"'score' {score} is outside [0, 1]"
    detail = obj.get("detail", "")
    if not isinstance(detail, str):
        detail = json.dumps(detail, default=str)
    return Accepted(passed=passed, score=float(score), detail=detail[:2000])


def parse_output(stdout: bytes, nonce: str, ids: set[str]) -> ParsedOutput:
    """Apply the acceptance rule to a program's whole stdout."""
    out = ParsedOutput()
    for raw in stdout.split(b"\n"):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            out.ignored_lines += 1
            continue
        if not isinstance(obj, dict) or obj.get("nonce") != nonce:
            out.ignored_lines += 1
            continue
        item_id = obj.get("id")
        if not isinstance(item_id, str) or item_id not in ids:
            out.ignored_lines += 1
            continue
        if item_id in out.accepted or item_id in out.malformed:
            out.duplicate_lines += 1
            continue
        checked = _check_result(obj)
        if isinstance(checked, str):
            out.malformed[item_id] = checked
        else:
            out.accepted[item_id] = checked
    return out


@dataclass
class RunOutcome:
    """How one program run (one container / one local sandbox) ended."""

    stdout: bytes = b""
    stderr_tail: bytes = b""
    exit_code: int | None = None
    timed_out: bool = False
    output_capped: bool = False
    duration_s: float = 0.0
    start_error: str | None = None
    #: the nonce this run was given, when the backend chose it (pre-started containers)
    nonce: str | None = None

    def abnormal(self) -> bool:
        return bool(
            self.timed_out or self.output_capped or self.start_error or self.exit_code not in (0,)
        )

    def reason(self, limits_batch_timeout_s: float, output_bytes: int) -> str:
        """Why an item got no result in this run."""
        if self.start_error:
            return f"error: verifier did not start: {self.start_error}"
        if self.timed_out:
            return f"timeout: batch exceeded {limits_batch_timeout_s:g} s"
        if self.output_capped:
            return f"error: output exceeded {output_bytes} bytes (verifier killed)"
        tail = stderr_summary(self.stderr_tail)
        code = self.exit_code
        if code == 0:
            how = "verifier exited normally"
        elif code is not None and code < 0:
            how = f"verifier killed by signal {-code}"
        elif code is not None and code > 128:
            how = f"verifier exited with code {code} (signal {code - 128}?)"
        else:
            how = f"verifier exited with code {code}"
        return f"error: no result ({how}{': ' + tail if tail else ''})"


def stderr_summary(tail: bytes, limit: int = 400) -> str:
    text = tail.decode("utf-8", "replace").strip()
    if not text:
        return ""
    text = " | ".join(line.strip() for line in text.splitlines()[-6:] if line.strip())
    return text if len(text) <= limit else "..." + text[-limit:]
