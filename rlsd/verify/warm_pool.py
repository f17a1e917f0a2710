"""Programs started ahead of the batches that will use them: each serves exactly one batch.

A sandbox pays for starting its jail (a container, a bubblewrap tree) and the verifier's
interpreter on every batch. Starting the next one while the current batch is checked (and while
the trainer generates) takes that cost off the batch's latency without giving up a fresh sandbox
per batch. Both backends use this pool; what a "started program" is stays theirs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar


class Startable(Protocol):
    created: float
    start_error: str | None


T = TypeVar("T", bound=Startable)


class WarmPool(Generic[T]):
    """``launch(*args)`` starts one program for ``key``; ``discard(program)`` ends an unused
    one. ``size`` programs per key are kept started; those older than ``ttl_s`` are discarded
    instead of used (their limits and nonce are fresh, their memory state is not)."""

    def __init__(
        self,
        launch: Callable[..., T],
        discard: Callable[[T], None],
        *,
        size: int = 1,
        ttl_s: float = 300.0,
        name: str = "rlsd-warm",
    ) -> None:
        self.launch = launch
        self.discard = discard
        self.size = max(0, int(size))
        self.ttl_s = ttl_s
        self._warm: dict[Hashable, list[T]] = {}
        self._starting: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix=name)

    def take(self, key: Hashable, *args: Any) -> T:
        """A program started ahead for ``key`` when one is ready, else a new one; either way
        the pool starts replacements in the background."""
        found = None
        with self._lock:
            queue = self._warm.setdefault(key, [])
            while queue:
                cand = queue.pop(0)
                if time.monotonic() - cand.created < self.ttl_s:
                    found = cand
                    break
                self._later(self.discard, cand)
            if self.size and not self._closed:
                missing = self.size - len(queue) - self._starting.get(key, 0)
                for _ in range(max(0, missing)):
                    self._starting[key] = self._starting.get(key, 0) + 1
                    self._background.submit(self._refill, key, args)
        return found if found is not None else self.launch(*args)

    def later(self, program: T) -> None:
        """Discard ``program`` in the background (its batch is done)."""
        with self._lock:
            if self._later(self.discard, program):
                return
        self.discard(program)

    def _later(self, fn: Callable[[T], None], program: T) -> bool:
        if self._closed:
            return False
        self._background.submit(fn, program)
        return True

    def _refill(self, key: Hashable, args: tuple) -> None:
        try:
            program = self.launch(*args)
        except Exception:  # noqa: BLE001 - the batch that needs one will launch (and report)
            program = None
        with self._lock:
            self._starting[key] -= 1
            if program is not None and not self._closed and not program.start_error:
                self._warm.setdefault(key, []).append(program)
                return
        if program is not None:
            self.discard(program)

    def close(self) -> None:
        """Discard the idle programs and wait for the background work."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            idle = [p for q in self._warm.values() for p in q]
            self._warm.clear()
        self._background.shutdown(wait=True)
        for program in idle:
            self.discard(program)
