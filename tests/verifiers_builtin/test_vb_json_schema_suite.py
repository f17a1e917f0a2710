"""json-schema: the official JSON-Schema-Test-Suite, for every draft the verifier claims.

The suite is not committed: it is the copy that the pinned ``jsonschema`` sdist ships under
``json/`` (``json/tests/<draft>/*.json``, ``json/remotes/``), fetched from PyPI with pip (sha256
pinned) into pytest's cache on first use. ``RLSD_JSON_SCHEMA_TEST_SUITE=/path/to/json`` uses a
local checkout instead (offline). Every required case (not ``optional/``) of every claimed draft
runs against the verifier's own validation function (``schema_errors``), imported from
``verify.py`` after its prepare step in a fresh interpreter -- this venv's and Debian's, the
image's -- so that the vendored jsonschema is the one used, with the suite's remotes served by a
``referencing`` registry; the ``optional/format`` cases of the formats the verifier asserts run
with format assertion on; a sample goes through the program itself (the wire path).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from vb_support import VERIFIERS, prepare, python_ids, pythons, run_batch

NAME = "json-schema"
SDIST = "jsonschema==4.26.0"
SDIST_SHA256 = "0c26707e2efad8aa1bfc5b7ce170f3fccc2e4918ff85989ba9ffa9facb2be326"
TOP = "jsonschema-4.26.0/json/"
REMOTE = "http://localhost:1234"
#: suite folder -> the verifier's validator class for it (all six drafts are claimed)
DRAFTS = {
    "draft3": "Draft3Validator",
    "draft4": "Draft4Validator",
    "draft6": "Draft6Validator",
    "draft7": "Draft7Validator",
    "draft2019-09": "Draft201909Validator",
    "draft2020-12": "Draft202012Validator",
}
META_SCHEMAS = {
    "draft3": "http://json-schema.org/draft-03/schema#",
    "draft4": "http://json-schema.org/draft-04/schema#",
    "draft6": "http://json-schema.org/draft-06/schema#",
    "draft7": "http://json-schema.org/draft-07/schema#",
    "draft2019-09": "https://json-schema.org/draft/2019-09/schema",
    "draft2020-12": "https://json-schema.org/draft/2020-12/schema",
}
_VOCABULARY = (
    "vocabulary",
    "schema that uses custom metaschema with with no validation vocabulary",
    "no validation: invalid number, but it still validates",
)
#: Required cases jsonschema itself fails (its own suite runner skips exactly these): the
#: verifier validates with the full vocabulary of the draft a custom meta-schema is written in.
KNOWN_FAILURES = {
    ("draft2019-09", *_VOCABULARY): "$vocabulary is not honoured (jsonschema: in progress)",
    ("draft2020-12", *_VOCABULARY): "$vocabulary is not honoured (jsonschema: in progress)",
}
#: optional/format/email.json cases that jsonschema's email check ("contains an @") does not
#: reject, by design ("complex email validation is (intentionally) unsupported" upstream).
EMAIL_EXCEPTIONS = {
    "dot before local part is not valid",
    "dot after local part is not valid",
    "two subsequent dots inside local part are not valid",
    "an invalid domain",
    "an invalid IPv4-address-literal",
}


def _fetch(cache: Path) -> Path:
    root = cache / "json"
    if (root / "tests" / "draft2020-12").is_dir() and (root / "remotes").is_dir():
        return root
    download = cache / "download"
    download.mkdir(parents=True, exist_ok=True)
    req = download / "requirements.txt"
    req.write_text(f"{SDIST} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
    cmd += ["--disable-pip-version-check", "-q", "-r", str(req), "-d", str(download)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(
            "pip download of the jsonschema sdist timed out (RLSD_JSON_SCHEMA_TEST_SUITE: offline)"
        )
    tarballs = sorted(download.glob("jsonschema-*.tar.gz"))
    if done.returncode != 0 or not tarballs:
        pytest.fail(f"pip download {SDIST} failed: {done.stderr[-500:]}")
    staging = cache / "json.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(tarballs[0]) as tar:
        for member in tar.getmembers():
            if not member.isfile() or not member.name.startswith(TOP) or ".." in member.name:
                continue
            dest = staging / member.name[len(TOP) :]
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(tar.extractfile(member).read())
    staging.rename(root)
    return root


@pytest.fixture(scope="module")
def suite(request) -> Path:
    local = os.environ.get("RLSD_JSON_SCHEMA_TEST_SUITE")
    if local:
        return Path(local)
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    if cache is None:
        return _fetch(Path.home() / ".cache" / "rlsd" / "json-schema-test-suite")
    return _fetch(Path(cache.mkdir("json-schema-test-suite")))


RUNNER = r"""
import importlib.util, json, sys
from pathlib import Path

verify_path, root, drafts = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("verify", verify_path)
v = importlib.util.module_from_spec(spec)
spec.loader.exec_module(v)
referencing = v.validators.referencing


def remotes(draft):
    # jsonschema's own runner's selection: other drafts' dialect-less files out, and the
    # boolean-schema tree for draft3/4
    base = root / "remotes"
    for path in sorted(base.rglob("*.json")):
        schema = json.loads(path.read_text(encoding="utf-8"))
        rel = path.relative_to(base).as_posix()
        if draft in ("draft3", "draft4") and path.stem == "tree":
            continue
        if "$schema" not in schema and rel.startswith("draft") and not rel.startswith(draft):
            continue
        yield "http://localhost:1234/" + rel, schema


def cases(folder):
    for path in sorted(folder.glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8")):
            for test in case["tests"]:
                yield path.stem, case, test


def valid(schema, data, formats, registry, cls):
    try:
        return not v.schema_errors(schema, data, formats, registry, cls)
    except v.SchemaProblem as exc:
        return "schema problem: " + str(exc)[:200]


def run(folder, formats, registry, cls, only=None):
    ran, wrong = 0, []
    for subject, case, test in cases(folder):
        if only is not None and subject not in only:
            continue
        ran += 1
        got = valid(case["schema"], test["data"], formats, registry, cls)
        if got is not test["valid"]:
            wrong.append([subject, case["description"], test["description"], str(got)])
    return {"ran": ran, "wrong": wrong}


out = {"jsonschema": v.jsonschema.__file__, "required": {}, "formats": {}}
for draft, name in drafts.items():
    cls = getattr(v.jsonschema, name)
    uri = cls.ID_OF(cls.META_SCHEMA)
    registry = referencing.Registry().with_contents(
        remotes(draft), default_specification=referencing.jsonschema.specification_with(uri)
    )
    out["required"][draft] = run(root / "tests" / draft, False, registry, cls)
    out["required"][draft]["claimed"] = cls in v.DRAFTS.values()
    asserted = sorted(v._format_checker(cls).checkers)
    formats = root / "tests" / draft / "optional" / "format"
    out["formats"][draft] = run(formats, True, None, cls, asserted)
    out["formats"][draft]["asserted"] = asserted
print(json.dumps(out))
"""


@pytest.fixture(scope="module", params=pythons(NAME), ids=python_ids(NAME))
def results(request, suite) -> dict:
    """The suite run by the verifier's own validation function in a fresh ``python``."""
    prepare(NAME)
    argv = [request.param, "-c", RUNNER, str(VERIFIERS / NAME / "verify.py"), str(suite)]
    done = subprocess.run(
        [*argv, json.dumps(DRAFTS)], capture_output=True, text=True, timeout=300, cwd="/tmp"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    vendor = (VERIFIERS / NAME / "build" / "vendor.zip").resolve()
    assert Path(out["jsonschema"]).resolve().is_relative_to(vendor), out["jsonschema"]
    return out


@pytest.mark.parametrize("draft", list(DRAFTS))
def test_required_cases_of_every_claimed_draft(results, draft):
    got = results["required"][draft]
    assert got["claimed"]
    excepted = [tuple(w[:3]) for w in got["wrong"] if (draft, *w[:3]) in KNOWN_FAILURES]
    failed = [w for w in got["wrong"] if (draft, *w[:3]) not in KNOWN_FAILURES]
    print(f"{draft}: {got['ran']} cases, {got['ran'] - len(got['wrong'])} passed, "
          f"{len(excepted)} documented exceptions")  # fmt: skip
    assert got["ran"] > 400
    assert not failed
    assert sorted(excepted) == sorted(k[1:] for k in KNOWN_FAILURES if k[0] == draft), (
        "update KNOWN_FAILURES"
    )


@pytest.mark.parametrize("draft", list(DRAFTS))
def test_optional_format_cases_of_the_asserted_formats(results, draft):
    got = results["formats"][draft]
    failed = [w for w in got["wrong"] if not (w[0] == "email" and w[2] in EMAIL_EXCEPTIONS)]
    assert got["ran"] > 50
    assert not failed


def _cases(folder: Path):
    for path in sorted(folder.glob("*.json")):
        for case in json.loads(path.read_text(encoding="utf-8")):
            for test in case["tests"]:
                yield path.stem, case, test


def _wire_sample(suite: Path, size: int = 200) -> list[tuple[dict, bool]]:
    """Required cases without remote refs or documented exceptions, $schema made explicit."""
    pool = []
    for draft, uri in META_SCHEMAS.items():
        for subject, case, test in _cases(suite / "tests" / draft):
            schema = case["schema"]
            if REMOTE in json.dumps(schema) or (
                (draft, subject, case["description"], test["description"]) in KNOWN_FAILURES
            ):
                continue
            if isinstance(schema, dict) and "$schema" not in schema:
                schema = {"$schema": uri, **schema}
            ref = {"schema": schema, "check_formats": False}
            pool.append(({"response": json.dumps(test["data"]), "reference": ref}, test["valid"]))
    sample = random.Random(20260).sample(pool, size)
    return [({"id": f"suite-{i}", **item}, valid) for i, (item, valid) in enumerate(sample)]


@pytest.mark.parametrize("python", pythons(NAME), ids=python_ids(NAME))
def test_a_sample_through_the_program(suite, python):
    sample = _wire_sample(suite)
    results = run_batch(NAME, [item for item, _ in sample], python=python)
    wrong = [
        (item["id"], item["reference"]["schema"], item["response"], r["detail"])
        for (item, valid), r in zip(sample, results, strict=True)
        if r["passed"] is not valid
    ]
    assert not wrong
