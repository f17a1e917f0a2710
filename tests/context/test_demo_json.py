"""JSON extraction tasks: determinism, gold vs schema, json-schema verifier, PII only where meant."""

from __future__ import annotations

import copy
import json
import re
import sqlite3
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

from rlsd.demo import documents as demo_json
from rlsd.demo.documents import JsonTask, generate_json_tasks

REPO = Path(__file__).resolve().parents[2]

# Deliberately broader than a redaction policy's detectors (no Luhn / mod-97 / digit-count
# checks): student-visible text must not even look like personal data.
STUDENT_PII = {
    "email": re.compile(r"@"),
    "phone": re.compile(
        r"\+\s?\d|\(\d{2,5}\)\s?\d|(?<!\d)\d{3}[ .-]\d{3}[ .-]\d{4}(?!\d)|(?<![\d.,])\d{3}-\d{4}(?!\d)"
    ),
    "card_number": re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])"),
    "iban": re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,}"),
    "national_id": re.compile(
        r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)|(?<![A-Za-z0-9])[A-Z]{2} ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b"
    ),
}
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@([A-Za-z0-9.-]+)")
FICTION_PHONE = re.compile(
    r"\+44 20 7946 0\d{3}|\+44 161 496 0\d{3}|\+1 \((?:202|312|415|617)\) 555-01\d{2}"
)
IBAN = re.compile(r"GB\d{2}(?: [A-Z0-9]{4}){4} \d{2}")
CARD = re.compile(r"\d{4} \d{4} \d{4} \d{4}")


def _load_verifier(name: str) -> ModuleType:
    """verifiers/<name>/verify.py as a module, its shared modules copied in first (as both
    sandboxes do before running it)."""
    from tests.verifiers_builtin.vb_support import load_module

    return load_module(name)


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d * 2 > 9 else d * 2)
                for i, d in enumerate(reversed(digits)))  # fmt: skip
    return total % 10 == 0


def _mod97(iban: str) -> bool:
    s = iban.replace(" ", "")
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _numeric_field(task: JsonTask, payload: dict) -> tuple[str, Any, Any]:
    """(path, container, key) of the first compared field whose value is a number."""
    for path in task.fields:
        holder: Any = payload
        parts = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in parts[:-1]:
            holder = holder[p]
        value = holder[parts[-1]]
        if isinstance(value, int | float) and not isinstance(value, bool):
            return path, holder, parts[-1]
    raise AssertionError(f"{task.task_id}: no numeric field among {task.fields}")


@pytest.fixture(scope="module")
def json_schema() -> ModuleType:
    return _load_verifier("json-schema")


@pytest.fixture(scope="module")
def tasks() -> list[JsonTask]:
    return generate_json_tasks()


def test_size_types_and_unique_ids(tasks: list[JsonTask]) -> None:
    assert len(tasks) == demo_json.DEFAULT_N == 150
    per_type = Counter(t.doc_type for t in tasks)
    assert set(per_type) == set(demo_json.DOC_TYPES) and len(per_type) == 5
    assert min(per_type.values()) == 30
    ids = [t.task_id for t in tasks]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(rf"json-{t.doc_type}-[0-9a-f]{{8}}", t.task_id) for t in tasks)


def test_deterministic_by_seed_and_stable_under_size(tasks: list[JsonTask]) -> None:
    assert generate_json_tasks() == tasks
    assert generate_json_tasks(12) == tasks[:12]  # a record does not depend on n
    other = generate_json_tasks(20, seed=1)
    assert not {t.task_id for t in other} & {t.task_id for t in tasks[:20]}


def test_every_gold_validates_against_its_schema(tasks: list[JsonTask]) -> None:
    for t in tasks:
        ref = json.loads(t.answer)
        assert set(ref) == {"schema", "gold", "fields"}
        assert ref == json.loads(json.dumps(t.reference))
        validator = jsonschema.Draft202012Validator(
            ref["schema"], format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
        )
        jsonschema.Draft202012Validator.check_schema(ref["schema"])
        assert list(validator.iter_errors(ref["gold"])) == [], t.task_id
        assert len(ref["fields"]) >= 5


def test_gold_passes_the_json_schema_verifier_and_wrong_payloads_fail(
    tasks: list[JsonTask], json_schema: ModuleType
) -> None:
    for t in tasks:
        # the prompt asks for the JSON object only: a lone fenced block is that, prose is not
        response = f"```json\n{json.dumps(t.gold, indent=2)}\n```"
        item = {"id": t.task_id, "response": response, "reference": t.answer}
        passed, score, detail = json_schema.check(item, 5.0)
        assert passed and score == 1.0, (t.task_id, detail)
        chatty = {**item, "response": "Here is the payload:\n" + response}
        passed, _, detail = json_schema.check(chatty, 5.0)
        assert not passed and detail.startswith("not JSON: text outside"), detail

        # a compared numeric field (total, quantity, weight, users) off by one
        wrong = copy.deepcopy(t.gold)
        path, holder, key = _numeric_field(t, wrong)
        holder[key] += 1
        passed, _, detail = json_schema.check({**item, "response": json.dumps(wrong)}, 5.0)
        assert not passed and detail.startswith("fields differ"), (t.task_id, path, detail)

        # a required key missing: the schema rejects it
        missing = {k: v for k, v in t.gold.items() if k != next(iter(t.gold))}
        passed, _, detail = json_schema.check({**item, "response": json.dumps(missing)}, 5.0)
        assert not passed and detail.startswith("schema:"), detail


def test_student_prompts_hold_no_personal_data(tasks: list[JsonTask]) -> None:
    for t in tasks:
        for kind, pattern in STUDENT_PII.items():
            m = pattern.search(t.question)
            assert m is None, (t.task_id, kind, m and t.question[m.start() - 20 : m.end() + 20])


def test_student_prompt_never_contains_the_privileged_note(tasks: list[JsonTask]) -> None:
    def norm(s: str) -> str:
        return " ".join(s.split()).casefold()

    for t in tasks:
        assert t.document in t.question and '"$schema"' in t.question
        assert norm(t.privileged_context) not in norm(t.question)
        assert json.dumps(t.gold, ensure_ascii=False) not in t.question
        assert json.dumps(t.gold, ensure_ascii=False) in t.privileged_context


def test_privileged_notes_carry_only_fictional_pii(tasks: list[JsonTask]) -> None:
    kinds = Counter(k for t in tasks for k in t.pii)
    assert kinds["email"] >= 0.5 * len(tasks) and kinds["phone"] >= 0.3 * len(tasks)
    assert kinds["iban"] >= 3 and kinds["card_number"] >= 3
    assert sum(1 for t in tasks if not t.pii) >= 1  # not every note has PII
    for t in tasks:
        note = t.privileged_context
        domains = EMAIL.findall(note)
        assert ("email" in t.pii) == bool(domains)
        assert all(d.endswith((".example.com", "example.org")) for d in domains), domains
        assert ("phone" in t.pii) == bool(FICTION_PHONE.search(note)), note
        ibans = IBAN.findall(note)
        assert ("iban" in t.pii) == bool(ibans) and all(_mod97(i) for i in ibans)
        cards = CARD.findall(note)
        assert ("card_number" in t.pii) == bool(cards)
        assert all(_luhn(c) and c in demo_json.TEST_CARDS for c in cards)
    assert _mod97("GB82 WEST 1234 5698 7654 32")
    assert demo_json.iban_check_digits("GB", "WEST12345698765432") == "82"


def test_store_holds_json_tasks(demo_store: tuple[Path, dict], tasks: list[JsonTask]) -> None:
    path, summary = demo_store
    assert summary["tasks_per_domain"]["json"] == 150
    con = sqlite3.connect(path)
    try:
        rows = dict(
            con.execute(
                "SELECT t.task_id, t.answer || char(0) || t.split || char(0) || t.verifier "
                "|| char(0) || r.trace || char(0) || r.kind FROM tasks t "
                "JOIN reasoning_traces r ON r.task_id = t.task_id WHERE t.domain = 'json'"
            ).fetchall()
        )
    finally:
        con.close()
    assert set(rows) == {t.task_id for t in tasks}
    for t in tasks:
        answer, split, verifier, trace, kind = rows[t.task_id].split("\0")
        assert (answer, split, verifier, trace, kind) == (
            t.answer, "train", "json-schema", t.privileged_context, "reviewer_note"
        )  # fmt: skip
