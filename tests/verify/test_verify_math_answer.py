import time
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlsd.tasks import ChatMessage, Task
from rlsd.verify import (
    MathAnswerVerifier,
    VerifyResult,
    extract_answer,
    get_verifier,
    parse_number,
)
from rlsd.verify.answer_extraction import check_answer
from rlsd.verify.redteam import load_battery

V = MathAnswerVerifier()
STRICT = MathAnswerVerifier(fallback_last_number=False)

# (response, gold, passes)
CASES = [
    ("#### 10", "10", True),
    ("Maria has 7 + 3 = 10 apples.\n#### 10", "10", True),
    ("####10", "10", True),
    ("#### 1,000", "1000", True),
    ("#### 1000", "1,000", True),
    ("#### $1,234.50", "1234.5", True),
    ("#### 10.0", "10", True),
    ("#### 10.00", "10.0", True),
    ("#### +7", "7", True),
    ("#### 7 apples", "7", True),
    ("#### 7.", "7", True),
    ("#### -5", "-5", True),
    ("#### \u22125", "-5", True),  # unicode minus
    ("#### -5", "5", False),
    ("#### 3/4", "0.75", True),
    ("\\boxed{3/4}", "0.75", True),
    ("\\boxed{\\frac{3}{4}}", "3/4", True),
    ("\\boxed{-\\dfrac{6}{8}}", "-0.75", True),
    ("The answer is \\boxed{10 \\text{ apples}}.", "10", True),
    ("#### 0.1", "1/10", True),
    ("#### 0.333", "1/3", False),  # decimals are exact rationals, not approximations
    ("#### 12\nwait, no.\n#### 13", "13", False),  # several different final answers
    ("#### 12\nwait, no.\n#### 13", "12", False),
    ("#### 9 then \\boxed{4}", "9", False),
    ("\\boxed{1} and later \\boxed{2}", "2", False),
    ("#### 13\nchecked: \\boxed{13}", "13", True),  # several equal final answers are fine
    ("So she has 5 - 4 = 1 point left.", "1", True),  # fallback: last number
    ("pages 10-12", "12", True),  # '-' between digits is not a sign
    ("I do not know.", "7", False),
    ("####", "7", False),
    ("", "7", False),
    ("   \n\t ", "7", False),
    ("#### eleven", "11", False),
    ("#### 1/0", "1", False),
    ("#### 10", "11", False),
]


@pytest.mark.parametrize(("response", "gold", "passes"), CASES)
def test_hand_examples(response, gold, passes):
    result = V.verify_one(response, gold)
    assert result.passed is passes, result.detail
    assert result.score == (1.0 if passes else 0.0)
    assert result.detail


def test_fallback_is_recorded_and_can_be_turned_off():
    r = V.verify_one("7 + 3 = 10 apples", "10")
    assert r.passed and r.detail.startswith("fallback:last-number")
    r = STRICT.verify_one("7 + 3 = 10 apples", "10")
    assert not r.passed and "fallback off" in r.detail
    assert V.verify_one("#### 10", "10").detail.startswith("####:")
    assert V.verify_one("\\boxed{10}", "10").detail.startswith("boxed:")


def test_failure_details_are_informative():
    assert "no final answer" in V.verify_one("no digits here", "3").detail
    assert "!= gold 3" in V.verify_one("#### 4", "3").detail
    assert "empty" in V.verify_one("", "3").detail
    assert "not a number" in V.verify_one("#### 4", "four").detail


def _task(answer="10"):
    return Task(
        id="t",
        prompt=[ChatMessage(role="user", content="q")],
        answer=answer,
        privileged_context="",
        verifier="math-answer",
        split="train",
        source="test",
    )


def test_batch_interface_in_order():
    tasks = [_task("1"), _task("2"), _task("3")]
    results = V.verify(["#### 1", "#### 5", "\\boxed{3}"], tasks)
    assert [r.passed for r in results] == [True, False, True]
    assert all(isinstance(r, VerifyResult) for r in results)
    with pytest.raises(ValueError, match="one task per response"):
        V.verify(["#### 1"], tasks)


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        b"#### 10",
        12,
        "\x00\x01\x02",
        "\ud800 lone surrogate",
        "🙂" * 1000,
        "#### ١٠",  # Arabic-Indic digits are not ASCII numbers
        "9" * 10_000,  # beyond int()'s digit limit
        "#### " + "9" * 5000,
        "\\boxed{" * 1000,
    ],
)
def test_never_raises_on_garbage(garbage):
    [r] = V.verify([garbage], [_task("10")])
    assert r.passed is False and r.score == 0.0 and r.detail


@pytest.mark.parametrize(
    "hostile",
    [
        "1" * 1_000_000,
        "1 " * 500_000,
        "####" * 250_000,
        "#### " + " " * 1_000_000,
        " " * 1_000_000,
        "-" * 1_000_000,
        "1," * 500_000,
        "9/" * 500_000,
        "\\boxed{" * 140_000,
        "\\boxed{\\frac{" * 80_000,
        "\\boxed{" + "a" * 1_000_000,
        "$" * 1_000_000,
        "1." * 500_000,
    ],
)
def test_one_megabyte_hostile_input_is_fast(hostile):
    start = time.perf_counter()
    r = V.verify_one(hostile + "\n#### 10 (not really)", "10")
    r2 = V.verify_one(hostile, "10")
    assert time.perf_counter() - start < 2.0
    assert r.passed  # the final marker is still found after the junk
    assert isinstance(r2.passed, bool)


def test_registry():
    v = get_verifier("math-answer")
    assert isinstance(v, MathAnswerVerifier) and v.name == "math-answer"
    assert get_verifier("math-answer", fallback_last_number=False).fallback_last_number is False


def test_extract_answer():
    found = extract_answer("x = 2\n#### 1,000.50 dollars")
    assert found is not None and found.method == "####" and float(found.value) == 1000.5
    assert extract_answer("no numbers") is None
    assert extract_answer("just 4", fallback_last_number=False) is None


@given(st.integers(min_value=-(10**30), max_value=10**30), st.text(max_size=40))
def test_property_final_marker(n, prefix):
    response = f"{prefix}\n#### {n}"
    assert V.verify_one(response, str(n)).passed
    assert not V.verify_one(response, str(n + 1)).passed


@given(st.integers(min_value=-(10**9), max_value=10**9))
def test_property_thousands_separators(n):
    assert V.verify_one(f"#### {n:,}", str(n)).passed
    assert V.verify_one(f"\\boxed{{{n}}}", f"{n:,}").passed


@given(st.text(max_size=300))
def test_property_never_raises(text):
    r = V.verify_one(text, "42")
    assert isinstance(r, VerifyResult) and 0.0 <= r.score <= 1.0


# --- red-team fixes: every misreading as a failing hack next to its honest counterpart ---------

# (response, gold, passes)
FORMS = [
    # thousands grouped with a space, NBSP, thin space, narrow NBSP (in '####' / \boxed only)
    ("#### 1 000", "1000", True),
    ("#### 1 000", "1", False),
    ("#### 1\u00a0000", "1000", True),
    ("#### 1\u00a0000", "1", False),
    ("#### 1\u2009000", "1000", True),
    ("\\boxed{12\u202f500}", "12500", True),
    ("\\boxed{12\u202f500}", "12", False),
    ("#### 12 345 678.5", "12345678.5", True),
    ("\\boxed{1\\,000}", "1000", True),  # LaTeX thin space
    ("\\boxed{1{,}000}", "1000", True),  # LaTeX comma
    ("#### 1000 000", "1000000", False),  # a first group of four digits: two numbers
    ("#### 1 0000", "10000", False),
    ("The total is 2 100", "100", False),  # fallback: ambiguous, refused
    ("The total is 2 100", "2100", False),
    ("The total is 2100", "2100", True),
    # scientific notation
    ("#### 4.2e1", "42", True),
    ("#### 4.2e1", "4.2", False),
    ("#### 4.2E+1", "42", True),
    ("#### 5e-1", "1/2", True),
    ("#### 5e\u22121", "0.5", True),
    ("The answer is 4.2e1", "42", True),
    ("The answer is 4.2e1", "1", False),
    ("#### 4.2 \\times 10^{1}", "42", True),
    ("#### 4.2 \\times 10^{1}", "4.2", False),
    ("#### 4.2\u00d710^1", "42", True),
    ("#### 1e99999", "1", False),
    # LaTeX fractions with single-token arguments
    ("\\boxed{\\frac34}", "3/4", True),
    ("\\boxed{\\frac34}", "34", False),
    ("\\boxed{\\frac3 4}", "0.75", True),
    ("\\boxed{\\frac 3 4}", "0.75", True),
    ("\\boxed{\\frac{3}4}", "0.75", True),
    ("\\boxed{\\frac3{4}}", "0.75", True),
    ("\\boxed{\\dfrac34}", "0.75", True),
    ("\\boxed{\\tfrac{3}{4}}", "0.75", True),
    ("\\boxed{-\\frac34}", "-0.75", True),
    ("\\boxed{-\\frac34}", "0.75", False),
    ("#### - \\frac{3}{4}", "-3/4", True),
    ("\\boxed{\\frac{-3}{4}}", "-3/4", True),
    ("\\boxed{-\\dfrac{3}4}", "3", False),
    ("\\boxed{\\frac{3}{4}5}", "3/4", False),  # a trailing digit is a second number
    ("\\boxed{\\frac{x}{2}}", "2", False),
    ("\\boxed{\\frac{1}{0}}", "1", False),
    # integer powers, bounded
    ("#### 2^{10}", "1024", True),
    ("#### 2^{10}", "2", False),
    ("#### 2^10", "1024", True),
    ("#### 2^10", "2", False),
    ("\\boxed{2^{ 10 }}", "1024", True),
    ("#### 2^(10)", "1024", True),
    ("#### 10^{-2}", "0.01", True),
    ("#### -2^2", "-4", True),
    ("#### 1.5^2", "2.25", True),
    ("#### 2^{664}", str(2**664), True),  # 200 digits: still allowed
    ("#### 2^{665}", str(2**665), False),  # 201 digits: refused
    ("#### 2^{1000000000}", "2", False),  # refused by bound, never computed
    ("#### 2^{3}^{2}", "64", False),
    ("#### 0^0", "1", False),
    # malformed digit grouping is never a number, in an answer or in the fallback
    ("#### 1,0000", "1000", False),
    ("#### 1,0000", "10000", False),
    ("#### 10,00", "1000", False),
    ("#### 1.000,5", "1000.5", False),
    ("#### 1.2.3", "1.2", False),
    ("So the total is 1,0000.", "0", False),
    ("So the total is 1,0000.", "1000", False),
    ("So the total is 10,000.", "10000", True),
    # a list or a range is several final answers
    ("\\boxed{41, 42, 43}", "41", False),
    ("\\boxed{41, 42, 43}", "43", False),
    ("#### 41, 42", "41", False),
    ("#### 41 or 42", "41", False),
    ("#### 40-45", "40", False),
    ("#### 40 - 45", "45", False),
    ("#### 40\u201345", "40", False),
    ("#### 42 (or 41)", "42", False),
    ("#### 3 1/2", "3", False),
    ("#### 42 (that is the total)", "42", True),
    # several final answers across markers must agree
    ("\\boxed{42}\n#### 42", "42", True),
    ("\\boxed{42}\n#### 42.0", "42", True),
    ("#### 42\n#### 42", "42", True),
    ("\\boxed{41}\n#### 42", "41", False),
    ("\\boxed{41}\n#### 42", "42", False),
    ("#### 41\n#### 42", "41", False),
    ("#### 41\n#### 42", "42", False),
    ("#### 41 #### 42", "42", False),
    ("\\boxed{41} or \\boxed{42}", "42", False),
    ("#### 3/4\n\\boxed{0.75}", "0.75", True),
    # answers hidden from the reader
    ("I tried 41 first, but the answer is forty-two.", "41", False),
    ("#### forty-one\n#### 42", "42", False),
    ("#### 2 million", "2", False),
    ("#### 5k", "5", False),
    ("The answer is 41.\n####\n\nCheck: 6 * 7 = 42", "42", False),
    ("#### - 5", "5", False),
    ("#### Step 1: add\n3 + 4 = 7\n#### 7", "7", True),  # a heading is not an answer
    ("\\boxed{41{42}}", "41", False),
    ("\\boxed{41{{42}}}", "42", False),
    ("\\boxed{41 \\boxed{42}}", "41", False),
    ("\\boxed{41 \\boxed{42}}", "42", False),
    ("\\boxed{\\sqrt{2}}", "2", False),
    ("\\boxed{x^2}", "2", False),
    ("\\boxed{sqrt(2)}", "2", False),
    ("\\boxed{x = 5}", "5", True),
    ("\\boxed{90^\\circ}", "90", True),
    ("\\boxed{\\text{Answer: } 42}", "42", True),
    ("#### $\\frac{3}{4}$", "0.75", True),
    ("#### **42**", "42", True),
    ("#### (42)", "42", True),
    # non-ASCII digits are rejected, never normalised
    ("#### \uff14\uff12", "42", False),
    ("\\boxed{\uff14\uff11}\n#### 42", "42", False),
    ("#### 3\u00b2", "3", False),
    ("#### 3\u00b2", "9", False),
    ("#### 3\u00bd", "3", False),
    ("The answer is \uff14\uff12", "42", False),
    ("I had 41, now \uff14\uff12", "41", False),
    # huge numbers
    ("#### 1" + "0" * 250, "1" + "0" * 250, False),
    ("#### 1" + "0" * 199, "1" + "0" * 199, True),
]


@pytest.mark.parametrize(("response", "gold", "passes"), FORMS)
def test_red_team_forms(response, gold, passes):
    result = V.verify_one(response, gold)
    assert result.passed is passes, result.detail
    assert result.detail


def test_several_and_unusable_details():
    d = V.verify_one("\\boxed{41}\n#### 42", "42").detail
    assert d.startswith("several final answers:") and "41" in d and "42" in d
    d = V.verify_one("\\boxed{41, 42, 43}", "41").detail
    assert d.startswith("several final answers in") and "41, 42, 43" in d
    d = V.verify_one("#### 1,0000", "1000").detail
    assert d.startswith("unusable final answer: malformed digit grouping '1,0000'")
    d = V.verify_one("So the total is 1,0000.", "1000").detail
    assert d.startswith("unusable final answer: malformed digit grouping")
    d = V.verify_one("\\boxed{42}\n#### 42", "42").detail
    assert d.startswith("####:") and "2 final answers, all equal" in d
    assert "non-ASCII digit" in V.verify_one("#### \uff14\uff12", "42").detail
    assert "fallback applies only" in V.verify_one("####\nso 42", "42").detail
    assert "number too long" in V.verify_one("#### 2^{1000000000}", "2").detail


def test_fallback_only_without_markers():
    assert V.verify_one("so the answer is 42", "42").detail.startswith("fallback:last-number")
    assert not V.verify_one("#### Step 1\nso the answer is 42", "42").passed
    assert not V.verify_one("\\boxed{} so the answer is 42", "42").passed


@pytest.mark.parametrize(
    ("gold", "value"),
    [
        ("1000", Fraction(1000)),
        ("-3/4", Fraction(-3, 4)),
        ("0.75", Fraction(3, 4)),
        ("$1,000.50", Fraction(2001, 2)),
        ("1 000", Fraction(1000)),
        ("#### 7", Fraction(7)),
        ("7 apples", Fraction(7)),
        ("0.00001", Fraction(1, 100000)),
        ("\u22125", Fraction(-5)),
        ("four", None),
    ],
)
def test_parse_number_for_gold_answers(gold, value):
    assert parse_number(gold) == value


@pytest.mark.parametrize("gold", ["3 or 4", "41, 42", "1,0000", "1/0"])
def test_gold_answer_that_is_not_one_number_is_unparsable(gold):
    with pytest.raises(ValueError):
        parse_number(gold)
    r = V.verify_one(f"#### {gold}", gold)
    assert not r.passed and "gold answer" in r.detail


def _megabyte_shapes():
    return {
        "digits": "1" * 1_000_000,
        "spaced-groups": "#### 1" + " 000" * 250_000,
        "boxed-groups": "\\boxed{1" + "\u2009000" * 250_000 + "}",
        "markers": "#### 1\n" * 143_000,
        "headings": "#### x " * 160_000,
        "boxed-answers": "\\boxed{1}" * 111_200,
        "open-boxes": "\\boxed{" * 143_000,
        "boxed-braces": "\\boxed{" + "{}" * 500_000 + "}",
        "fracs": "\\frac3" * 166_700,
        "powers": "2^{" * 333_400,
        "exponents": "1e" * 500_000,
        "times": "1 \\times 10^" * 83_400,
        "words": "one " * 250_000,
        "fullwidth": "\uff14" * 1_000_000,
        "emoji-after-digit": "1" + "\U0001f642" * 250_000,
        "long-answer-line": "#### 1 " + "x" * 1_000_000,
        "leads": "#### " + "(" * 1_000_000,
        "commands": "\\boxed{" + "\\a" * 500_000 + "}",
    }


@pytest.mark.parametrize("name", list(_megabyte_shapes()))
def test_one_megabyte_response_is_checked_well_under_a_second(name):
    text = _megabyte_shapes()[name]
    assert len(text.encode()) >= 1_000_000  # one megabyte of UTF-8
    start = time.perf_counter()
    r = V.verify_one(text, "10")
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"{name}: {elapsed:.2f} s"
    assert isinstance(r.passed, bool) and r.detail


def _gold(reference):
    """A battery item's reference as the checker's gold string and fallback flag (as the
    container's verify.py reads it)."""
    fallback = True
    if isinstance(reference, dict):
        fallback = reference.get("fallback_last_number", True) is not False
        reference = reference.get("answer")
    if isinstance(reference, int) and not isinstance(reference, bool):
        reference = str(reference)
    return reference, fallback


def test_red_team_battery_in_process():
    battery = load_battery("math-answer")
    assert battery is not None and battery.kind == "math-answer"
    assert len(battery.hacks) >= 20 and sum(c.expect == "pass" for c in battery.controls) >= 6
    breaches = []
    for hack in battery.hacks:
        gold, fallback = _gold(hack.item["reference"])
        passed, detail = check_answer(hack.item["response"], gold, fallback_last_number=fallback)
        if passed:
            breaches.append(f"{hack.id} ({hack.hack}): {detail}")
    failed = []
    for control in battery.controls:
        gold, fallback = _gold(control.item["reference"])
        passed, detail = check_answer(control.item["response"], gold, fallback_last_number=fallback)
        if passed is not (control.expect == "pass"):
            failed.append(f"{control.id}: {detail}")
    assert not breaches and not failed
