"""policy-rules: every rule kind, PII detectors with checksums, the detail, the scoring."""

from __future__ import annotations

import json

import pytest
from vb_support import load_module, python_ids, pythons, run_batch

NAME = "policy-rules"


@pytest.fixture(scope="module")
def m():
    return load_module(NAME)


@pytest.mark.parametrize(
    ("kind", "text", "found"),
    [
        # credit cards: major-network prefix + Luhn
        ("credit_card", "4111 1111 1111 1111", True),
        ("credit_card", "4111-1111-1111-1111", True),
        ("credit_card", "card:4111111111111111.", True),
        ("credit_card", "5555555555554444", True),
        ("credit_card", "378282246310005", True),  # Amex, 15 digits
        ("credit_card", "3782 822463 10005", True),  # Amex grouping 4-6-5
        ("credit_card", "6011111111111117", True),
        ("credit_card", "4111 1111 1111 1112", False),  # Luhn fails
        ("credit_card", "1234567812345670", False),  # Luhn-valid, no network prefix
        ("credit_card", "4111 1111-1111 1111", False),  # mixed separators
        ("credit_card", "2024-01-15 2024-02-16", False),
        ("credit_card", "41111111111111111111111", False),  # too long a digit run
        # IBAN: mod-97 and the registry length
        ("iban", "DE89 3704 0044 0532 0130 00", True),
        ("iban", "DE89370400440532013000", True),
        ("iban", "to DE89 3704 0044 0532 0130 00 please", True),
        ("iban", "GB82 WEST 1234 5698 7654 32", True),
        ("iban", "fr7630006000011234567890189", True),
        ("iban", "NO9386011117947", True),
        ("iban", "DE89 3704 0044 0532 0130 01", False),  # check digits wrong
        ("iban", "GB82 WEST 1234 5698 7654 33", False),
        ("iban", "DE89 3704 0044 0532 0130", False),  # too short for DE
        ("iban", "XX00 1234 5678 9012 3456", False),
        ("iban", "ABCD12345678901234", False),
        # US SSN: dashed or spaced 3-2-4, not the never-issued areas
        ("us_ssn", "SSN 123-45-6789", True),
        ("us_ssn", "123 45 6789", True),
        ("us_ssn", "000-12-3456", False),
        ("us_ssn", "666-12-3456", False),
        ("us_ssn", "123-00-6789", False),
        ("us_ssn", "123-45-67890", False),
        ("us_ssn", "123456789", False),
        ("us_ssn", "123-45 6789", False),
        # email
        ("email", "write to jane.doe+tag@example.co.uk", True),
        ("email", "a@b.io", True),
        ("email", "not an email@", False),
        ("email", "user@localhost", False),
        # phone: international (+, 8-15 digits) or North American 3-3-4
        ("phone", "+1 (780) 428-9482", True),
        ("phone", "+55 (12) 3923-5555", True),
        ("phone", "+49 30 1234567", True),
        ("phone", "(780) 428-9482", True),
        ("phone", "780.428.9482", True),
        ("phone", "on 2024-01-15", False),
        ("phone", "INV-123-456-7890", False),
        ("phone", "version 1.2.3", False),
        ("phone", "+1 2", False),
    ],
)
def test_pii_detectors(m, kind, text, found):
    assert m.BUILTIN_PII[kind](text) is found


def test_checksums(m):
    assert m.luhn_ok("79927398713") and not m.luhn_ok("79927398710")
    assert m.iban_ok("GB82WEST12345698765432") and not m.iban_ok("GB82WEST12345698765431")
    assert not m.iban_ok("GB82WEST1234569876543")  # GB IBANs have 22 characters


RULES = [
    {
        "id": "no-ssn",
        "kind": "forbidden_fields",
        "paths": ["ssn", "customer.ssn", "items.*.secret"],
    },
    {"id": "ids", "kind": "required_fields", "paths": ["order_id", "items.*.sku"]},
    {"id": "total", "kind": "value_range", "path": "total", "min": 0, "max": 10000},
    {"id": "currency", "kind": "allowed_values", "path": "currency", "values": ["EUR", "USD"]},
    {
        "id": "pii",
        "kind": "pii_patterns",
        "patterns": ["email", "phone", "credit_card", "iban", "us_ssn"],
        "custom": [{"name": "employee_id", "regex": "EMP-[0-9]{6}"}],
    },
]
GOOD = {
    "order_id": "A-1",
    "items": [{"sku": "X-1", "qty": 1}, {"sku": "X-2", "qty": 3}],
    "total": 99.5,
    "currency": "EUR",
    "note": "deliver after 2024-01-15, order 4111 1111 1111 1112",
}


def j(value) -> str:
    return json.dumps(value)


CASES = [
    # (id, payload or raw response, reference, passes, score, detail substrings)
    ("compliant", GOOD, {"rules": RULES}, True, 1.0, ["all 5 rules satisfied"]),
    ("fenced", "```json\n" + j(GOOD) + "\n```", {"rules": RULES}, True, 1.0, ["all 5"]),
    ("rules-as-list", GOOD, RULES, True, 1.0, ["all 5"]),
    (
        "forbidden-top",
        {**GOOD, "ssn": None},
        {"rules": RULES},
        False,
        0.0,
        ["[no-ssn] ssn is forbidden but present"],
    ),
    (
        "forbidden-wildcard",
        {**GOOD, "items": [{"sku": "X", "secret": 1}]},
        {"rules": RULES},
        False,
        0.0,
        ["items.0.secret is forbidden"],
    ),
    (
        "required-missing",
        {k: v for k, v in GOOD.items() if k != "order_id"},
        {"rules": RULES},
        False,
        0.0,
        ["[ids] order_id is required but missing"],
    ),
    (
        "required-null",
        {**GOOD, "order_id": None},
        {"rules": RULES},
        False,
        0.0,
        ["order_id is required but null"],
    ),
    (
        "required-wildcard",
        {**GOOD, "items": [{"sku": "X"}, {"qty": 2}]},
        {"rules": RULES},
        False,
        0.0,
        ["items.1.sku is required but missing"],
    ),
    ("required-empty-list-ok", {**GOOD, "items": []}, {"rules": RULES}, True, 1.0, ["all 5"]),
    (
        "range-low",
        {**GOOD, "total": -0.01},
        {"rules": RULES},
        False,
        0.0,
        ["total = -0.01 is outside [0, 10000]"],
    ),
    ("range-high", {**GOOD, "total": 10001}, {"rules": RULES}, False, 0.0, ["outside"]),
    ("range-edge", {**GOOD, "total": 10000}, {"rules": RULES}, True, 1.0, ["all 5"]),
    (
        "range-not-number",
        {**GOOD, "total": "99"},
        {"rules": RULES},
        False,
        0.0,
        ['total is "99", not a number'],
    ),
    ("range-bool", {**GOOD, "total": True}, {"rules": RULES}, False, 0.0, ["not a number"]),
    (
        "range-missing",
        {k: v for k, v in GOOD.items() if k != "total"},
        {"rules": RULES},
        False,
        0.0,
        ["[total] total is missing"],
    ),
    (
        "range-optional",
        {"a": 1},
        {"rules": [{"kind": "value_range", "path": "x", "min": 0, "optional": True}]},
        True,
        1.0,
        ["all 1"],
    ),
    (
        "allowed",
        {**GOOD, "currency": "GBP"},
        {"rules": RULES},
        False,
        0.0,
        ['[currency] currency = "GBP" is not an allowed value'],
    ),
    (
        "pii-email",
        {**GOOD, "note": "mail jane@example.com"},
        {"rules": RULES},
        False,
        0.0,
        ["email found at note"],
    ),
    (
        "pii-card-deep",
        {**GOOD, "items": [{"sku": "X", "memo": ["ok", "4111-1111-1111-1111"]}]},
        {"rules": RULES},
        False,
        0.0,
        ["credit_card found at items.0.memo.1"],
    ),
    (
        "pii-card-as-number",
        {**GOOD, "pan": 4111111111111111},
        {"rules": RULES},
        False,
        0.0,
        ["credit_card found at pan"],
    ),
    (
        "pii-iban",
        {**GOOD, "note": "refund to GB82 WEST 1234 5698 7654 32"},
        {"rules": RULES},
        False,
        0.0,
        ["iban found at note"],
    ),
    (
        "pii-bad-iban-ok",
        {**GOOD, "note": "ref GB82 WEST 1234 5698 7654 33"},
        {"rules": RULES},
        True,
        1.0,
        ["all 5"],
    ),
    (
        "pii-ssn",
        {**GOOD, "customer": {"id": "123-45-6789"}},
        {"rules": RULES},
        False,
        0.0,
        ["us_ssn found at customer.id"],
    ),
    (
        "pii-phone",
        {**GOOD, "note": "call +1 (780) 428-9482"},
        {"rules": RULES},
        False,
        0.0,
        ["phone found at note"],
    ),
    (
        "pii-custom",
        {**GOOD, "note": "by EMP-123456"},
        {"rules": RULES},
        False,
        0.0,
        ["employee_id found at note"],
    ),
    (
        "pii-scoped",
        {"public": "a@b.io", "private": "x"},
        {"rules": [{"kind": "pii_patterns", "patterns": ["email"], "paths": ["private"]}]},
        True,
        1.0,
        ["all 1"],
    ),
    (
        "pii-default-all",
        {"x": "123-45-6789"},
        {"rules": [{"kind": "pii_patterns"}]},
        False,
        0.0,
        ["us_ssn found at x"],
    ),
    (
        "pii-no-echo",
        {"x": "jane@example.com"},
        {"rules": [{"kind": "pii_patterns"}]},
        False,
        0.0,
        ["email found at x"],
    ),
    (
        "every-violation-listed",
        {"ssn": 1, "items": [{}], "total": -5, "currency": "BTC", "note": "jane@example.com"},
        {"rules": RULES},
        False,
        0.0,
        ["5 of 5 rules violated", "[no-ssn]", "[ids]", "[total]", "[currency]", "[pii]"],
    ),
    (
        "fraction-scoring",
        {**GOOD, "currency": "BTC"},
        {"rules": RULES, "scoring": "fraction"},
        False,
        0.8,
        ["1 of 5 rules violated"],
    ),
    ("fraction-all-ok", GOOD, {"rules": RULES, "scoring": "fraction"}, True, 1.0, ["all 5"]),
    (
        "unknown-kind",
        GOOD,
        {"rules": [{"kind": "max_length"}]},
        False,
        0.0,
        ["error: rule 1: unknown kind 'max_length'"],
    ),
    (
        "bad-range-rule",
        GOOD,
        {"rules": [{"kind": "value_range", "path": "total"}]},
        False,
        0.0,
        ["error: rule 1"],
    ),
    (
        "bad-custom-regex",
        GOOD,
        {"rules": [{"kind": "pii_patterns", "custom": [{"regex": "("}]}]},
        False,
        0.0,
        ["error: rule 1"],
    ),
    (
        "bad-detector-name",
        GOOD,
        {"rules": [{"kind": "pii_patterns", "patterns": ["passport"]}]},
        False,
        0.0,
        ["error: rule 1"],
    ),
    ("no-rules", GOOD, {"rules": []}, False, 0.0, ["error: the reference needs"]),
    ("not-json", "I refunded the customer.", {"rules": RULES}, False, 0.0, ["not JSON"]),
]


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_table(python):
    items = [
        {"id": c[0], "response": c[1] if isinstance(c[1], str) else j(c[1]), "reference": c[2]}
        for c in CASES
    ]
    results = run_batch(NAME, items, python=python)
    wrong = [
        (case[0], r["passed"], r["score"], r["detail"])
        for case, r in zip(CASES, results, strict=True)
        if r["passed"] is not case[3]
        or r["score"] != case[4]
        or not all(part in r["detail"] for part in case[5])
    ]
    assert not wrong


def test_detail_never_echoes_the_pii(m):
    payload = {"a": "jane@example.com", "b": "4111 1111 1111 1111", "c": "DE89370400440532013000"}
    passed, _, detail = m.check(
        {"response": j(payload), "reference": {"rules": [{"kind": "pii_patterns"}]}}, 5.0
    )
    assert not passed
    for secret in ("jane", "4111", "DE89"):
        assert secret not in detail
