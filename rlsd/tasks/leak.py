"""The one privileged-leak check: does student-visible text contain the privileged text?

The task record refuses a leaking task, ingestion quarantines a leaking row (and looks for
redacted remnants on top, :func:`rlsd.context.policy.leak_findings`), and the trainer refuses
to tokenise a leaking student prompt -- all three with this normalisation and this threshold,
so a task the record accepts is never refused later for a different reason, nor the reverse.
"""

from __future__ import annotations

import re

#: Privileged texts shorter than this (after normalisation) are not checked for leaks: a
#: two-character answer such as "10" legitimately appears in many prompts.
MIN_LEAK_CHECK_CHARS = 8

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Collapse whitespace runs and casefold, so a leak cannot hide behind re-wrapping."""
    return _WS.sub(" ", text).strip().casefold()


def contains(student_text: str, privileged: str) -> bool:
    """Whether ``student_text`` holds ``privileged`` (both normalised; short texts never count)."""
    hint = normalise(privileged)
    return len(hint) >= MIN_LEAK_CHECK_CHARS and hint in normalise(student_text)
