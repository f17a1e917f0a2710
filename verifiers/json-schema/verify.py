#!/usr/bin/env python3
"""json-schema: the payload is one JSON document, valid against a JSON Schema, and named fields
equal the gold.

Item: ``{"id", "response": "<one JSON document, or one ```json fenced block>", "reference":
{"schema": {...}, "gold": {...}, "fields": ["a", "b.c", ["key.with.dots"]], "check_formats":
true}}``.

Payload (strict, the same rules as policy-rules): the whole response, or a single ```json (or
unlabelled) fenced block with only whitespace outside it; prose around it, a second document or
a second block fail. No duplicate keys (anywhere), no NaN / Infinity, no number literal that
overflows to infinity (``1e400``) or is longer than 100 characters, at most 64 levels of
nesting, at most 1,000,000 characters. ``-0`` is the number 0.

Schema: ``$schema`` picks the draft; without it, Draft 2020-12. Claimed drafts, each passing the
official JSON-Schema-Test-Suite (tests/verifiers_builtin/test_vb_json_schema_suite.py): 3, 4, 6,
7, 2019-09 and 2020-12. Any other ``$schema`` (draft-next, an unknown URI) is an error of the
item, never a guess. ``$ref`` resolves within the schema and to the drafts' meta-schemas only:
nothing is fetched. ``format`` is asserted (unless ``"check_formats": false``) for the formats
the library checks without extra packages: date, email, idn-email, ipv4, ipv6, regex, uuid.
Without ``fields`` every top-level key of ``gold`` is compared; without ``gold`` only the schema
is checked. Runs on a pinned jsonschema 4.26.0 (with attrs, referencing, rpds-py,
jsonschema-specifications, typing-extensions) that ``prepare.py`` vendors into ``build/``
(``vendor.zip`` beside this file in the image), not on the base image's jsonschema 4.10.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from collections import OrderedDict

# The shared modules (`shared:` in verifier.yaml) sit beside this file in the image (/verifier)
# and in build/ when it runs from the verifier's folder.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # the image's /verifier is read-only; keep build/ clean locally
sys.path[:0] = [p for p in (HERE, os.path.join(HERE, "build")) if p not in sys.path]

# The vendored jsonschema (prepare.py): vendor.zip and the rpds extension beside it, in the
# same two places.
for _where in (HERE, os.path.join(HERE, "build")):
    if os.path.isfile(os.path.join(_where, "vendor.zip")):
        sys.path[:0] = [os.path.join(_where, "vendor.zip"), _where]
        break

try:
    import jsonschema
    from jsonschema import validators

    _SPECIFICATIONS = validators.SPECIFICATIONS  # jsonschema >= 4.18 (referencing)
except (ImportError, AttributeError) as _exc:  # pragma: no cover - a broken image, loudly
    print(
        f"json-schema: no usable jsonschema ({_exc}); run prepare.py to vendor the pinned one",
        file=sys.stderr,
    )
    raise SystemExit(2) from None

from json_payload import (  # noqa: E402
    extract_json,
    json_equal,
    lookup,
    show_path,
    show_value,
    split_path,
)
from verifier_protocol import serve  # noqa: E402

DEFAULT_TIMEOUT_S = 5.0
MAX_ERRORS_SHOWN = 5


# ---------------------------------------------------------------------------------------------
# Schema validation.
#: The drafts this verifier claims (the meta-schema URI each declares) and their validators.
DRAFTS = {
    "http://json-schema.org/draft-03/schema#": jsonschema.Draft3Validator,
    "http://json-schema.org/draft-04/schema#": jsonschema.Draft4Validator,
    "http://json-schema.org/draft-06/schema#": jsonschema.Draft6Validator,
    "http://json-schema.org/draft-07/schema#": jsonschema.Draft7Validator,
    "https://json-schema.org/draft/2019-09/schema": jsonschema.Draft201909Validator,
    "https://json-schema.org/draft/2020-12/schema": jsonschema.Draft202012Validator,
}
DEFAULT_DRAFT = jsonschema.Draft202012Validator
#: The formats asserted: those whose checks need no package beyond the vendored ones, so the
#: set is the same on every interpreter (jsonschema adds others when optional packages happen to
#: be importable). draft3's "time" is stdlib-only too; its "ip-address" is ipv4.
FORMATS = ("date", "email", "idn-email", "ipv4", "ipv6", "regex", "uuid")
_DRAFT3_FORMATS = ("date", "email", "ip-address", "ipv6", "regex", "time")
_BY_URI = {uri.rstrip("#"): cls for uri, cls in DRAFTS.items()}
_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 128


class SchemaProblem(ValueError):
    """The reference's schema cannot be used (invalid, unsupported draft, unresolvable $ref)."""


def _draft_of(uri, registry, hops: int = 0):
    if not isinstance(uri, str):
        raise SchemaProblem("$schema must be a string")
    cls = _BY_URI.get(uri.rstrip("#"))
    if cls is not None:
        return cls
    if registry is not None and hops < 4:  # a custom meta-schema: the draft it is written in
        with contextlib.suppress(Exception):
            meta = registry.contents(uri.rstrip("#"))
            if isinstance(meta, dict) and "$schema" in meta and meta["$schema"] != uri:
                return _draft_of(meta["$schema"], registry, hops + 1)
    raise SchemaProblem(
        f"unsupported $schema {uri[:100]!r} (supported: drafts 3, 4, 6, 7, 2019-09, 2020-12)"
    )


@functools.cache
def _format_checker(cls):
    names = _DRAFT3_FORMATS if cls is jsonschema.Draft3Validator else FORMATS
    checker = jsonschema.FormatChecker(formats=())
    checker.checkers = {k: v for k, v in cls.FORMAT_CHECKER.checkers.items() if k in names}
    return checker


def validator_class(schema, registry=None, default=DEFAULT_DRAFT):
    """The validator class for ``schema``'s ``$schema`` (``default`` when it has none)."""
    if isinstance(schema, bool):
        return default
    if not isinstance(schema, dict):
        raise SchemaProblem(f"a schema is an object or a boolean, not {type(schema).__name__}")
    if "$schema" not in schema:
        return default
    return _draft_of(schema["$schema"], registry)


def make_validator(schema, check_formats: bool = True, registry=None, default=DEFAULT_DRAFT):
    """A validator for ``schema`` (checked against its draft's meta-schema), cached per schema.

    ``registry`` (a ``referencing.Registry``) serves extra resources for ``$ref`` (the test
    suite's remotes); by default only the drafts' meta-schemas resolve and nothing is fetched.
    """
    key = None
    if registry is None:
        key = (json.dumps(schema, sort_keys=True), bool(check_formats), default.__name__)
        cached = _CACHE.get(key)
        if cached is not None:
            _CACHE.move_to_end(key)
            return cached
    cls = validator_class(schema, registry, default)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = show_path(list(exc.absolute_path))
        raise SchemaProblem(f"invalid schema (at {where}): {exc.message[:300]}") from None
    checker = _format_checker(cls) if check_formats else None
    validator = cls(
        schema,
        format_checker=checker,
        registry=_SPECIFICATIONS if registry is None else registry,
    )
    if key is not None:
        _CACHE[key] = validator
        if len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return validator


def schema_errors(
    schema, payload, check_formats: bool = True, registry=None, default=DEFAULT_DRAFT
) -> list[str]:
    """Every way ``payload`` violates ``schema`` ([] = valid); SchemaProblem for a bad schema."""
    validator = make_validator(schema, check_formats, registry, default)
    problems = []
    try:
        for error in validator.iter_errors(payload):
            message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
            problems.append(f"at {show_path(list(error.absolute_path))}: {message}")
    except RecursionError:
        raise SchemaProblem("the schema recurses without end on this payload") from None
    except jsonschema.SchemaError as exc:
        raise SchemaProblem(f"invalid schema: {exc.message[:300]}") from None
    except Exception as exc:  # referencing.exceptions.Unresolvable and the like
        if type(exc).__module__.split(".")[0] not in ("referencing", "jsonschema"):
            raise
        raise SchemaProblem(f"cannot resolve a $ref: {str(exc)[:300]}") from None
    return sorted(problems)


def _reference(item: dict) -> dict:
    reference = item.get("reference")
    if isinstance(reference, str):
        with contextlib.suppress(ValueError):
            reference = json.loads(reference)
    if not isinstance(reference, dict) or not isinstance(reference.get("schema"), dict | bool):
        raise ValueError("the reference needs {'schema': {...}} (plus optional gold and fields)")
    return reference


def check(item: dict, timeout: float) -> tuple[bool, float, str]:
    try:
        reference = _reference(item)
    except ValueError as exc:
        return False, 0.0, f"error: {exc}"
    response = item.get("response")
    if not isinstance(response, str):
        return False, 0.0, f"not JSON: response is not a string (got {type(response).__name__})"
    try:
        payload, where = extract_json(response)
    except ValueError as exc:
        return False, 0.0, f"not JSON: {exc}"
    try:
        problems = schema_errors(reference["schema"], payload, reference.get("check_formats", True))
    except SchemaProblem as exc:
        return False, 0.0, f"error: {exc}"
    if problems:
        shown = "; ".join(problems[:MAX_ERRORS_SHOWN])
        more = (
            f" (+{len(problems) - MAX_ERRORS_SHOWN} more)"
            if len(problems) > MAX_ERRORS_SHOWN
            else ""
        )
        return False, 0.0, f"schema: {len(problems)} error(s): {shown}{more}"
    gold = reference.get("gold")
    fields = reference.get("fields")
    if fields is None:
        fields = [[key] for key in gold] if isinstance(gold, dict) else []
    if not isinstance(fields, list):
        return False, 0.0, "error: reference.fields must be a list of paths"
    if fields and "gold" not in reference:
        return False, 0.0, "error: reference.fields given without reference.gold"
    mismatches = []
    for field in fields:
        try:
            parts = split_path(field)
        except ValueError as exc:
            return False, 0.0, f"error: {exc}"
        try:
            want = lookup(gold, parts)
        except KeyError:
            return False, 0.0, f"error: the gold has no field {show_path(parts)}"
        try:
            got = lookup(payload, parts)
        except KeyError:
            mismatches.append(f"{show_path(parts)}: missing, expected {show_value(want)}")
            continue
        if not json_equal(got, want):
            mismatches.append(f"{show_path(parts)}: {show_value(got)} != gold {show_value(want)}")
    if mismatches:
        return (
            False,
            0.0,
            f"fields differ from gold ({len(mismatches)}/{len(fields)}): "
            + "; ".join(mismatches[:MAX_ERRORS_SHOWN]),
        )
    matched = f"; {len(fields)} field(s) match gold" if fields else ""
    return True, 1.0, f"valid JSON ({where}) against the schema{matched}"


if __name__ == "__main__":
    sys.exit(serve(check, default_timeout=DEFAULT_TIMEOUT_S))
