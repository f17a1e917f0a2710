"""json-schema: payload extraction, schema validation, field equality with the gold."""

from __future__ import annotations

import json

import pytest
from vb_support import python_ids, pythons, run_batch

NAME = "json-schema"

SCHEMA = {
    "type": "object",
    "required": ["name", "age", "address"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "born": {"type": "string", "format": "date"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "required": ["city"],
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
        },
    },
}
GOLD = {"name": "Ada", "age": 36, "address": {"city": "London", "zip": "N1"}, "tags": ["a", "b"]}
REF = {"schema": SCHEMA, "gold": GOLD, "fields": ["name", "address.city"]}
OK = {"name": "Ada", "age": 36, "address": {"city": "London"}}


def j(value) -> str:
    return json.dumps(value)


CASES = [
    # (id, response, reference, passes, detail substring)
    ("plain", j(OK), REF, True, "2 field(s) match gold"),
    ("fenced", f"Here you go:\n```json\n{j(OK)}\n```\nAnything else?", REF, True, "```json block"),
    ("unlabelled-fence", f"```\n{j(OK)}\n```", REF, True, "valid"),
    ("prose", f"The record is {j(OK)}. Done.", REF, True, "first JSON object"),
    ("prose-with-braces", f"Use {{curly}} braces: {j(OK)}", REF, True, "valid"),
    ("pretty-printed", json.dumps(OK, indent=2), REF, True, "valid"),
    ("unnamed-field-differs", j({**OK, "age": 99}), REF, True, "valid"),
    (
        "int-vs-float-equal",
        j(OK),
        {**REF, "gold": {**GOLD, "age": 36.0}, "fields": ["age"]},
        True,
        "match",
    ),
    ("wrong-type", j({**OK, "age": "36"}), REF, False, "schema: 1 error(s): at age:"),
    ("negative", j({**OK, "age": -1}), REF, False, "at age:"),
    (
        "missing-required",
        j({"name": "Ada", "age": 1}),
        REF,
        False,
        "'address' is a required property",
    ),
    ("extra-property", j({**OK, "x": 1}), REF, False, "Additional properties"),
    ("nested-error", j({**OK, "address": {"zip": 1}}), REF, False, "at address:"),
    ("bad-date-format", j({**OK, "born": "yesterday"}), REF, False, "at born:"),
    ("good-date-format", j({**OK, "born": "1815-12-10"}), REF, True, "valid"),
    ("formats-off", j({**OK, "born": "yesterday"}), {**REF, "check_formats": False}, True, "valid"),
    (
        "field-differs",
        j({**OK, "address": {"city": "Paris"}}),
        REF,
        False,
        'address.city: "Paris" != gold "London"',
    ),
    ("field-missing", j(OK), {**REF, "fields": ["address.zip"]}, False, "address.zip: missing"),
    (
        "array-index-path",
        j({**OK, "tags": ["a", "x"]}),
        {**REF, "fields": ["tags.0"]},
        True,
        "match",
    ),
    (
        "array-index-differs",
        j({**OK, "tags": ["a", "x"]}),
        {**REF, "fields": ["tags.1"]},
        False,
        "tags.1",
    ),
    (
        "list-path",
        j({"a.b": 1}),
        {"schema": {}, "gold": {"a.b": 1}, "fields": [["a.b"]]},
        True,
        "match",
    ),
    (
        "all-gold-keys-by-default",
        j({**OK, "age": 1}),
        {"schema": {}, "gold": {"name": "Ada", "age": 36}},
        False,
        "age: 1 != gold 36",
    ),
    ("schema-only", j(OK), {"schema": SCHEMA}, True, "valid"),
    (
        "bool-is-not-number",
        j({"a": True}),
        {"schema": {}, "gold": {"a": 1}, "fields": ["a"]},
        False,
        "true != gold 1",
    ),
    (
        "null-vs-missing",
        j({"a": None}),
        {"schema": {}, "gold": {"a": None}, "fields": ["a"]},
        True,
        "match",
    ),
    (
        "draft-07-by-$schema",
        j({"a": 1}),
        {
            "schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "properties": {"a": {"type": "string"}},
            }
        },
        False,
        "at a:",
    ),
    ("reference-as-json-string", j(OK), json.dumps({"schema": SCHEMA}), True, "valid"),
    ("not-json", "The name is Ada.", REF, False, "not JSON: no JSON object"),
    (
        "nan-rejected",
        '{"name": "Ada", "age": NaN, "address": {"city": "London"}}',
        REF,
        False,
        "not JSON",
    ),
    ("truncated", j(OK)[:-5], REF, False, "not JSON"),
    ("deeply-nested", "[" * 50_000 + "]" * 50_000, REF, False, "not JSON"),
    ("array-payload", j([1, 2]), {"schema": {"type": "array"}}, True, "valid"),
    ("invalid-schema", j(OK), {"schema": {"type": 12}}, False, "error: invalid schema"),
    ("no-schema", j(OK), {"gold": GOLD}, False, "error: the reference needs"),
    (
        "gold-lacks-field",
        j(OK),
        {**REF, "fields": ["nope"]},
        False,
        "error: the gold has no field nope",
    ),
    ("non-string-response", None, REF, False, "not JSON"),
]


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_table(python):
    items = [{"id": c[0], "response": c[1], "reference": c[2]} for c in CASES]
    results = run_batch(NAME, items, python=python)
    wrong = [
        (case[0], r["passed"], r["detail"])
        for case, r in zip(CASES, results, strict=True)
        if r["passed"] is not case[3] or case[4] not in r["detail"]
    ]
    assert not wrong
