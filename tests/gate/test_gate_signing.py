"""Signed gate records: Ed25519 over the canonical JSON's digest, bound to the record's kind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from rlsd.gate import evaluate_gate
from rlsd.gate.signing import (
    SigningError,
    generate_key_pair,
    inline_public_key,
    key_id,
    read_private_key,
    read_public_key,
    sign_record,
    signature_problems,
)
from tests.gate.factory import NOW, evidence, policy

DOC = evaluate_gate(policy(), evidence(), now=NOW).model_dump(mode="json")


def test_a_signature_verifies_and_any_change_to_the_document_breaks_it() -> None:
    key = Ed25519PrivateKey.generate()
    sig = sign_record("gate-decision", DOC, key)
    assert signature_problems(sig, "gate-decision", DOC, key.public_key()) == []
    forged = {**DOC, "passed": not DOC["passed"]}
    problems = signature_problems(sig, "gate-decision", forged, key.public_key())
    assert any("sha256" in p for p in problems)
    assert any("does not verify" in p for p in problems)


def test_a_decision_signature_cannot_pass_for_an_approval() -> None:
    key = Ed25519PrivateKey.generate()
    sig = sign_record("gate-decision", DOC, key)
    relabelled = sig.model_copy(update={"kind": "gate-approval"})
    problems = signature_problems(relabelled, "gate-approval", DOC, key.public_key())
    assert problems == ["the signature does not verify with the policy's public key"]


def test_another_key_is_named_and_refused() -> None:
    mine, theirs = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    sig = sign_record("gate-decision", DOC, theirs)
    problems = signature_problems(sig, "gate-decision", DOC, mine.public_key())
    assert f"not by the policy's key {key_id(mine.public_key())}" in problems[0]
    # an attacker who rewrites key_id to the policy's still cannot make the signature verify
    spoofed = sig.model_copy(update={"key_id": key_id(mine.public_key())})
    assert signature_problems(spoofed, "gate-decision", DOC, mine.public_key()) == [
        "the signature does not verify with the policy's public key"
    ]


def test_key_files_private_half_readable_by_its_owner_only(tmp_path: Path) -> None:
    private, public = generate_key_pair(tmp_path / "keys")
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    key = read_private_key(private)
    assert key_id(read_public_key(str(public))) == key_id(key.public_key())
    assert key_id(read_public_key(inline_public_key(key.public_key()))) == key_id(key.public_key())
    with pytest.raises(SigningError, match="exists already"):
        generate_key_pair(tmp_path / "keys")
    generate_key_pair(tmp_path / "keys", force=True)
    assert key_id(read_private_key(private).public_key()) != key_id(key.public_key())


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (None, "no signing key; `rlsd keys init`"),
        (b"not a key", "not an unencrypted PEM private key"),
    ],
)
def test_unreadable_private_keys_name_the_file(tmp_path: Path, write, match: str) -> None:
    path = tmp_path / "k.pem"
    if write is not None:
        path.write_bytes(write)
    with pytest.raises(SigningError, match=match) as exc:
        read_private_key(path)
    assert str(path) in str(exc.value)


def test_bad_public_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="does not exist"):
        read_public_key(str(tmp_path / "missing.pub"))
    with pytest.raises(SigningError, match="not a base64 Ed25519 public key"):
        read_public_key("ed25519:AAAA")
