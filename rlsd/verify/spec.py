"""Drop-in verifier specs: ``verifiers/<name>/verifier.yaml``, validated by pydantic.

A verifier is a folder: the spec, a ``Dockerfile`` (built on the product's base image with
``--build-arg BASE_IMAGE=<tag>``) or an image reference, and the program the image runs. Adding a
verifier is dropping a folder; :func:`discover_specs` finds it.

Every load error is a :class:`SpecError` whose message names the file, the field and the value,
e.g. ``verifiers/x/verifier.yaml: limits.memory_mb = 'lots': Input should be a valid integer``.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from rlsd.configs.loading import ErrorFactory, read_yaml_mapping, validation_problems
from rlsd.verify.guest import SHARED_MODULES, shared_source

SPEC_FILE = "verifier.yaml"
NAME_RE = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
VERSION_RE = r"^[0-9]+(?:\.[0-9]+){0,3}(?:[-+][0-9A-Za-z.-]{1,40})?$"
#: Folder entries never part of a spec's digest: prepare outputs and Python caches.
DIGEST_EXCLUDE_TOP = frozenset({"build"})
DIGEST_EXCLUDE_ANY = frozenset({"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"})


class SpecError(ValueError):
    """A verifier folder whose spec cannot be used; the message names file, field and value."""

    def __init__(self, path: Path | str, message: str) -> None:
        self.path = Path(path)
        self.message = message
        super().__init__(f"{path}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageSpec(_Strict):
    """Exactly one of ``dockerfile`` (relative to the folder) or ``ref`` (a pinned image)."""

    dockerfile: str | None = Field(
        default=None, description="Dockerfile relative to the folder, built on BASE_IMAGE."
    )
    ref: str | None = Field(
        default=None, description="An image reference, ideally pinned by digest (name@sha256:...)."
    )

    @field_validator("dockerfile")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        p = Path(v)
        if not v.strip() or p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a relative path inside the verifier folder")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageSpec:
        if (self.dockerfile is None) == (self.ref is None):
            raise ValueError("give exactly one of 'dockerfile' or 'ref'")
        return self


class Limits(_Strict):
    """Resource limits of one batch run (one container or one local sandbox per batch)."""

    item_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    batch_timeout_s: float = Field(default=300.0, gt=0, le=86400)
    memory_mb: int = Field(default=512, ge=32, le=1 << 20)
    cpus: float = Field(default=1.0, gt=0, le=512)
    pids: int = Field(default=128, ge=8, le=1 << 16)
    output_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=1 << 31)
    tmpfs_mb: int = Field(default=64, ge=1, le=1 << 16)
    network: bool = False
    result_timeout_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="How long the item being checked may go without a result before the sandbox "
        "stops the run and charges that item alone (default: 2 x item_timeout_s + 5 s).",
    )

    def result_deadline_s(self) -> float:
        """The per-result deadline the sandbox enforces (see ``result_timeout_s``)."""
        if self.result_timeout_s is not None:
            return self.result_timeout_s
        return 2.0 * self.item_timeout_s + 5.0


class SelfTest(_Strict):
    """An item the verifier must pass (``expect: pass``) or fail (``expect: fail``).

    ``hack`` names the class of reward hack an ``expect: fail`` item tries (the red-team
    battery): a verifier that passes one is quarantined and the inventory says which.
    """

    id: str = Field(min_length=1, max_length=200)
    expect: Literal["pass", "fail"]
    item: dict[str, Any]
    hack: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,80}$",
        description="The reward-hack class this item tries ([a-z0-9-]); only with expect: fail.",
    )
    note: str | None = Field(default=None, description="What the item tries, for people.")

    @field_validator("item")
    @classmethod
    def _has_response(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "response" not in v:
            raise ValueError("a self-test item needs a 'response'")
        return v

    @model_validator(mode="after")
    def _hacks_fail(self) -> SelfTest:
        if self.hack is not None and self.expect != "fail":
            raise ValueError(f"a hack ({self.hack}) must have expect: fail")
        return self


class VerifierSpec(_Strict):
    """``verifier.yaml``: who owns the verifier, what it runs and how it is checked."""

    name: str = Field(pattern=NAME_RE, description="Equals the folder name; [a-z0-9-]+.")
    version: str = Field(pattern=VERSION_RE, description="e.g. 1.0.0")
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    domains: list[str] = Field(default_factory=list)
    kind: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="The item format and checking contract the verifier implements (a built-in "
        "kind: math-answer, python-tests, sql-result, json-schema, policy-rules). The inventory "
        "runs that kind's red-team battery against it.",
    )
    isolation: Literal["none", "per-item-uid"] = Field(
        default="none",
        description="'per-item-uid': the program starts as root with only CAP_SETUID and "
        "CAP_SETGID, so that it can run each item's untrusted code under a uid of its own (the "
        "program drops to uid 65534 for everything else). 'none': it starts as uid 65534 with "
        "no capabilities.",
    )
    image: ImageSpec
    prepare: str | None = Field(
        default=None, description="Host-side command run in the folder before the image build."
    )
    shared: list[str] = Field(
        default_factory=list,
        description="Shared modules of rlsd.verify.guest the program imports (verifier_protocol, "
        "json_payload): copied into build/ before the build, part of the spec digest.",
    )
    command: list[str] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    self_tests: list[SelfTest]

    @field_validator("shared")
    @classmethod
    def _known_shared(cls, v: list[str]) -> list[str]:
        unknown = [name for name in v if name not in SHARED_MODULES]
        if unknown:
            raise ValueError(
                f"unknown shared module(s) {', '.join(unknown)} (known: {', '.join(SHARED_MODULES)})"
            )
        if len(set(v)) != len(v):
            raise ValueError("each shared module may be listed once")
        return v

    @field_validator("command")
    @classmethod
    def _non_empty_args(cls, v: list[str]) -> list[str]:
        if not v[0].strip():
            raise ValueError("the program (command[0]) must not be empty")
        return v

    @model_validator(mode="after")
    def _self_tests_cover_both(self) -> VerifierSpec:
        expects = {t.expect for t in self.self_tests}
        if expects != {"pass", "fail"}:
            raise ValueError(
                "self_tests need at least one 'expect: pass' and one 'expect: fail' item "
                f"(got {sorted(expects) or 'none'})"
            )
        if not any(t.expect == "fail" and t.hack is None for t in self.self_tests):
            raise ValueError(
                "self_tests need at least one honest 'expect: fail' item (not marked as a hack)"
            )
        ids = [t.id for t in self.self_tests]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"self_tests ids must be unique (repeated: {', '.join(dupes)})")
        if self.isolation == "per-item-uid" and self.image.dockerfile is None:
            raise ValueError(
                "isolation 'per-item-uid' needs an image built on the product's base image "
                "(image.dockerfile), whose init starts the program with those two capabilities"
            )
        return self

    def honest_tests(self) -> list[SelfTest]:
        return [t for t in self.self_tests if t.hack is None]

    def hack_tests(self) -> list[SelfTest]:
        return [t for t in self.self_tests if t.hack is not None]

    def self_test_items(self) -> list[dict[str, Any]]:
        """The self-tests as protocol items (the self-test id is the item id)."""
        return [{**t.item, "id": t.id} for t in self.self_tests]


def read_spec_yaml(path: Path, error: ErrorFactory) -> dict[str, Any]:
    """The top-level mapping of a verifier spec or red-team battery file; ``error(path, detail)``
    on unreadable files, bad YAML or another top level."""
    return read_yaml_mapping(path, error=error)


def problems_line(exc: ValidationError, data: Any) -> str:
    """Every validation problem on one line: ``field = value: message; ...``."""
    return "; ".join(validation_problems(exc, data))


def load_spec(folder: Path | str) -> VerifierSpec:
    """Load and validate ``<folder>/verifier.yaml``; raise :class:`SpecError` on any problem."""
    folder = Path(folder)
    path = folder / SPEC_FILE
    if not folder.is_dir():
        raise SpecError(folder, "verifier folder does not exist")
    if not path.is_file():
        raise SpecError(path, "no verifier.yaml in the verifier folder")
    data = read_spec_yaml(path, SpecError)
    try:
        spec = VerifierSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(path, problems_line(exc, data)) from None
    if spec.name != folder.name:
        raise SpecError(path, f"name = {spec.name!r}: must equal the folder name {folder.name!r}")
    if spec.image.dockerfile is not None and not (folder / spec.image.dockerfile).is_file():
        raise SpecError(
            path, f"image.dockerfile = {spec.image.dockerfile!r}: no such file in {folder}"
        )
    return spec


def discover_specs(root: Path | str = "verifiers") -> list[tuple[Path, VerifierSpec | SpecError]]:
    """Every verifier folder under ``root`` (sorted; names starting with '.' or '_' skipped)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found: list[tuple[Path, VerifierSpec | SpecError]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name.startswith((".", "_")) or folder.name in DIGEST_EXCLUDE_ANY:
            continue
        try:
            found.append((folder, load_spec(folder)))
        except SpecError as exc:
            found.append((folder, exc))
    return found


def spec_files(folder: Path | str) -> list[Path]:
    """The folder's own files (not ``build/``, caches or ``*.pyc``), relative, sorted."""
    folder = Path(folder)
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if rel.parts[0] in DIGEST_EXCLUDE_TOP or DIGEST_EXCLUDE_ANY.intersection(rel.parts):
            continue
        if path.is_file() and path.suffix != ".pyc":
            out.append(rel)
    return sorted(out, key=lambda p: p.as_posix())


def _declared_shared(folder: Path) -> list[str]:
    try:
        return load_spec(folder).shared
    except SpecError:  # an invalid spec is digested as its files alone
        return []


def spec_digest(folder: Path | str, shared: list[str] | None = None) -> str:
    """sha256 over every file of the folder (path and content), in a stable order, and over the
    shared modules it lists (``shared``, read from the spec when not given): they are part of
    the program even though they live in ``rlsd/verify/guest``."""
    folder = Path(folder)
    h = hashlib.sha256()
    entries = [(rel.as_posix(), folder / rel) for rel in spec_files(folder)]
    names = _declared_shared(folder) if shared is None else shared
    entries += [(f"<shared>/{name}.py", shared_source(name)) for name in sorted(names)]
    for name, path in entries:
        h.update(name.encode())
        h.update(b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
        h.update(b"\n")
    return h.hexdigest()


def image_digest(folder: Path | str) -> str:
    """The spec digest plus the files ``prepare`` generated in ``build/``.

    ``build/`` is left out of the spec digest (it is generated, not authored) but it goes into the
    image, so the image tag must change when it does (a new database, a changed shared module).
    """
    folder = Path(folder)
    h = hashlib.sha256(spec_digest(folder).encode())
    build = folder / "build"
    if build.is_dir():
        for path in sorted(p for p in build.rglob("*") if p.is_file()):
            if (
                DIGEST_EXCLUDE_ANY.intersection(path.relative_to(build).parts)
                or path.suffix == ".pyc"
            ):
                continue
            h.update(path.relative_to(build).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def image_tag(spec: VerifierSpec, digest: str) -> str:
    """The local tag of a Dockerfile spec's image: ``rlsd-verifier/<name>:<version>-<digest12>``."""
    version = re.sub(r"[^0-9A-Za-z_.-]", "_", spec.version)
    return f"rlsd-verifier/{spec.name}:{version}-{digest[:12]}"
