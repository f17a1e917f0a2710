"""The five built-in verifier folders are complete, self-contained and follow the drop-in contract."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from vb_support import NAMES, REPO, VERIFIERS, prepare, spec

from rlsd.verify.guest import SHARED_MODULES, shared_source
from rlsd.verify.local_sandbox import image_layout
from rlsd.verify.spec import load_spec

LIMIT_TYPES = {
    "item_timeout_s": (int, float),
    "batch_timeout_s": (int, float),
    "memory_mb": int,
    "cpus": (int, float),
    "pids": int,
    "output_bytes": int,
    "tmpfs_mb": int,
    "network": bool,
}
STDLIB = set(sys.stdlib_module_names)


def test_exactly_the_five_builtins_are_present():
    found = sorted(p.name for p in VERIFIERS.iterdir() if (p / "verifier.yaml").exists())
    assert found == sorted(NAMES)
    assert "*/build/" in (VERIFIERS / ".gitignore").read_text()


@pytest.mark.parametrize("name", NAMES)
def test_spec_has_the_required_keys(name):
    s = spec(name)
    assert s["name"] == name
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(s["version"]))
    assert isinstance(s["description"], str) and len(s["description"]) > 20
    assert re.fullmatch(r"[^@\s]+@[^@\s]+", s["owner"])
    assert isinstance(s["domains"], list) and s["domains"]
    assert all(isinstance(d, str) for d in s["domains"])
    assert s["image"] == {"dockerfile": "Dockerfile"}
    assert s["command"] == ["python3", "/verifier/verify.py"]
    for key, value in s.get("limits", {}).items():
        assert key in LIMIT_TYPES, key
        assert isinstance(value, LIMIT_TYPES[key]) and not (value is True and key != "network")
    assert s.get("limits", {}).get("network", False) is False
    folder = VERIFIERS / name
    assert (folder / "verify.py").is_file() and (folder / "README.md").is_file()
    assert ("prepare" in s) == (folder / "prepare.py").is_file()
    if "prepare" in s:
        assert s["prepare"] == "python3 prepare.py"


@pytest.mark.parametrize("name", NAMES)
def test_self_tests_are_well_formed(name):
    tests = spec(name)["self_tests"]
    ids = [t["id"] for t in tests]
    assert len(ids) == len(set(ids))
    honest = [t for t in tests if "hack" not in t]
    assert sum(t["expect"] == "pass" for t in honest) >= 2
    assert sum(t["expect"] == "fail" for t in honest) >= 2
    for t in tests:
        assert {"id", "expect", "item"} <= set(t) <= {"id", "expect", "item", "hack", "note"}
        assert t["expect"] in ("pass", "fail")
        assert "hack" not in t or (t["expect"] == "fail" and t.get("note")), t["id"]
        assert isinstance(t["item"]["response"], str) and "reference" in t["item"]


@pytest.mark.parametrize("name", NAMES)
def test_dockerfile_builds_on_the_base_image_as_nobody(name):
    folder = VERIFIERS / name
    lines = [
        line.strip()
        for line in (folder / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[:2] == ["ARG BASE_IMAGE=rlsd/verifier-base:bookworm-1", "FROM ${BASE_IMAGE}"]
    assert "COPY verify.py /verifier/" in lines
    generated = (folder / "prepare.py").exists() or bool(spec(name).get("shared"))
    assert ("COPY build/ /verifier/" in lines) == generated
    assert "USER 65534:65534" in lines and "WORKDIR /tmp" in lines
    assert not any(line.startswith("RUN") for line in lines)  # builds need no network or shell


def _imports(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("name", NAMES)
def test_verify_program_needs_only_the_base_image(name):
    source = (VERIFIERS / name / "verify.py").read_text()
    allowed = STDLIB | set(spec(name).get("shared", []))
    if name == "json-schema":
        allowed.add("jsonschema")
    assert _imports(source) <= allowed, _imports(source) - allowed


@pytest.mark.parametrize("module", sorted(SHARED_MODULES))
def test_shared_modules_need_only_the_standard_library(module):
    assert _imports(shared_source(module).read_text()) <= STDLIB


def _defined(source: str) -> set[str]:
    return {
        node.name
        for node in ast.parse(source).body
        if isinstance(node, ast.FunctionDef | ast.ClassDef)
    }


@pytest.mark.parametrize("name", NAMES)
def test_built_verifier_gets_the_shared_protocol_module(name):
    """Every built-in speaks the protocol through the one shared module, which its build gets
    byte for byte (build/ locally, /verifier in the image and in the local sandbox)."""
    shared = spec(name)["shared"]
    assert "verifier_protocol" in shared
    source = (VERIFIERS / name / "verify.py").read_text()
    assert "verifier_protocol" in _imports(source)
    assert not _defined(source) & _defined(shared_source("verifier_protocol").read_text())
    prepare(name)
    for module in shared:
        copied = VERIFIERS / name / "build" / f"{module}.py"
        assert copied.read_bytes() == shared_source(module).read_bytes(), module
    layout = image_layout(load_spec(VERIFIERS / name), VERIFIERS / name)
    shipped = dict((dest, src) for src, dest in layout.files)
    for module in shared:
        src = shipped[f"/verifier/{module}.py"]
        assert Path(src).read_bytes() == shared_source(module).read_bytes(), module


def test_json_verifiers_share_the_payload_extraction():
    payload = _defined(shared_source("json_payload").read_text())
    assert "extract_json" in payload
    for name in ("json-schema", "policy-rules"):
        assert "json_payload" in spec(name)["shared"]
        source = (VERIFIERS / name / "verify.py").read_text()
        assert "json_payload" in _imports(source)
        assert not _defined(source) & payload, name


def test_math_answer_ships_the_in_process_extraction_verbatim():
    prepare("math-answer")
    shared = REPO / "rlsd" / "verify" / "answer_extraction.py"
    copied = VERIFIERS / "math-answer" / "build" / "answer_extraction.py"
    assert copied.read_bytes() == shared.read_bytes()
    assert _imports(shared.read_text()) <= set(sys.stdlib_module_names)
