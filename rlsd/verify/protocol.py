"""The batch protocol between a sandbox and a verifier program (both backends).

* stdin: one JSON object per line per item, ``{"id": str, "response": str, "reference": ..., ...}``,
  ASCII only (every non-ASCII character, lone surrogates included, is a ``\\u`` escape); then end
  of file. An item that cannot be encoded at all fails alone (:func:`encode_items`).
* stdout: per item, optionally a start marker ``{"start": id, "nonce": str}`` when the program
  begins checking it, then one result
  ``{"id": str, "passed": bool, "score": float in [0, 1], "detail": str, "nonce": str}``.
* environment: ``RLSD_RESULT_NONCE`` (a fresh random value per batch run; the program echoes it in
  every line and must remove it from the environment of every child it starts) and
  ``RLSD_ITEM_TIMEOUT_S`` (the spec's ``limits.item_timeout_s``, for the program to enforce).

The sandbox accepts only lines that parse, carry the nonce, name a known id, and only the first such
line per id. Everything else on stdout is ignored and counted. An item without an accepted result
gets ``passed=False, score=0`` and a reason.

The start markers make failures attributable: when a run dies or stalls, the item that was started
and has no result is the one being checked, so only that item is charged and the others are run
again. Without markers (a program that does not write them) the first item without a result is
assumed to be the one in progress. :class:`ResultStream` reads the output incrementally, so a
backend can stop a run whose current item is past its per-result deadline instead of waiting for
the batch timeout.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

NONCE_ENV = "RLSD_RESULT_NONCE"
ITEM_TIMEOUT_ENV = "RLSD_ITEM_TIMEOUT_S"
#: How much of the program's stderr is kept for error details.
STDERR_TAIL_BYTES = 4096
#: Longest detail kept from a result line.
MAX_DETAIL = 2000


def new_nonce() -> str:
    return secrets.token_hex(16)


def normalise_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every item a string id (its index when it has none); reject duplicate ids."""
    out = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValueError(f"item {i} is not a JSON object (got {type(item).__name__})")
        item_id = clean_text(str(item.get("id", i)))
        if item_id in seen:
            raise ValueError(f"duplicate item id {item_id!r} in one batch")
        seen.add(item_id)
        out.append({**item, "id": item_id})
    return out


def clean_text(text: str) -> str:
    """``text`` without lone surrogates (each becomes U+FFFD), so it can be written as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _encode_one(item: dict[str, Any]) -> bytes:
    def fallback(value: Any) -> str:
        # bytes, sets, dates...: the program sees their text, as JSON-based APIs usually do
        return str(value)

    text = json.dumps(item, ensure_ascii=True, allow_nan=False, default=fallback)
    return text.encode("ascii") + b"\n"


def encode_items(items: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    """The stdin of one run, and ``id -> reason`` for the items that could not be encoded.

    The encoding is pure ASCII whatever the items hold (lone surrogates, control characters and
    non-BMP text become ``\\u`` escapes), so no response can make the batch unencodable; an item
    that still cannot be written (NaN or infinite numbers, cycles, a ``str()`` that raises) is
    left out and fails alone with the reason.
    """
    chunks: list[bytes] = []
    failed: dict[str, str] = {}
    for item in items:
        try:
            chunks.append(_encode_one(item))
        except (ValueError, TypeError, RecursionError, OverflowError) as exc:
            failed[str(item.get("id"))] = f"{type(exc).__name__}: {clean_text(str(exc))[:200]}"
        except Exception as exc:  # noqa: BLE001 - a hostile __str__ may raise anything
            failed[str(item.get("id"))] = f"{type(exc).__name__} while encoding"
    return b"".join(chunks), failed


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
    #: ids in the order their start markers arrived
    started: list[str] = field(default_factory=list)
    ignored_lines: int = 0
    duplicate_lines: int = 0

    @property
    def in_progress(self) -> str | None:
        """The last started item without a result (the one being checked when output ended)."""
        if self.started:
            last = self.started[-1]
            if last not in self.accepted and last not in self.malformed:
                return last
        return None

    def done(self, ident: str) -> bool:
        return ident in self.accepted or ident in self.malformed


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
    return Accepted(passed=passed, score=float(score), detail=clean_text(detail[:MAX_DETAIL]))


class ResultStream:
    """Applies the acceptance rule to a program's stdout as it arrives.

    ``result_timeout_s``: how long the item being checked may go without a result (counted from
    its start marker, else from the previous result or the start of the run) before
    :meth:`stalled` says so.
    """

    def __init__(
        self,
        nonce: str,
        ids: set[str] | list[str],
        *,
        result_timeout_s: float | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.nonce = nonce
        self.ids = set(ids)
        self.parsed = ParsedOutput()
        self.result_timeout_s = result_timeout_s
        self._clock = clock
        self._buf = bytearray()
        self.last_progress = clock()

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        if b"\n" not in chunk:
            return
        *lines, rest = bytes(self._buf).split(b"\n")
        self._buf = bytearray(rest)
        for raw in lines:
            self._line(raw)

    def close(self) -> ParsedOutput:
        """Take a last line without its newline into account; return the parse."""
        if self._buf:
            self._line(bytes(self._buf))
            self._buf = bytearray()
        return self.parsed

    def complete(self) -> bool:
        return all(self.parsed.done(i) for i in self.ids)

    def stalled(self) -> bool:
        if self.result_timeout_s is None:
            return False
        return self._clock() - self.last_progress > self.result_timeout_s

    def _line(self, raw: bytes) -> None:
        out = self.parsed
        if not raw.strip():
            return
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            out.ignored_lines += 1
            return
        if not isinstance(obj, dict) or obj.get("nonce") != self.nonce:
            out.ignored_lines += 1
            return
        if "start" in obj and "id" not in obj:
            ident = obj.get("start")
            if isinstance(ident, str) and ident in self.ids and not out.done(ident):
                if ident not in out.started:
                    out.started.append(ident)
                self.last_progress = self._clock()
            else:
                out.ignored_lines += 1
            return
        item_id = obj.get("id")
        if not isinstance(item_id, str) or item_id not in self.ids:
            out.ignored_lines += 1
            return
        if out.done(item_id):
            out.duplicate_lines += 1
            return
        checked = _check_result(obj)
        if isinstance(checked, str):
            out.malformed[item_id] = checked
        else:
            out.accepted[item_id] = checked
        self.last_progress = self._clock()


def parse_output(stdout: bytes, nonce: str, ids: set[str]) -> ParsedOutput:
    """Apply the acceptance rule to a program's whole stdout."""
    stream = ResultStream(nonce, ids)
    stream.feed(stdout)
    return stream.close()


@dataclass
class RunOutcome:
    """How one program run (one container / one local sandbox) ended."""

    stdout: bytes = b""
    stderr_tail: bytes = b""
    exit_code: int | None = None
    timed_out: bool = False
    output_capped: bool = False
    #: the item being checked went past its per-result deadline; the run was stopped
    stalled: bool = False
    duration_s: float = 0.0
    start_error: str | None = None
    #: the nonce this run was given, when the backend chose it (pre-started containers)
    nonce: str | None = None
    #: the backend's incremental parse of ``stdout`` (None: parse ``stdout`` again)
    parsed: ParsedOutput | None = None

    def abnormal(self) -> bool:
        return bool(
            self.timed_out
            or self.output_capped
            or self.stalled
            or self.start_error
            or self.exit_code not in (0,)
        )

    def reason(
        self, limits_batch_timeout_s: float, output_bytes: int, result_timeout_s: float = 0.0
    ) -> str:
        """Why an item got no result in this run."""
        if self.start_error:
            return f"error: verifier did not start: {self.start_error}"
        if self.stalled:
            return f"timeout: no result within {result_timeout_s:g} s (verifier stopped)"
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
