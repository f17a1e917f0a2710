"""math-answer in a container gives the in-process checker's verdicts, detail for detail."""

from __future__ import annotations

import pytest
from vb_support import battery_verdicts_wrong, python_ids, pythons, run_batch

from rlsd.verify import MathAnswerVerifier

NAME = "math-answer"

CASES = [
    ("#### 10", "10"),
    ("Maria has 7 + 3 = 10 apples.\n#### 10", "10"),
    ("#### 1,000", "1000"),
    ("#### $1,234.50", "1234.5"),
    ("#### 10.00", "10.0"),
    ("#### \u22125", "-5"),
    ("#### -5", "5"),
    ("\\boxed{\\frac{3}{4}}", "3/4"),
    ("\\boxed{-\\dfrac{6}{8}}", "-0.75"),
    ("The answer is \\boxed{10 \\text{ apples}}.", "10"),
    ("#### 0.333", "1/3"),
    ("#### 12\nwait, no.\n#### 13", "13"),
    ("#### 12\nwait, no.\n#### 13", "12"),
    ("So she has 5 - 4 = 1 point left.", "1"),
    ("pages 10-12", "12"),
    ("I do not know.", "7"),
    ("", "7"),
    ("#### eleven", "11"),
    ("#### 1/0", "1"),
    ("#### " + "9" * 5000, "9"),
    ("#### 4", "four"),
    ("\ud800 lone surrogate 3", "3"),
    ("🙂" * 100 + " #### 42", "42"),
    ("\\boxed{" * 500, "1"),
    # the red-team fixes, end to end
    ("#### 1 000", "1000"),
    ("#### 1\u00a0000", "1"),
    ("#### 4.2e1", "42"),
    ("\\boxed{\\frac34}", "0.75"),
    ("#### 2^{10}", "1024"),
    ("#### 1,0000", "1000"),
    ("\\boxed{41, 42, 43}", "41"),
    ("#### 40\u201345", "40"),
    ("\\boxed{42}\n#### 42", "42"),
    ("\\boxed{41}\n#### 42", "42"),
    ("#### \uff14\uff12", "42"),
    ("I tried 41 first, but the answer is forty-two.", "41"),
]


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_same_verdicts_and_details_as_the_in_process_checker(python):
    items = [
        {"id": f"c{i}", "response": response, "reference": gold}
        for i, (response, gold) in enumerate(CASES)
    ]
    results = run_batch(NAME, items, python=python)
    v = MathAnswerVerifier()
    for (response, gold), r in zip(CASES, results, strict=True):
        want = v.verify_one(response, gold)
        assert (r["passed"], r["score"], r["detail"]) == (want.passed, want.score, want.detail)


def test_reference_forms():
    strict = MathAnswerVerifier(fallback_last_number=False)
    items = [
        {"id": "int", "response": "#### 7", "reference": 7},
        {"id": "float", "response": "\\boxed{0.75}", "reference": 0.75},
        {"id": "tiny-float", "response": "#### 0.00001", "reference": 1e-05},
        {"id": "dict", "response": "#### 7", "reference": {"answer": "7"}},
        {
            "id": "strict",
            "response": "it is 7",
            "reference": {"answer": "7", "fallback_last_number": False},
        },
        {"id": "bool", "response": "#### 1", "reference": True},
        {"id": "missing", "response": "#### 1"},
        {"id": "non-string-response", "response": 7, "reference": "7"},
    ]
    results = run_batch(NAME, items)
    assert [r["passed"] for r in results] == [True, True, True, True, False, False, False, False]
    assert results[4]["detail"] == strict.verify_one("it is 7", "7").detail
    assert "no gold answer string" in results[5]["detail"]
    assert "no gold answer string" in results[6]["detail"]
    assert "response is not a string" in results[7]["detail"]


def test_red_team_battery_through_the_container_program():
    """The kind's battery, run by verify.py itself (what the sandboxed red-team gate runs)."""
    _, wrong = battery_verdicts_wrong(NAME)
    assert not wrong
