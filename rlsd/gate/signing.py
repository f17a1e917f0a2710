"""Ed25519 signatures of the gate's records: who holds the pipeline's key vouches for them.

A record (the gate decision, the approval) is a canonical JSON document; its signature is a
small envelope, :class:`SignedRecord`, logged beside it (``<name>.sig.json``). What is signed is
``rlsd/<kind>/v1`` and the document's sha256 -- the kind separates the two records, so the
signature of a decision can never pass for an approval's. The private key never goes to MLflow:
the pipeline reads it from a key file or a Prefect Secret block (PEM text), and verifiers need
only the public key the promotion policy names.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from rlsd.gate.policy import canonical_json

RecordKind = Literal["gate-decision", "gate-approval"]
INLINE_PREFIX = "ed25519:"
DEFAULT_KEY_DIR = Path("runs/keys")
PRIVATE_KEY_NAME = "rlsd-signing.pem"
PUBLIC_KEY_NAME = "rlsd-signing.pub"


class SigningError(ValueError):
    """A key cannot be read or a record cannot be signed; the message names the file."""


class SignedRecord(BaseModel):
    """The signature of one record: what was signed, by which key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RecordKind
    algorithm: Literal["ed25519"] = "ed25519"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the canonical JSON.")
    key_id: str = Field(description="sha256 of the raw public key, first 16 hex digits.")
    signature: str = Field(description="base64 of the 64-byte Ed25519 signature.")


def document_digest(document: Mapping[str, Any]) -> str:
    """sha256 of a record's canonical JSON: the same digest the record's readers recompute."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def _message(kind: RecordKind, digest: str) -> bytes:
    return f"rlsd/{kind}/v1\n{digest}".encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def inline_public_key(public_key: Ed25519PublicKey) -> str:
    """The ``ed25519:<base64>`` form a policy can name the key by, without a file."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return INLINE_PREFIX + base64.b64encode(raw).decode()


def sign_record(
    kind: RecordKind, document: Mapping[str, Any], private_key: Ed25519PrivateKey
) -> SignedRecord:
    digest = document_digest(document)
    return SignedRecord(
        kind=kind,
        sha256=digest,
        key_id=key_id(private_key.public_key()),
        signature=base64.b64encode(private_key.sign(_message(kind, digest))).decode(),
    )


def signature_problems(
    record: SignedRecord,
    kind: RecordKind,
    document: Mapping[str, Any],
    public_key: Ed25519PublicKey,
) -> list[str]:
    """Why ``record`` is not a valid signature of ``document`` by ``public_key`` (empty: valid)."""
    problems = []
    if record.kind != kind:
        problems.append(f"the signature is of a {record.kind} record, not a {kind}")
    digest = document_digest(document)
    if record.sha256 != digest:
        problems.append(
            f"the document's sha256 is {digest[:12]}…, the signature's {record.sha256[:12]}…"
        )
    if record.key_id != key_id(public_key):
        problems.append(
            f"signed by key {record.key_id}, not by the policy's key {key_id(public_key)}"
        )
    try:
        public_key.verify(base64.b64decode(record.signature, validate=True), _message(kind, digest))
    except (InvalidSignature, ValueError):
        problems.append("the signature does not verify with the policy's public key")
    return problems


# ------------------------------------------------------------------------------------ keys
def generate_key_pair(
    directory: Path = DEFAULT_KEY_DIR, *, force: bool = False
) -> tuple[Path, Path]:
    """Write a new key pair (private PEM readable by its owner only, public PEM); refuses to
    replace an existing private key unless ``force`` -- its records would stop verifying."""
    private_path, public_path = directory / PRIVATE_KEY_NAME, directory / PUBLIC_KEY_NAME
    if private_path.exists() and not force:
        raise SigningError(
            f"{private_path}: a signing key exists already (use --force to replace it)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = private_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, private_path)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def private_key_from_pem(pem: str | bytes, *, where: str) -> Ed25519PrivateKey:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(
            f"{where}: not an unencrypted PEM private key ({type(exc).__name__})"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningError(f"{where}: the signing key must be Ed25519, not {type(key).__name__}")
    return key


def read_private_key(path: Path | str) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise SigningError(
            f"{path}: no signing key; `rlsd keys init` creates one for the embedded defaults"
        ) from None
    return private_key_from_pem(pem, where=str(path))


def read_public_key(spec: str) -> Ed25519PublicKey:
    """The key a policy names: ``ed25519:<base64>`` or a PEM file."""
    if spec.startswith(INLINE_PREFIX):
        try:
            raw = base64.b64decode(spec.removeprefix(INLINE_PREFIX), validate=True)
            return Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise SigningError(
                f"{spec[:20]}…: not a base64 Ed25519 public key (32 bytes)"
            ) from None
    path = Path(spec)
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise SigningError(f"{path}: the policy's public key file does not exist") from None
    except ValueError:
        raise SigningError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError(f"{path}: the public key must be Ed25519, not {type(key).__name__}")
    return key
