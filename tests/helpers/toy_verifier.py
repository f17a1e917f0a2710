"""A verifier whose verdicts vary on a random model's output, so tiny-model training has signal."""

from __future__ import annotations

from collections.abc import Sequence

from rlsd.tasks import Task
from rlsd.verify import VerifyResult, register_verifier

NAME = "toy-even-length"


class EvenLengthVerifier:
    """Passes a response whose text has an even number of characters."""

    name = NAME

    def verify(self, responses: Sequence[str], tasks: Sequence[Task]) -> list[VerifyResult]:
        return [
            VerifyResult(
                passed=len(r) % 2 == 0, score=float(len(r) % 2 == 0), detail=f"len={len(r)}"
            )
            for r in responses
        ]


def register() -> None:
    register_verifier(NAME, EvenLengthVerifier, replace=True)
