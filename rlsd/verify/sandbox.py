"""Sandboxes run a verifier program on a batch of items: one interface, several backends.

``Sandbox.run_batch(spec, folder, items)`` starts ONE sandbox (a container, or a local
bubblewrap / unshare jail) per batch, feeds the items as JSON lines on stdin and accepts results by
the rules of :mod:`rlsd.verify.protocol`. It returns exactly one :class:`SandboxResult` per item,
in order; a candidate response can never make it raise. Infrastructure failures (no engine, image
missing, bubblewrap broken) raise :class:`SandboxError`.

When a run ends abnormally (the program crashed or was killed at the batch timeout or the output
cap) while items are still without results, the first of them (the one the program was most likely
working on) gets the verdict for that run and the rest are run again in a fresh sandbox, up to
``retries`` times, so that one hostile item cannot take the rest of its batch down with it.
"""

from __future__ import annotations

import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rlsd.verify.protocol import RunOutcome, new_nonce, normalise_items, parse_output
from rlsd.verify.spec import VerifierSpec

Backend = Literal["docker", "local-bwrap", "local-unshare"]
REQUIRE_DOCKER_ENV = "RLSD_REQUIRE_DOCKER"


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


class Sandbox(ABC):
    """Runs verifier programs on batches; subclasses implement one run of one batch."""

    backend: str = "?"

    def __init__(self, *, pool_size: int = 2, retries: int = 2) -> None:
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
        self, spec: VerifierSpec, folder: Path, prepared: Any, items: list[dict], nonce: str
    ) -> RunOutcome: ...

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
        results: dict[str, SandboxResult] = {}
        pending = items
        attempt = 0
        while pending:
            nonce = new_nonce()
            outcome = self._run_once(spec, folder, prepared, pending, nonce)
            nonce = outcome.nonce or nonce
            parsed = parse_output(outcome.stdout, nonce, {it["id"] for it in pending})
            noise = parsed.ignored_lines + parsed.duplicate_lines
            note = f" [ignored {noise} other stdout line(s)]" if noise else ""
            for it in pending:
                acc = parsed.accepted.get(it["id"])
                if acc is not None:
                    results[it["id"]] = SandboxResult(
                        it["id"],
                        acc.passed,
                        acc.score,
                        acc.detail + note,
                        self.backend,
                        round(outcome.duration_s, 4),
                    )
            missing = [it for it in pending if it["id"] not in parsed.accepted]
            if not missing:
                break
            reason = outcome.reason(lim.batch_timeout_s, lim.output_bytes)

            def fail(it: dict, why: str, parsed=parsed, outcome=outcome, note=note) -> None:
                if it["id"] in parsed.malformed:
                    why = f"error: malformed output: {parsed.malformed[it['id']]}"
                results[it["id"]] = SandboxResult(
                    it["id"],
                    False,
                    0.0,
                    why + note,
                    self.backend,
                    round(outcome.duration_s, 4),
                    accepted=False,
                )

            if outcome.abnormal() and attempt < self.retries and len(missing) > 1:
                fail(missing[0], reason)
                pending = missing[1:]
                attempt += 1
                continue
            for it in missing:
                fail(it, reason)
            break
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


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def require_docker_policy() -> bool:
    """The policy setting from the environment: ``RLSD_REQUIRE_DOCKER=1`` forbids the fallback."""
    return _truthy(os.environ.get(REQUIRE_DOCKER_ENV))


def make_sandbox(backend: str = "auto", require_docker: bool = False, **options: Any) -> Sandbox:
    """``auto``: Docker when an engine answers, else the local sandbox (unless Docker is required).

    ``require_docker`` (or ``RLSD_REQUIRE_DOCKER=1``) is the policy that forbids the local fallback:
    asking for ``local`` or reaching it from ``auto`` then raises :class:`SandboxUnavailable`.
    ``options`` go to the backend's constructor (``prestart``, ``prestart_ttl_s`` and ``pull`` only
    to Docker's).
    """
    from rlsd.verify.docker_sandbox import DockerSandbox, docker_available
    from rlsd.verify.local_sandbox import LocalSandbox

    require_docker = require_docker or require_docker_policy()
    docker_only = {
        k: options.pop(k) for k in ("prestart", "prestart_ttl_s", "pull") if k in options
    }
    if backend == "docker":
        return DockerSandbox(**options, **docker_only)
    if backend == "local":
        if require_docker:
            raise SandboxUnavailable(
                "the local sandbox was requested but the policy requires Docker (require_docker / "
                f"{REQUIRE_DOCKER_ENV}=1)"
            )
        return LocalSandbox(**options)
    if backend != "auto":
        raise ValueError(f"unknown sandbox backend {backend!r}: use docker, local or auto")
    reason = docker_available()
    if reason is None:
        return DockerSandbox(**options, **docker_only)
    if require_docker:
        raise SandboxUnavailable(
            f"no Docker engine answers ({reason}) and the policy requires Docker (require_docker / "
            f"{REQUIRE_DOCKER_ENV}=1), so the local fallback is forbidden"
        )
    return LocalSandbox(**options)


def elapsed(t0: float) -> float:
    return time.monotonic() - t0
