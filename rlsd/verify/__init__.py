"""Verifiers: turn a response into a reward in [0, 1]."""

from rlsd.verify.base import Verifier, VerifyResult
from rlsd.verify.math_answer import MathAnswerVerifier, extract_answer, parse_number
from rlsd.verify.registry import (
    VERIFIERS,
    UnknownVerifierError,
    get_verifier,
    known_verifiers,
    register_verifier,
)

__all__ = [
    "VERIFIERS",
    "MathAnswerVerifier",
    "UnknownVerifierError",
    "Verifier",
    "VerifyResult",
    "extract_answer",
    "get_verifier",
    "known_verifiers",
    "parse_number",
    "register_verifier",
]
