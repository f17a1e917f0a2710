"""The interface every reward goes through: a batch of responses in, one verdict each out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from rlsd.tasks.record import Task


class VerifyResult(BaseModel):
    """The verdict on one response. ``score`` is the reward in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    detail: str = ""

    @classmethod
    def fail(cls, detail: str) -> VerifyResult:
        return cls(passed=False, score=0.0, detail=detail)


@runtime_checkable
class Verifier(Protocol):
    """Scores responses against tasks.

    ``verify`` returns exactly one result per response, in order. It must never raise because
    of the response text (empty, huge, binary-looking, hostile): such a response gets
    ``passed=False`` with a ``detail`` that says why. Mismatched batch lengths are a caller
    bug and may raise ``ValueError``.
    """

    name: str

    def verify(self, responses: Sequence[str], tasks: Sequence[Task]) -> list[VerifyResult]: ...


def check_batch(responses: Sequence[object], tasks: Sequence[object]) -> None:
    """Raise ``ValueError`` unless there is exactly one task per response."""
    if len(responses) != len(tasks):
        raise ValueError(
            f"verify() needs one task per response: got {len(responses)} responses "
            f"and {len(tasks)} tasks"
        )
