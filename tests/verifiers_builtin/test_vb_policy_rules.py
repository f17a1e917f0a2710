"""policy-rules: every rule kind, PII detectors with checksums, the detail, the scoring."""

from __future__ import annotations

import json

import pytest
from vb_support import battery_verdicts_wrong, load_module, python_ids, pythons, run_batch

from rlsd.verify.redteam import load_battery

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
        ("credit_card", "4111 1111-1111 1111", True),  # mixed separators
        ("credit_card", "4111.1111.1111.1111", True),
        ("credit_card", "4111/1111_1111/1111", True),
        ("credit_card", "4111 - 1111 - 1111 - 1111", True),
        ("credit_card", "41 11 11 11 11 11 11 11", True),
        ("credit_card", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", True),
        ("credit_card", "4,111,111,111,111,111", True),  # thousands style
        ("credit_card", "4111 11111111 1111", True),  # 4-8-4
        ("credit_card", "ref 12 4111 1111 1111 1111 99", True),  # inside a longer run
        ("credit_card", "4111111111111111.0", True),
        ("credit_card", "4222222222222", True),  # Visa, 13 digits
        ("credit_card", "3530111333300000", True),  # JCB
        ("credit_card", "6200000000000005", True),  # UnionPay
        ("credit_card", "2221000000000009", True),  # Mastercard 2-series
        ("credit_card", "2024011520240216", False),  # Luhn-valid, no network: a date range
        ("credit_card", "4111111111111111111", False),  # Visa prefix, 19 digits, Luhn fails
        ("credit_card", "378282246310005 0", True),
        ("credit_card", "40012 125034 3456 7", False),  # uneven groups
        ("credit_card", "3.14159265358979323", False),
        ("credit_card", "10.0.0.1 192.168.1.1", False),
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
        ("iban", "DE89.3704.0044.0532.0130.00", True),
        ("iban", "DE89-3704-0044-0532-0130-00", True),
        ("iban", "de89 3704 0044 0532 0130 00", True),
        ("iban", "DE89 3704 0044 0532 0130 0012", False),  # runs past the length
        # US SSN: dashed or spaced 3-2-4, not the never-issued areas
        ("us_ssn", "SSN 123-45-6789", True),
        ("us_ssn", "123 45 6789", True),
        ("us_ssn", "000-12-3456", False),
        ("us_ssn", "666-12-3456", False),
        ("us_ssn", "123-00-6789", False),
        ("us_ssn", "123-45-67890", False),
        ("us_ssn", "123456789", False),
        ("us_ssn", "123-45 6789", True),  # mixed separators
        ("us_ssn", "123.45.6789", True),
        ("us_ssn", "123/45/6789", True),
        ("us_ssn", "1.123.45.6789", False),
        ("us_ssn", "2024-01-15", False),
        # email
        ("email", "write to jane.doe+tag@example.co.uk", True),
        ("email", "a@b.io", True),
        ("email", "not an email@", False),
        ("email", "user@localhost", False),
        ("email", "jos\u00e9@exampl\u00e9.fr", True),
        ("email", "version 1.2@3", False),
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
        ("phone", "780/428/9482", True),
        ("phone", "120 350 1000", False),  # no area code starts with 1
        ("phone", "250 150 1000", False),  # nor an exchange
        ("phone", "7804289482", False),  # a bare digit run is not a phone
    ],
)
def test_pii_detectors(m, kind, text, found):
    assert m.BUILTIN_PII[kind](m.normalize(text)) is found


@pytest.mark.parametrize(
    ("raw", "seen"),
    [
        ("\uff14\uff11\uff11\uff11", "4111"),  # fullwidth digits
        ("\u0664\u0661\u0661\u0661", "4111"),  # Arabic-Indic digits
        ("\U0001d7d2\U0001d7cf", "41"),  # mathematical bold
        ("\u2463", "4"),  # circled digit
        ("a\uff20b", "a@b"),  # fullwidth @
        ("4\u200b1\u200c1\u200d1\u20601\ufeff1\u00ad1", "4111111"),  # format characters
        ("4\u20101\u20111\u20121\u20131\u20141\u22121", "4-1-1-1-1-1-1"),  # dashes, minus
        ("4\u00a01\u20071\u20091\u30001\u202f1", "4 1 1 1 1 1"),  # spaces
        ("4\u00b71\u20241\u30fb1", "4.1.1.1"),  # dot look-alikes
        ("4\u22151\u20441", "4/1/1"),  # slash look-alikes
        ("4\x001\n1\t1", "4 1 1 1"),  # controls
        ("e\u0301", "\u00e9"),  # composed, not stripped
        ("\u0441ard_numb\u0435r", "card_number"),  # Cyrillic look-alikes
        ("caf\u00e9 Z\u00fcrich", "caf\u00e9 Z\u00fcrich"),
    ],
)
def test_normalize(m, raw, seen):
    assert m.normalize(raw) == seen


def test_key_form(m):
    forms = {m.key_form(k) for k in ("card_number", "Card-Number", "CARD NUMBER", "cardNumber")}
    assert forms == {"cardnumber"}
    assert m.key_form("\uff43ard\u200b_number") == "cardnumber"
    assert m.key_form("card_numbers") != "cardnumber"


def test_card_networks(m):
    assert m.card_ok("4111111111111111") and m.card_ok("378282246310005")
    assert not m.card_ok("378282246310005"[:14] + "0")
    assert not m.card_ok("1234567812345670")  # Luhn-valid, no network
    assert not m.card_ok("5555555555554444"[:-1])  # Mastercard is 16 digits


def test_number_forms(m):
    value, _ = m.extract_json('{"a": 4.111111111111111e15, "b": 12.50, "c": 7}')
    assert m._number_forms(value["a"]) == [
        "4.111111111111111e15",
        "4111111111111111.0",
        "4111111111111111",
    ]
    assert m._number_forms(value["b"]) == ["12.50", "12.5"]
    assert m._number_forms(value["c"]) == ["7"]


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
    (
        "prose-around",
        "Here: " + j(GOOD),
        {"rules": RULES},
        False,
        0.0,
        ["not JSON: the response is not one JSON document"],
    ),
    ("second-document", j(GOOD) + j(GOOD), {"rules": RULES}, False, 0.0, ["a second document"]),
    (
        "duplicate-key",
        '{"order_id": "A-1", "items": [], "total": 1, "currency": "EUR", "currency": "USD"}',
        {"rules": RULES},
        False,
        0.0,
        ["duplicate key"],
    ),
    ("nan", '{"total": NaN}', {"rules": RULES}, False, 0.0, ["NaN is not JSON"]),
    (
        "pii-in-key",
        {**GOOD, "meta": {"jane@example.com": 1}},
        {"rules": RULES},
        False,
        0.0,
        ["email found in a key of meta"],
    ),
    (
        "pii-card-float",
        {**GOOD, "pan": 4111111111111111.0},
        {"rules": RULES},
        False,
        0.0,
        ["credit_card found at pan"],
    ),
    (
        "pii-card-split-array",
        {**GOOD, "pan": ["4111", "1111", "1111", "1111"]},
        {"rules": RULES},
        False,
        0.0,
        ["credit_card found split across the values under (root)"],
    ),
    (
        "pii-card-split-scoped",
        {**GOOD, "pan": {"a": 4111, "b": 1111, "c": 1111, "d": 1111}},
        {"rules": [{"kind": "pii_patterns", "patterns": ["credit_card"], "paths": ["pan"]}]},
        False,
        0.0,
        ["credit_card found split across the values under pan"],
    ),
    (
        "pii-custom-split",
        {**GOOD, "who": ["EMP-", "123456"]},
        {"rules": RULES},
        False,
        0.0,
        ["employee_id found split across the elements of who"],
    ),
    (
        "pii-custom-unicode-dash",
        {**GOOD, "who": "EMP\u2011123456"},
        {"rules": RULES},
        False,
        0.0,
        ["employee_id found at who"],
    ),
    (
        "forbidden-lookalike-key",
        {**GOOD, "customer": {"SSN": "x"}},
        {"rules": RULES},
        False,
        0.0,
        ["customer.SSN is forbidden but present"],
    ),
    (
        "range-lookalike-key",
        {"a": 1, "Total": 10**6},
        {"rules": [{"kind": "value_range", "path": "total", "max": 10, "optional": True}]},
        False,
        0.0,
        ["Total = 1000000 is outside"],
    ),
    (
        "required-needs-the-exact-key",
        {**{k: v for k, v in GOOD.items() if k != "order_id"}, "Order-ID": "A-1"},
        {"rules": RULES},
        False,
        0.0,
        ["order_id is required but missing"],
    ),
    (
        "honest-numbers-do-not-combine",
        {
            **GOOD,
            "order_ids": [40012, 125034, 34567],
            "amounts": [450, 1200, 3400, 560],
            "customer_id": 40012345,
            "invoice": 12345678,
            "years": [2021, 2022, 2023, 2024],
        },
        {"rules": RULES},
        True,
        1.0,
        ["all 5"],
    ),
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


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_red_team_battery_holds(python):
    """The kind's battery in one batch: every hack fails, every control meets its expectation."""
    battery, wrong = battery_verdicts_wrong(NAME, python=python)
    assert not wrong
    assert len(battery.hacks) >= 20 and len(battery.controls) >= 5


def test_battery_covers_the_known_classes():
    classes = {h.hack for h in load_battery(NAME).hacks}
    assert {
        "pii-in-keys",
        "pii-as-number",
        "unicode-digits",
        "unicode-symbols",
        "invisible-separators",
        "separator-variants",
        "split-across-array",
        "split-across-values",
        "unicode-dashes",
        "unicode-spaces",
        "prose-outside-json",
        "second-document",
        "duplicate-keys",
    } <= classes


def test_few_false_positives_on_honest_numbers(m):
    """Random order-like payloads (ids, amounts, quantities, dates, SKUs): PII-free by
    construction, so every hit is a false positive; the checksums keep them rare."""
    import random

    rng = random.Random(7)
    hits = 0
    for _ in range(2000):
        items = [
            {"sku": f"AB-{rng.randint(1000, 9999)}", "qty": rng.randint(1, 500),
             "unit_price": round(rng.uniform(1, 5000), 2), "line_id": rng.randint(1, 10**7)}
            for _ in range(rng.randint(1, 5))
        ]  # fmt: skip
        payload = {
            "order_id": rng.randint(10**4, 10**9),
            "customer_id": rng.randint(10**3, 10**8),
            "amount": round(rng.uniform(1, 99999), 2),
            "amounts": [rng.randint(1, 10 ** rng.randint(1, 5)) for _ in range(rng.randint(0, 6))],
            "date": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            "items": items,
            "note": f"order {rng.randint(1000, 99999)} shipped {rng.randint(1, 28)}.3.2024",
        }
        passed, _, _ = m.check(
            {"response": j(payload), "reference": {"rules": [{"kind": "pii_patterns"}]}}, 5.0
        )
        hits += not passed
    assert hits <= 10  # 0.5 %
