"""The privileged-context data policy: PII redaction, student-PII quarantine, the leak guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsd.context import SourceConfig, SourceConfigError, validate_source
from rlsd.context.policy import (
    PrivilegedContextPolicy,
    RedactionSettings,
    Redactor,
    leak_findings,
    load_privileged_policy,
)
from tests.helpers.context_store import GOOD_ROWS, VERIFIERS, make_store

REPO_POLICY = Path(__file__).resolve().parents[2] / "policies" / "privileged_context.yaml"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to a.novak@finance.example.com today", "email"),
        ("call +44 20 7946 0958 after six", "phone"),
        ("call (555) 555-0123 after six", "phone"),
        ("call 555-555-0199 after six", "phone"),
        ("card 4111 1111 1111 1111 on file", "card_number"),
        ("card 4111-1111-1111-1111 on file", "card_number"),
        ("pay GB82 WEST 1234 5698 7654 32 now", "iban"),
        ("pay DE89370400440532013000 now", "iban"),
        ("ssn 123-45-6789 on the form", "national_id"),
        ("NINO AB 12 34 56 C on the form", "national_id"),
    ],
)
def test_builtin_detectors_redact_their_pii(text: str, kind: str) -> None:
    redacted, counts = Redactor().redact(text)
    assert counts == {kind: 1}
    words = text.split()
    # exactly the PII is replaced: the words around it survive
    assert redacted.startswith(words[0] + " ") and redacted.endswith(" " + words[-1])
    assert f"[REDACTED:{kind}]" in redacted
    assert not any(ch.isdigit() for ch in redacted.replace(f"[REDACTED:{kind}]", ""))


@pytest.mark.parametrize(
    "text",
    [
        # arithmetic and GSM8K-style traces: digit runs that are not PII
        "6000-600-150-1200-2000 = 2050",
        "<<48/2=24>>24 and 16-3-4=9 eggs",
        "2024-01-15 was a Monday; 10 20 30 40 50",
        "4111 1111 1111 1112 fails the Luhn check",
        "GB82 WEST 1234 5698 7654 33 fails mod 97",
        "the answer is 1234567890123",
        "000-12-3456 is never issued",
    ],
)
def test_detectors_leave_non_pii_alone(text: str) -> None:
    assert Redactor().redact(text) == (text, {})


def _iban(country: str, bban: str) -> str:
    """A valid IBAN: check digits by ISO 13616 (mod 97)."""
    n = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - n % 97:02d}{bban}"


def test_an_iban_is_not_mistaken_for_a_card_number() -> None:
    from rlsd.context.policy import _luhn_ok

    # a UK IBAN whose 14 account digits alone pass the Luhn check, like a card number
    digits = next(d for d in (f"{k:014d}" for k in range(10**13, 10**13 + 50)) if _luhn_ok(d))
    iban = _iban("GB", "WEST" + digits)
    spaced = " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    for text in (iban, spaced):
        assert Redactor().redact(f"pay {text} today") == ("pay [REDACTED:iban] today", {"iban": 1})


def test_custom_patterns_and_placeholder() -> None:
    settings = RedactionSettings(
        builtin=["email"],
        custom=[{"name": "employee_id", "pattern": r"\bEMP-[0-9]{6}\b"}],
        replacement="<{name}>",
    )
    red, counts = Redactor(settings).redact("EMP-123456 mailed x@y.example.org; EMP-12 no")
    assert red == "<employee_id> mailed <email>; EMP-12 no"
    assert counts == {"employee_id": 1, "email": 1}


def test_repository_policy_loads_and_has_a_stable_digest() -> None:
    policy = load_privileged_policy(REPO_POLICY)
    assert policy.store_privileged_text is False
    assert policy.allows("demo-sql") and not policy.allows("crm-prod")
    assert policy.digest() == load_privileged_policy(REPO_POLICY).digest()
    changed = policy.model_copy(update={"store_privileged_text": True})
    assert changed.digest() != policy.digest()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("allowed_sources: []\n", "allowed_sources"),
        ("allowed_sources: [x]\nredaction: {builtin: [passport]}\n", "'passport'"),
        ("allowed_sources: [x]\nredaction: {custom: [{name: e, pattern: '(['}]}\n", "compile"),
        ("allowed_sources: [x]\nstore_privileged_text: maybe\n", "'maybe'"),
        ("allowed_sources: [x]\nleakage: {min_piece_chars: 2}\n", "leakage.min_piece_chars"),
        ("allowed_sources: [x]\nleakage: {max_covered_fraction: 0}\n", "max_covered_fraction"),
    ],
)
def test_policy_errors_name_file_field_and_value(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "privileged_context.yaml"
    path.write_text(body)
    with pytest.raises(SourceConfigError) as exc:
        load_privileged_policy(path)
    assert str(path) in str(exc.value) and expected in str(exc.value)


def test_leak_findings_catch_raw_redacted_and_remnant() -> None:
    r = Redactor()
    raw = "Verified by ops@corp.example.com: add the two invoices and subtract the credit note."
    red, _ = r.redact(raw)
    assert leak_findings("Q? " + raw, raw, red, r) == ["contains_privileged"]
    assert leak_findings("Q? " + red, raw, red, r) == ["contains_redacted_privileged"]
    # the prompt repeats the privileged text with the e-mail dropped: a redacted remnant
    remnant = "Hint: add the two invoices and subtract the credit note."
    assert leak_findings(remnant, raw, red, r) == ["contains_redacted_remnant"]
    assert leak_findings("What is the invoice total?", raw, red, r) == []
    # a worked solution that restates one sentence of its question is not a remnant
    trace = (
        "Griffin had 24 french fries, but Kyle took 5 of them. 24 - 5 = 19. Billy took twice "
        "as many, 2 * 5 = 10, so 19 - 10 = 9 remain. Ginger gave 9 more: 9 + 9 = 18."
    )
    question = "Griffin had 24 french fries, but Kyle took 5 of them. How many are left?"
    assert leak_findings(question, trace, trace, r) == []


POLICY_ROWS = [
    # privileged text with PII: kept, redacted before it reaches the task
    ("kb-pii-priv", "What is 3 plus 4?", "7",
     "Checked by j.smith@corp.example.com (+44 20 7946 0958): 3 + 4 = 7.", "wiki/p", "math-answer"),
    # PII in student-visible text: quarantined
    ("kb-pii-student", "Mail bob@corp.example.com: what is 5 plus 6?", "11", "5 + 6 = 11.",
     "wiki/s", "math-answer"),
    # the student prompt holds the privileged text minus its redacted e-mail: a remnant leak
    ("kb-remnant", "What is 9 plus 9? Note: add nine and nine, which gives eighteen in total.",
     "18", "ops@corp.example.com says: add nine and nine, which gives eighteen in total.",
     "wiki/r", "math-answer"),
]  # fmt: skip


def _cfg(url: str) -> SourceConfig:
    return SourceConfig.model_validate(
        {
            "name": "kb-policy",
            "url": url,
            "table": "kb",
            "columns": {"id": "ref", "prompt": "ask", "answer": "gold",
                        "privileged_context": "solution", "source": "origin", "verifier": "tool"},
            "domain": "arithmetic",
            "policy": {"max_bad_fraction": 0.5},
        }
    )  # fmt: skip


def test_policy_redacts_privileged_text_and_quarantines_student_pii(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", [*GOOD_ROWS, *POLICY_ROWS])
    policy = load_privileged_policy(REPO_POLICY)
    out = validate_source(
        _cfg(f"sqlite:///{store}"), VERIFIERS, out_dir=tmp_path / "v", policy=policy
    )
    reasons = {q["id"]: q["reasons"] for q in out.quarantined}
    assert reasons == {
        "kb-pii-student": ["expect_column_values_to_be_in_set(student_text_has_email)"],
        "kb-remnant": [
            "expect_column_values_to_be_in_set(student_prompt_contains_redacted_remnant)"
        ],
    }
    task = {t.id: t for t in out.tasks}["kb-pii-priv"]
    assert task.privileged_context == "Checked by [REDACTED:email] ([REDACTED:phone]): 3 + 4 = 7."
    assert out.redactions == {"email": 2, "phone": 1}
    doc = json.loads((tmp_path / "v" / "kb-policy.validation.json").read_text())
    assert doc["rlsd"]["redactions"] == {"email": 2, "phone": 1}
    assert doc["rlsd"]["policy_digest"] == policy.digest()
    evidence = (tmp_path / "v" / "kb-policy.quarantine.jsonl").read_text()
    # the reviewer sees the quarantined rows with their PII redacted too
    assert "bob@corp.example.com" not in evidence and "Mail [REDACTED:email]:" in evidence
    assert "ops@corp.example.com" not in evidence


def test_student_pii_allowed_when_the_policy_says_so(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", [*GOOD_ROWS, *POLICY_ROWS])
    policy = PrivilegedContextPolicy(allowed_sources=["*"], student_pii="allow")
    out = validate_source(_cfg(f"sqlite:///{store}"), VERIFIERS, policy=policy)
    assert [q["id"] for q in out.quarantined] == ["kb-remnant"]


# --------------------------------------------------------------------------------------------
# Redaction forms that used to survive, and the guard under attack (issue 14)


def _luhn_complete(digits: str) -> str:
    """``digits`` plus the check digit that makes it pass the Luhn check."""
    from rlsd.context.policy import _luhn_ok

    return next(digits + d for d in "0123456789" if _luhn_ok(digits + d))


@pytest.mark.parametrize(
    "text",
    [
        "card 4111.1111.1111.1111 on file",
        "card 5500.0000.0000.0004 on file",
        "card 3782.822463.10005 on file",  # Amex grouping 4-6-5
    ],
)
def test_dotted_card_numbers_are_redacted(text: str) -> None:
    redacted, counts = Redactor().redact(text)
    assert (redacted, counts) == ("card [REDACTED:card_number] on file", {"card_number": 1})


def test_dotted_decimals_and_thousands_are_not_card_numbers() -> None:
    # Luhn-valid digit runs, written as numbers are: the Luhn check alone would let them through
    decimal = _luhn_complete("314159265358979")
    thousands = _luhn_complete("123456789012")
    texts = [
        f"pi is about {decimal[0]}.{decimal[1:]}",
        f"the total is {thousands[0]}.{thousands[1:4]}.{thousands[4:7]}.{thousands[7:10]}."
        f"{thousands[10:]}",
        f"version 2.{_luhn_complete('411111111111111')} and {_luhn_complete('411111111111111')}.5",
    ]
    for text in texts:
        assert Redactor().redact(text) == (text, {}), text
    # the same digits grouped like a card are one
    card = _luhn_complete("411111111111111")
    dotted = ".".join(card[i : i + 4] for i in range(0, 16, 4))
    assert Redactor().redact(dotted) == ("[REDACTED:card_number]", {"card_number": 1})


@pytest.mark.parametrize(
    "iban",
    [
        "gb82 west 1234 5698 7654 32",
        "de89370400440532013000",
        "Gb82 West 1234 5698 7654 32",
        "gB82wEsT12345698765432",
        "es91 2100 0418 4502 0005 1332",
        "fr14 2004 1010 0505 0001 3m02 606",
    ],
)
def test_lowercase_and_mixed_case_ibans_are_redacted(iban: str) -> None:
    # a following word that looks like a group of four ('then') is not taken into the IBAN
    for after in ("now", "then", "from x."):
        text = f"pay {iban} {after}"
        assert Redactor().redact(text) == (f"pay [REDACTED:iban] {after}", {"iban": 1}), text


def test_invalid_lowercase_ibans_are_left_alone() -> None:
    for text in (
        "gb82 west 1234 5698 7654 33 fails mod 97",
        "de89370400440532013001 fails too",
        "ab12 cdef ghij klmn opqr is a code",
    ):
        assert Redactor().redact(text) == (text, {}), text


def test_an_iban_after_a_lookalike_prefix_is_still_found() -> None:
    red, counts = Redactor().redact("ref XX00 GB82 WEST 1234 5698 7654 32 ok")
    assert (red, counts) == ("ref XX00 [REDACTED:iban] ok", {"iban": 1})


def test_overlapping_detectors_keep_the_earlier_ones_match() -> None:
    settings = RedactionSettings(
        custom=[
            {"name": "ticket", "pattern": r"corp\.example\.com: \d+"},
            {"name": "word", "pattern": r"[a-z]+"},
        ]
    )
    text = "mail ops@corp.example.com: 42 and x@y.example.org" * 50
    found = Redactor(settings).find(text)
    spans = [(m.start, m.end) for m in found]
    assert all(e <= s2 for (_, e), (s2, _) in zip(spans, spans[1:], strict=False))
    # e-mail first (built-in), the custom ticket never overlaps it, words fill the gaps
    assert {m.kind for m in found} == {"email", "word"}
    assert sum(m.kind == "email" for m in found) == 100


def test_pii_in_fields_names_the_columns_and_kinds() -> None:
    from rlsd.context.policy import pii_in_fields

    fields = {
        "id": "kb-a.novak@finance.example.com",
        "source": "wiki/p",
        "metadata": {"owner": {"phone": "+44 20 7946 0958"}, "cards": [4111111111111111]},
        "provenance": b"exported by gb82west12345698765432",
        "empty": None,
        "count": 3,
    }
    assert pii_in_fields(fields, Redactor()) == {
        "id": ["email"],
        "metadata": ["card_number", "phone"],
        "provenance": ["iban"],
    }
    assert pii_in_fields({"id": "kb-1", "metadata": {"split": "train"}}, Redactor()) == {}
    only_email = Redactor(RedactionSettings(builtin=["email"]))
    assert pii_in_fields(fields, only_email) == {"id": ["email"]}


def test_leak_findings_see_through_disguises() -> None:
    r = Redactor()
    raw = "Verified by ops@corp.example.com: add the two invoices and subtract the credit note."
    red, _ = r.redact(raw)
    cyrillic = str.maketrans("aeopcx", "аеорсх")
    disguised = "\u200b".join(raw).translate(cyrillic)
    assert leak_findings("Q? " + disguised, raw, red, r) == ["contains_privileged"]
    assert leak_findings("Q? " + red.upper().translate(cyrillic), raw, red, r) == [
        "contains_redacted_privileged"
    ]
    remnant = "Hint: ａｄｄ the two invoices and subtract the credit note."
    assert leak_findings(remnant, raw, red, r) == ["contains_redacted_remnant"]


def _sentences(n_chars: int, seed: int) -> str:
    import random

    rnd = random.Random(seed)
    words = ["".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=6)) for _ in range(3000)]
    out, size = [], 0
    while size < n_chars:
        sentence = " ".join(rnd.choices(words, k=3)) + "."
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)


def test_leak_findings_on_2mb_rows() -> None:
    # both texts 2 MB: tens of thousands of pieces, each searched for in the whole student text
    r = Redactor()
    privileged = _sentences(2_000_000, 1)
    honest = _sentences(2_000_000, 2)
    assert leak_findings(honest, privileged, privileged, r) == []
    pieces = privileged.split(". ")
    # three in five pieces restated, out of order, among other text: a redacted remnant
    kept = [p for i, p in enumerate(pieces) if i % 5 < 3]
    remnant = ". ".join(kept[::-1]) + ". " + honest[:500_000]
    assert leak_findings(remnant, privileged, privileged, r) == ["contains_redacted_remnant"]
    # two in five: not enough
    fewer = ". ".join(p for i, p in enumerate(pieces) if i % 5 < 2) + ". " + honest[:500_000]
    assert leak_findings(fewer, privileged, privileged, r) == []
    assert leak_findings(honest + " " + privileged, privileged, privileged, r) == [
        "contains_privileged"
    ]


def test_redaction_of_a_2mb_row_of_iban_lookalikes() -> None:
    # every word starts like an IBAN and is followed by groups of four: each candidate must
    # stop at 34 characters, or finding them is quadratic
    text = "ab12 cdef ghij " * 140_000
    assert Redactor().find(text) == []
    iban = "gb82 west 1234 5698 7654 32"
    red, counts = Redactor().redact(text + iban + " " + text)
    assert counts == {"iban": 1} and red.count("[REDACTED:iban]") == 1
