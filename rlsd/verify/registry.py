"""Look up verifiers by the name a task carries in ``Task.verifier``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlsd.verify.base import Verifier
from rlsd.verify.math_answer import MathAnswerVerifier

VerifierFactory = Callable[..., Verifier]


class UnknownVerifierError(KeyError):
    """No verifier is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would print the message with quotes
        return str(self.args[0]) if self.args else ""


#: In-process verifiers. Sandboxed (container) verifiers register behind the same interface.
VERIFIERS: dict[str, VerifierFactory] = {MathAnswerVerifier.name: MathAnswerVerifier}


def register_verifier(name: str, factory: VerifierFactory, *, replace: bool = False) -> None:
    """Make ``get_verifier(name)`` build verifiers with ``factory``."""
    if name in VERIFIERS and not replace:
        raise ValueError(f"verifier {name!r} is already registered (pass replace=True)")
    VERIFIERS[name] = factory


def known_verifiers() -> list[str]:
    return sorted(VERIFIERS)


def get_verifier(name: str, **options: Any) -> Verifier:
    """Build the verifier registered as ``name``; ``options`` go to its constructor."""
    try:
        factory = VERIFIERS[name]
    except KeyError:
        raise UnknownVerifierError(
            f"unknown verifier {name!r}; known verifiers: {', '.join(known_verifiers())}"
        ) from None
    return factory(**options)
