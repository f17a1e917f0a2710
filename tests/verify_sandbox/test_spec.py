"""verifier.yaml: validation errors name file, field and value; discovery; the spec digest."""

from __future__ import annotations

import pytest
import yaml

from rlsd.verify import guest
from rlsd.verify.spec import (
    SpecError,
    VerifierSpec,
    discover_specs,
    image_digest,
    image_tag,
    load_spec,
    spec_digest,
)
from tests.verify_sandbox import folders


def _write(tmp_path, name="echo-eq", **changes):
    data = folders.spec(name)
    for dotted, value in changes.items():
        cur = data
        *parents, last = dotted.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        if value is KeyError:
            cur.pop(last, None)
        else:
            cur[last] = value
    return folders.write_folder(tmp_path, name, folders.ECHO_EQ, data)


def test_valid_spec_loads_with_defaults(tmp_path):
    spec = load_spec(_write(tmp_path))
    assert isinstance(spec, VerifierSpec)
    assert spec.limits.item_timeout_s == 10 and spec.limits.batch_timeout_s == 300
    assert spec.limits.memory_mb == 512 and spec.limits.pids == 128
    assert spec.limits.output_bytes == 4194304 and spec.limits.tmpfs_mb == 64
    assert spec.limits.network is False and spec.limits.cpus == 1.0
    assert [i["id"] for i in spec.self_test_items()] == ["ok", "bad"]


@pytest.mark.parametrize(
    ("change", "field", "value"),
    [
        ({"limits.memory_mb": "lots"}, "limits.memory_mb", "'lots'"),
        ({"limits.batch_timeout_s": -1}, "limits.batch_timeout_s", "-1"),
        ({"name": "Echo_EQ"}, "name", "'Echo_EQ'"),
        ({"version": "one"}, "version", "'one'"),
        ({"command": []}, "command", "[]"),
        ({"limits.netwrok": True}, "limits.netwrok", "True"),
        ({"image": {"dockerfile": "Dockerfile", "ref": "x@sha256:00"}}, "image", "'Dockerfile'"),
        ({"image": {"dockerfile": "../Dockerfile"}}, "image.dockerfile", "'../Dockerfile'"),
        (
            {"self_tests": [{"id": "a", "expect": "maybe", "item": {"response": "1"}}]},
            "self_tests[0].expect",
            "'maybe'",
        ),
    ],
)
def test_errors_name_file_field_and_value(tmp_path, change, field, value):
    folder = _write(tmp_path, **change)
    with pytest.raises(SpecError) as err:
        load_spec(folder)
    msg = str(err.value)
    assert str(folder / "verifier.yaml") in msg
    assert field in msg, msg
    assert value in msg, msg


def test_missing_field_and_self_test_coverage(tmp_path):
    with pytest.raises(SpecError, match=r"verifier\.yaml: owner: required field is missing"):
        load_spec(_write(tmp_path, owner=KeyError))
    only_pass = [{"id": "a", "expect": "pass", "item": {"response": "1"}}]
    with pytest.raises(SpecError, match="at least one 'expect: pass' and one 'expect: fail'"):
        load_spec(_write(tmp_path, self_tests=only_pass))
    twice = [
        {"id": "a", "expect": "pass", "item": {"response": "1"}},
        {"id": "a", "expect": "fail", "item": {"response": "2"}},
    ]
    with pytest.raises(SpecError, match="repeated: a"):
        load_spec(_write(tmp_path, self_tests=twice))
    no_response = [
        {"id": "a", "expect": "pass", "item": {}},
        {"id": "b", "expect": "fail", "item": {"response": "2"}},
    ]
    with pytest.raises(SpecError, match=r"self_tests\[0\]\.item = \{\}: .*needs a 'response'"):
        load_spec(_write(tmp_path, self_tests=no_response))


def test_name_must_equal_folder_and_dockerfile_must_exist(tmp_path):
    folder = _write(tmp_path, name="echo-eq")
    (folder / "verifier.yaml").write_text(
        yaml.safe_dump({**folders.spec("other-name")}, sort_keys=False)
    )
    with pytest.raises(
        SpecError, match="name = 'other-name': must equal the folder name 'echo-eq'"
    ):
        load_spec(folder)
    folder = _write(tmp_path, name="nodocker", image={"dockerfile": "Dockerfile.missing"})
    with pytest.raises(SpecError, match="image.dockerfile = 'Dockerfile.missing': no such file"):
        load_spec(folder)


def test_yaml_syntax_and_shape_errors(tmp_path):
    folder = _write(tmp_path)
    (folder / "verifier.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match=r"verifier\.yaml: not valid YAML"):
        load_spec(folder)
    (folder / "verifier.yaml").write_text("- a list\n")
    with pytest.raises(SpecError, match="top level must be a mapping"):
        load_spec(folder)
    (folder / "verifier.yaml").unlink()
    with pytest.raises(SpecError, match="no verifier.yaml"):
        load_spec(folder)


def test_discover_finds_a_dropped_in_folder(tmp_path):
    root = tmp_path / "verifiers"
    folders.echo_eq(root)
    assert [(f.name, type(s).__name__) for f, s in discover_specs(root)] == [
        ("echo-eq", "VerifierSpec")
    ]
    folders.run_code(root, "new-one")  # dropped in: no registration, no code change
    broken = root / "broken"
    broken.mkdir()
    (broken / "verifier.yaml").write_text("name: broken\n")
    (root / "_shared").mkdir()  # helpers are skipped
    found = {f.name: s for f, s in discover_specs(root)}
    assert sorted(found) == ["broken", "echo-eq", "new-one"]
    assert isinstance(found["new-one"], VerifierSpec)
    assert isinstance(found["broken"], SpecError) and "required field is missing" in str(
        found["broken"]
    )
    assert discover_specs(tmp_path / "nowhere") == []


def test_digest_is_stable_and_ignores_build_outputs(tmp_path):
    folder = folders.echo_eq(tmp_path)
    d1 = spec_digest(folder)
    (folder / "build").mkdir()
    (folder / "build" / "tag.txt").write_text("generated")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "verify.cpython-311.pyc").write_bytes(b"\0")
    assert spec_digest(folder) == d1
    (folder / "verify.py").write_text((folder / "verify.py").read_text() + "\n# edit\n")
    d2 = spec_digest(folder)
    assert d2 != d1 and len(d2) == 64
    spec = load_spec(folder)
    assert image_tag(spec, d2) == f"rlsd-verifier/echo-eq:1.0.0-{d2[:12]}"


def test_digest_and_image_tag_follow_the_shared_modules(tmp_path, monkeypatch):
    """A shared module is part of the program: editing its one source changes the digest (and
    the image tag) of every verifier that lists it, and of no other."""
    source = tmp_path / "verifier_protocol.py"
    source.write_text("VERSION = 1\n")
    monkeypatch.setitem(guest.SHARED_MODULES, "verifier_protocol", source)
    user = _write(tmp_path / "a", shared=["verifier_protocol"])
    other = _write(tmp_path / "b")
    d_user, d_other = spec_digest(user), spec_digest(other)
    source.write_text("VERSION = 2\n")
    assert spec_digest(user) != d_user
    assert spec_digest(other) == d_other
    assert image_digest(user) != image_digest(other)
    guest.install_shared(["verifier_protocol"], user)
    assert (user / "build" / "verifier_protocol.py").read_text() == "VERSION = 2\n"


def test_unknown_shared_module_is_named(tmp_path):
    with pytest.raises(SpecError) as exc:
        load_spec(_write(tmp_path, shared=["verifier_protocol", "nope"]))
    assert "shared = ['verifier_protocol', 'nope']" in str(exc.value)
    assert "unknown shared module(s) nope" in str(exc.value)
