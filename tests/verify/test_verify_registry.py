import pytest

from rlsd.verify import (
    VERIFIERS,
    MathAnswerVerifier,
    UnknownVerifierError,
    Verifier,
    VerifyResult,
    get_verifier,
    known_verifiers,
    register_verifier,
)


def test_math_answer_satisfies_protocol():
    assert isinstance(MathAnswerVerifier(), Verifier)
    assert "math-answer" in known_verifiers()


def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownVerifierError) as err:
        get_verifier("sql-exec")
    msg = str(err.value)
    assert msg.startswith("unknown verifier 'sql-exec'; known verifiers: ")
    assert "math-answer" in msg.split(": ", 1)[1].split(", ")
    assert isinstance(err.value, KeyError)


def test_register_custom_verifier():
    class Always:
        name = "always"

        def verify(self, responses, tasks):
            return [VerifyResult(passed=True, score=1.0, detail="ok") for _ in responses]

    try:
        register_verifier("always", Always)
        with pytest.raises(ValueError, match="already registered"):
            register_verifier("always", Always)
        v = get_verifier("always")
        assert isinstance(v, Verifier)
        assert v.verify(["x"], [None])[0].passed
    finally:
        VERIFIERS.pop("always", None)


def test_verify_result_bounds():
    with pytest.raises(ValueError):
        VerifyResult(passed=True, score=1.5, detail="")
    assert VerifyResult.fail("why").score == 0.0
