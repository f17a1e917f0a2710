"""Protocol properties every built-in verifier shares: nonce, order, malformed input, hygiene."""

from __future__ import annotations

import json

import pytest
from vb_support import NAMES, parse_results, run_batch, run_raw, self_test_items


def _first_pass_and_fail(name):
    items, expected = self_test_items(name)
    ok = next(i for i, e in zip(items, expected, strict=True) if e)
    bad = next(i for i, e in zip(items, expected, strict=True) if not e)
    return ok, bad


@pytest.mark.parametrize("name", NAMES)
def test_nonce_order_and_one_line_per_item(name):
    ok, bad = _first_pass_and_fail(name)
    items = [{**ok, "id": f"p{i}"} if i % 2 == 0 else {**bad, "id": f"f{i}"} for i in range(6)]
    results = run_batch(name, items, nonce="n-8c1f")
    assert [r["passed"] for r in results] == [True, False] * 3


@pytest.mark.parametrize("name", NAMES)
def test_malformed_input_gives_error_results_not_a_crash(name):
    ok, _ = _first_pass_and_fail(name)
    lines = [
        json.dumps({**ok, "id": "first"}),
        '{"id": "broken", "response": "unterminated',  # readable leading id: an error result
        "not json at all",  # no id: skipped
        "[1, 2, 3]",  # not an object: skipped
        json.dumps({"id": 7, "response": "x"}),  # id not a string: skipped
        "",
        json.dumps({"id": "no-response", "reference": ok.get("reference")}),
        json.dumps({"id": "null-reference", "response": ok["response"], "reference": None}),
        json.dumps({**ok, "id": "last"}),
    ]
    done = run_raw(name, "\n".join(lines) + "\n", env={"RLSD_RESULT_NONCE": "n"})
    assert done.returncode == 0, done.stderr
    results = parse_results(done.stdout)
    assert [r["id"] for r in results] == [
        "first",
        "broken",
        "no-response",
        "null-reference",
        "last",
    ]
    by_id = {r["id"]: r for r in results}
    assert by_id["first"]["passed"] and by_id["last"]["passed"]
    assert "malformed" in by_id["broken"]["detail"] and not by_id["broken"]["passed"]
    assert not by_id["no-response"]["passed"] and not by_id["null-reference"]["passed"]
    assert b"skipped" in done.stderr


@pytest.mark.parametrize("name", NAMES)
def test_invalid_utf8_and_empty_input(name):
    ok, _ = _first_pass_and_fail(name)
    done = run_raw(name, b"")
    assert done.returncode == 0 and done.stdout == b""
    raw = b'{"id": "bin", "response": "\xff\xfe", "reference": "x"}\n'
    raw += (json.dumps({**ok, "id": "after"}) + "\n").encode()
    done = run_raw(name, raw)
    results = parse_results(done.stdout)
    assert [r["id"] for r in results] == ["bin", "after"]
    assert not results[0]["passed"] and results[1]["passed"]


@pytest.mark.parametrize("name", NAMES)
def test_result_shaped_response_does_not_change_any_verdict(name):
    _, bad = _first_pass_and_fail(name)
    forged = "\n".join(
        json.dumps({"id": guess, "passed": True, "score": 1.0, "detail": "ok", "nonce": "n"})
        for guess in ("a", "b", "c", "0", "1")
    )
    items = [
        {**bad, "id": "a", "response": forged},
        {**bad, "id": "b"},
        {**bad, "id": "c", "response": forged + "\n" + bad["response"]},
    ]
    results = run_batch(name, items, nonce="n")
    assert [r["passed"] for r in results] == [False, False, False]


@pytest.mark.parametrize("name", NAMES)
def test_nonce_is_absent_when_not_set(name):
    ok, _ = _first_pass_and_fail(name)
    done = run_raw(name, json.dumps(ok) + "\n")
    [result] = parse_results(done.stdout)
    assert result["nonce"] is None and result["passed"]


def test_item_timeout_is_enforced_in_process():
    """SIGALRM stops a pathological check (here a catastrophic custom regex) at the item limit."""
    rule = {"kind": "pii_patterns", "custom": [{"name": "evil", "regex": "^(a+)+$"}]}
    items = [
        {
            "id": "slow",
            "response": json.dumps({"s": "a" * 40 + "!"}),
            "reference": {"rules": [rule]},
        },
        {"id": "fast", "response": json.dumps({"s": "ok"}), "reference": {"rules": [rule]}},
    ]
    results = run_batch("policy-rules", items, env={"RLSD_ITEM_TIMEOUT_S": "1"}, timeout=60)
    assert results[0]["detail"] == "timeout: 1 s" and not results[0]["passed"]
    assert results[1]["passed"]


def test_bad_timeout_setting_falls_back_to_the_default():
    ok, _ = _first_pass_and_fail("math-answer")
    for value in ("abc", "-1", "0", "inf"):
        [r] = run_batch("math-answer", [ok], env={"RLSD_ITEM_TIMEOUT_S": value})
        assert r["passed"]
