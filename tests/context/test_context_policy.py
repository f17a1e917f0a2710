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
