"""In-process exact-answer checker for math tasks (verifier name ``"math-answer"``).

The extraction rules and the verdict live in :mod:`rlsd.verify.answer_extraction` (standard
library only), which the container verifier ``verifiers/math-answer`` runs verbatim: one
implementation, two runners. This module wraps it in the :class:`~rlsd.verify.base.Verifier`
interface.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlsd.verify.answer_extraction import (
    MAX_DIGITS,
    Extraction,
    _show,
    check_answer,
    extract_answer,
    parse_number,
)
from rlsd.verify.base import VerifyResult, check_batch

__all__ = [
    "MAX_DIGITS",
    "Extraction",
    "MathAnswerVerifier",
    "check_answer",
    "extract_answer",
    "parse_number",
]


class MathAnswerVerifier:
    """Exact final-answer match against ``task.answer``; reward 1.0 or 0.0."""

    name = "math-answer"

    def __init__(self, *, fallback_last_number: bool = True) -> None:
        self.fallback_last_number = fallback_last_number

    def __repr__(self) -> str:
        return f"MathAnswerVerifier(fallback_last_number={self.fallback_last_number})"

    def verify(self, responses: Sequence[str], tasks: Sequence[object]) -> list[VerifyResult]:
        check_batch(responses, tasks)
        return [
            self.verify_one(r, getattr(t, "answer", None))
            for r, t in zip(responses, tasks, strict=True)
        ]

    def verify_one(self, response: object, gold: object) -> VerifyResult:
        """Check one response against a gold answer string; never raises."""
        try:
            passed, detail = check_answer(
                response, gold, fallback_last_number=self.fallback_last_number
            )
        except Exception as exc:  # a verifier must never crash the training loop
            return VerifyResult.fail(f"verifier error: {type(exc).__name__}: {_show(exc, 120)}")
        return VerifyResult(passed=passed, score=1.0 if passed else 0.0, detail=detail)
