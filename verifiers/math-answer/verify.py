#!/usr/bin/env python3
"""math-answer: the final numeric answer of a response equals the gold answer.

The extraction rules and the verdict are NOT implemented here: ``answer_extraction.py`` is a
verbatim copy of ``rlsd/verify/answer_extraction.py`` (``shared:`` in the spec), the same module
the in-process checker ``rlsd.verify.MathAnswerVerifier`` runs. One implementation, two runners.

Item: ``{"id", "response": str, "reference": "7" | 7 | {"answer": "7", "fallback_last_number":
false}}``. Standard library only.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the image's /verifier is read-only; keep build/ clean locally
sys.path[:0] = [p for p in (HERE, os.path.join(HERE, "build")) if p not in sys.path]

try:
    from answer_extraction import check_answer
    from verifier_protocol import serve
except ImportError as _exc:  # pragma: no cover - a broken image, reported loudly
    print(
        f"math-answer: cannot import its shared modules ({_exc}); run its prepare first",
        file=sys.stderr,
    )
    raise SystemExit(2) from None

DEFAULT_TIMEOUT_S = 5.0


def _gold_text(reference: object) -> object:
    """A JSON gold answer as the string the shared checker expects (others pass through)."""
    if isinstance(reference, bool):
        return reference
    if isinstance(reference, int):
        return str(reference)
    if isinstance(reference, float):
        return format(Decimal(repr(reference)), "f") if reference == reference else reference
    return reference


def check(item: dict, timeout: float) -> tuple[bool, float, str]:
    reference = item.get("reference")
    fallback = True
    if isinstance(reference, dict):
        fallback = reference.get("fallback_last_number", True) is not False
        reference = reference.get("answer")
    passed, detail = check_answer(
        item.get("response"), _gold_text(reference), fallback_last_number=fallback
    )
    return passed, 1.0 if passed else 0.0, detail


if __name__ == "__main__":
    sys.exit(serve(check, default_timeout=DEFAULT_TIMEOUT_S))
