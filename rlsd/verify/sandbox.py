"""Sandboxes run a verifier program on a batch of items: one interface, several backends.

``Sandbox.run_batch(spec, folder, items)`` starts ONE sandbox (a container, or a local
bubblewrap jail over the image's root filesystem) per batch, feeds the items as ASCII JSON lines
on stdin and accepts results by the rules of :mod:`rlsd.verify.protocol`. It returns exactly one
:class:`SandboxResult` per item, in order; a candidate response can never make it raise.
Infrastructure failures (no engine, image missing, bubblewrap broken) raise :class:`SandboxError`.
The backends are :mod:`rlsd.verify.docker_sandbox` and :mod:`rlsd.verify.local_sandbox`;
:func:`rlsd.verify.backends.make_sandbox` picks one.

Failures are charged per item. The backend stops a run whose current item has had no result for
``limits.result_deadline_s()`` (instead of waiting for the batch timeout). When a run stalls, is
killed at the output cap or the batch timeout, or dies, the item being checked (the one whose
start marker has no result; without markers, the first item without a result) is the only one
charged: a stalled item fails at once, an item that killed the verifier is run again alone up to
``retries`` times and then fails; every other item without a result runs again in a fresh
sandbox, uncharged. So one hostile item cannot take its batch down with it, however many there
are.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlsd.verify.protocol import (
    RunOutcome,
    encode_items,
    new_nonce,
    normalise_items,
    parse_output,
)
from rlsd.verify.spec import VerifierSpec


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (not a verdict on any response)."""


class SandboxUnavailable(SandboxError):
    """The requested backend does not exist on this machine, or policy forbids it."""


@dataclass(frozen=True)
class SandboxResult:
    id: str
    passed: bool
    score: float
    detail: str
    backend: str
    duration_s: float
    #: True when the verifier program gave this verdict; False when the sandbox made it up
    #: (no result, malformed output, timeout, output cap).
    accepted: bool = True

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def meets(self, expect: str) -> bool:
        """The verifier itself gave the verdict ``expect`` (``pass`` or ``fail``) declares."""
        return self.accepted and self.passed == (expect == "pass")


class Sandbox(ABC):
    """Runs verifier programs on batches; subclasses implement one run of one batch."""

    backend: str = "?"

    def __init__(self, *, pool_size: int = 2, retries: int = 1) -> None:
        self.pool_size = max(1, int(pool_size))
        self.retries = max(0, int(retries))
        self._prepared: dict[Path, Any] = {}
        self._prepare_lock = threading.Lock()

    # -- subclass hooks -------------------------------------------------------------------
    def _prepare(self, spec: VerifierSpec, folder: Path) -> Any:
        """Make the verifier runnable (build / check the image, run ``prepare``); cached."""
        return None

    @abstractmethod
    def _run_once(
        self,
        spec: VerifierSpec,
        folder: Path,
        prepared: Any,
        data: bytes,
        ids: list[str],
        nonce: str,
    ) -> RunOutcome:
        """One run of the program on ``data`` (the encoded items ``ids``); the backend enforces
        the batch timeout, the output cap and the per-result deadline (``ResultStream``)."""

    # -- public API -----------------------------------------------------------------------
    def prepare(self, spec: VerifierSpec, folder: Path | str, *, refresh: bool = False) -> Any:
        folder = Path(folder).resolve()
        with self._prepare_lock:
            if refresh or folder not in self._prepared:
                self._prepared[folder] = self._prepare(spec, folder)
            return self._prepared[folder]

    def describe(self) -> str:
        return self.backend

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op unless a backend keeps state
        """Release what the sandbox keeps between batches (nothing, unless a backend says so)."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_batch(
        self, spec: VerifierSpec, folder: Path | str, items: Sequence[dict[str, Any]]
    ) -> list[SandboxResult]:
        """One result per item, in order (see the module docstring)."""
        items = normalise_items(list(items))
        if not items:
            return []
        folder = Path(folder).resolve()
        prepared = self.prepare(spec, folder)
        lim = spec.limits
        deadline = lim.result_deadline_s()
        results: dict[str, SandboxResult] = {}
        charges: dict[str, int] = {}
        pending = items
        solo: list[dict] = []
        silent_runs = between_items = 0

        def fail(it: dict, why: str, duration: float = 0.0) -> None:
            results[it["id"]] = SandboxResult(
                it["id"], False, 0.0, why, self.backend, round(duration, 4), accepted=False
            )

        while pending or solo:
            alone = not pending
            batch = pending if pending else [solo.pop(0)]
            data, unencodable = encode_items(batch)
            for it in batch:
                if it["id"] in unencodable:
                    fail(it, f"error: malformed item: cannot be encoded ({unencodable[it['id']]})")
            batch = [it for it in batch if it["id"] not in unencodable]
            if not alone:
                pending = []
            if not batch:
                continue
            ids = [it["id"] for it in batch]
            outcome = self._run_once(spec, folder, prepared, data, ids, new_nonce())
            parsed = outcome.parsed or parse_output(outcome.stdout, outcome.nonce or "", set(ids))
            noise = parsed.ignored_lines + parsed.duplicate_lines
            note = f" [ignored {noise} other stdout line(s)]" if noise else ""
            took = round(outcome.duration_s, 4)
            for it in batch:
                acc = parsed.accepted.get(it["id"])
                if acc is not None:
                    results[it["id"]] = SandboxResult(
                        it["id"], acc.passed, acc.score, acc.detail + note, self.backend, took
                    )
                elif it["id"] in parsed.malformed:
                    why = f"error: malformed output: {parsed.malformed[it['id']]}"
                    fail(it, why + note, took)
            missing = [it for it in batch if it["id"] not in results]
            if not missing:
                continue
            reason = outcome.reason(lim.batch_timeout_s, lim.output_bytes, deadline) + note
            if not outcome.abnormal():  # the program ended normally without answering them
                for it in missing:
                    fail(it, reason, took)
                continue
            culprit = parsed.in_progress
            if culprit is None and not parsed.started:
                # no start markers: the first item without a result was the one being checked,
                # unless the program fails before checking anything (a second silent run says so)
                silent = not parsed.accepted
                silent_runs += silent
                if silent and silent_runs > 1:
                    for it in missing + pending + solo:
                        fail(it, reason, took)
                    pending, solo = [], []
                    continue
                culprit = missing[0]["id"]
            if culprit is None:  # died between two items: nothing to charge, run them again
                # (a run that made progress resets the count: only a program that keeps dying
                # without checking anything more gives up on the items)
                between_items = 1 if parsed.accepted else between_items + 1
                if between_items > self.retries + 1:
                    for it in missing:
                        fail(it, reason, took)
                    continue
                pending = missing + pending
                continue
            item = next(it for it in missing if it["id"] == culprit)
            rest = [it for it in missing if it["id"] != culprit]
            charges[culprit] = charges.get(culprit, 0) + 1
            killed_by_us = outcome.stalled or outcome.output_capped or outcome.timed_out
            if killed_by_us or charges[culprit] > self.retries:
                times = f" ({charges[culprit]} runs)" if charges[culprit] > 1 else ""
                fail(item, reason + times, took)
            else:
                solo.append(item)
            pending = rest + pending
        return [results[it["id"]] for it in items]

    def run_many(
        self,
        spec: VerifierSpec,
        folder: Path | str,
        batches: Sequence[Sequence[dict[str, Any]]],
    ) -> list[list[SandboxResult]]:
        """Run several batches concurrently (``pool_size`` sandboxes at a time)."""
        self.prepare(spec, folder)
        if len(batches) <= 1 or self.pool_size == 1:
            return [self.run_batch(spec, folder, b) for b in batches]
        with ThreadPoolExecutor(max_workers=self.pool_size) as pool:
            return list(pool.map(lambda b: self.run_batch(spec, folder, b), batches))
