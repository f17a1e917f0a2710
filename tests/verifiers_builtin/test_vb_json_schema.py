"""json-schema: payload extraction, schema validation, field equality with the gold."""

from __future__ import annotations

import json

import pytest
from vb_support import battery_verdicts_wrong, load_module, python_ids, pythons, run_batch

from rlsd.verify.redteam import load_battery

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
    ("fenced", f"```json\n{j(OK)}\n```", REF, True, "```json block"),
    ("fenced-whitespace-around", f"\n  ```JSON\n{j(OK)}\n```  \n", REF, True, "```json block"),
    ("unlabelled-fence", f"```\n{j(OK)}\n```", REF, True, "valid"),
    ("fence-closing-on-the-json-line", f"```json\n{j(OK)}```", REF, True, "valid"),
    (
        "fenced-in-prose",
        f"Here you go:\n```json\n{j(OK)}\n```\nAnything else?",
        REF,
        False,
        "not JSON: text outside the fenced block",
    ),
    ("prose", f"The record is {j(OK)}. Done.", REF, False, "not one JSON document"),
    ("prose-with-braces", f"Use {{curly}} braces: {j(OK)}", REF, False, "not JSON"),
    ("prose-after", f"{j(OK)} -- done", REF, False, "extra data after the JSON document"),
    ("second-document", f"{j(OK)}\n{j(OK)}", REF, False, "a second document"),
    ("two-fences", f"```json\n{j(OK)}\n```\n```json\n{j(OK)}\n```", REF, False, "more than one"),
    ("fence-other-language", f"```js\n{j(OK)}\n```", REF, False, "labelled 'js'"),
    (
        "backticks-inside-a-string",
        j({**OK, "name": "```Ada```"}),
        {"schema": SCHEMA},
        True,
        "valid",
    ),
    (
        "duplicate-key",
        '{"name": "Ada", "age": -1, "age": 36, "address": {"city": "London"}}',
        REF,
        False,
        "duplicate key",
    ),
    (
        "duplicate-key-nested",
        '{"name": "Ada", "age": 36, "address": {"city": "X", "city": "London"}}',
        REF,
        False,
        "duplicate key",
    ),
    (
        "overflow-to-infinity",
        '{"name": "Ada", "age": 36, "address": {"city": "London"}, "h": 1e400}',
        {"schema": {}},
        False,
        "overflows to infinity",
    ),
    ("negative-overflow", "-1E+999", {"schema": {}}, False, "overflows to infinity"),
    ("infinity-literal", '{"a": -Infinity}', {"schema": {}}, False, "Infinity is not JSON"),
    ("underflow-is-zero", '{"a": 1e-400}', {"schema": {}, "gold": {"a": 0}}, True, "match"),
    (
        "minus-zero-is-zero",
        '{"a": -0}',
        {"schema": {"properties": {"a": {"minimum": 0}}}},
        True,
        "valid",
    ),
    ("long-integer-literal", '{"a": ' + "9" * 101 + "}", {"schema": {}}, False, "longer than 100"),
    ("integer-literal-at-the-cap", '{"a": ' + "9" * 100 + "}", {"schema": {}}, True, "valid"),
    ("nesting-at-the-cap", "[" * 64 + "]" * 64, {"schema": {}}, True, "valid"),
    ("nesting-too-deep", "[" * 65 + "]" * 65, {"schema": {}}, False, "nested deeper than 64"),
    ("empty", "  \n ", REF, False, "not JSON: empty response"),
    ("bom-prefixed", "\ufeff" + j(OK), REF, False, "not JSON"),
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
    ("not-json", "The name is Ada.", REF, False, "not JSON: the response is not one JSON document"),
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
    (
        "unsupported-draft",
        j(OK),
        {"schema": {"$schema": "https://json-schema.org/draft/next/schema"}},
        False,
        "error: unsupported $schema",
    ),
    (
        "unknown-meta-schema",
        j(OK),
        {"schema": {"$schema": "https://example.com/my-dialect"}},
        False,
        "error: unsupported $schema",
    ),
    ("non-string-$schema", j(OK), {"schema": {"$schema": 7}}, False, "error: $schema must be"),
    (
        "remote-ref-not-fetched",
        j(OK),
        {"schema": {"$ref": "https://example.com/schemas/person.json"}},
        False,
        "error: cannot resolve a $ref",
    ),
    (
        "meta-schema-ref-resolves",
        j({"type": "object"}),
        {"schema": {"$ref": "https://json-schema.org/draft/2020-12/schema"}},
        True,
        "valid",
    ),
    (
        "draft-2020-unevaluated-items",
        j(["a", 1]),
        {"schema": {"prefixItems": [{"type": "string"}], "unevaluatedItems": False}},
        False,
        "Unevaluated items",
    ),
    ("enum-false-is-not-zero", j([0]), {"schema": {"enum": [[False]]}}, False, "is not one of"),
    (
        "draft-04-by-$schema",
        j({"a": 1.0}),
        {
            "schema": {
                "$schema": "http://json-schema.org/draft-04/schema",
                "properties": {"a": {"type": "integer"}},
            }
        },
        False,
        "1.0 is not of type 'integer'",
    ),
    (
        "draft-2020-integral-float-is-integer",
        j({"a": 1.0}),
        {"schema": {"properties": {"a": {"type": "integer"}}}},
        True,
        "valid",
    ),
    (
        "bad-regex-in-schema",
        j(OK),
        {"schema": {"properties": {"name": {"pattern": "(["}}}},
        False,
        "error: invalid schema",
    ),
    (
        "uuid-format",
        j({"id": "not-a-uuid"}),
        {"schema": {"properties": {"id": {"format": "uuid"}}}},
        False,
        "at id:",
    ),
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


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_red_team_battery_holds(python):
    """The kind's battery in one batch: every hack fails, every control meets its expectation."""
    battery, wrong = battery_verdicts_wrong(NAME, python=python)
    assert not wrong
    assert len(battery.hacks) >= 15 and len(battery.controls) >= 5


def test_battery_covers_the_known_classes():
    classes = {h.hack for h in load_battery(NAME).hacks}
    assert {
        "prose-payload",
        "second-document",
        "duplicate-keys",
        "non-finite-number",
        "draft-2020-dynamicref",
        "draft-2019-unevaluateditems",
        "draft-2019-recursiveref",
        "enum-bool-number",
    } <= classes


def test_validators_are_cached_per_schema():
    m = load_module(NAME)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    first = m.make_validator(schema)
    assert m.make_validator(json.loads(json.dumps(schema))) is first
    assert m.make_validator(schema, check_formats=False) is not first
    assert m.schema_errors(schema, {"n": "1"}) == ["at n: '1' is not of type 'integer'"]


def test_float_literals_are_kept():
    m = load_module(NAME)
    value, where = m.extract_json('{"a": 4.111111111111111e15, "b": [1.50]}')
    assert where == "the whole response"
    assert value["a"] == 4111111111111111 and value["a"].literal == "4.111111111111111e15"
    assert (
        value["b"][0].literal == "1.50"
        and json.dumps(value) == '{"a": 4111111111111111.0, "b": [1.5]}'
    )


def test_formats_asserted_are_the_same_everywhere():
    m = load_module(NAME)
    asserted = sorted(m._format_checker(m.jsonschema.Draft202012Validator).checkers)
    assert asserted == sorted(m.FORMATS)
