"""Verifier images: run each spec's ``prepare`` and build its Dockerfile on the local base image.

The base image (``rlsd/verifier-base:bookworm-1``) is built by ``infra/images/build-base.sh``
(debootstrap + ``docker import``; no registry). A spec's image is tagged
``rlsd-verifier/<name>:<version>-<spec digest[:12]>``, so an edited folder gets a new tag and an
unchanged one is never rebuilt. A spec with ``image.ref`` is used as is (pulled only on request).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rlsd.verify.engine import docker_client
from rlsd.verify.guest import install_shared
from rlsd.verify.spec import VerifierSpec, image_digest, image_tag

BASE_IMAGE = os.environ.get("RLSD_VERIFIER_BASE", "rlsd/verifier-base:bookworm-1")
BASE_SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "images" / "build-base.sh"
LOG_TAIL_CHARS = 1500
PREPARE_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 900


class ImageError(RuntimeError):
    """A spec's prepare step or image build failed; the message carries the log tail."""


def _tail(text: str, limit: int = LOG_TAIL_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else "..." + text[-limit:]


def run_prepare(spec: VerifierSpec, folder: Path) -> None:
    """Copy the spec's ``shared`` modules into ``build/``, then run ``spec.prepare`` in the
    folder with the host's Python (this interpreter) first on PATH.

    Both sandboxes come through here before running a folder (Docker before its build), so
    both see the same copies."""
    try:
        install_shared(spec.shared, folder)
    except OSError as exc:
        raise ImageError(
            f"copying the shared modules into {folder / 'build'} failed: {exc}"
        ) from None
    if not spec.prepare:
        return
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["RLSD_PYTHON"] = sys.executable
    argv = shlex.split(spec.prepare)
    if argv and argv[0] in ("python", "python3"):
        argv[0] = sys.executable
    try:
        proc = subprocess.run(
            argv,
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PREPARE_TIMEOUT_S,
        )
    except FileNotFoundError as exc:
        raise ImageError(f"prepare {spec.prepare!r} failed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"prepare {spec.prepare!r} ran past {PREPARE_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        raise ImageError(
            f"prepare {spec.prepare!r} exited with code {proc.returncode}: "
            f"{_tail(proc.stderr or proc.stdout)}"
        )


def image_id(client: Any, ref: str) -> str | None:
    import docker.errors

    try:
        return client.images.get(ref).id
    except docker.errors.ImageNotFound:
        return None


@dataclass
class BuiltImage:
    name: str
    tag: str | None
    image_id: str | None
    status: Literal["built", "exists", "ref", "invalid"]
    reason: str = ""


def build_image(
    spec: VerifierSpec,
    folder: Path | str,
    base_tag: str = BASE_IMAGE,
    *,
    client: Any = None,
    force: bool = False,
    pull: bool = False,
) -> BuiltImage:
    """Prepare and build (or check) one spec's image; raise :class:`ImageError` on failure."""
    import docker.errors

    folder = Path(folder).resolve()
    client = client or docker_client()
    if spec.image.ref is not None:
        ref = spec.image.ref
        found = image_id(client, ref)
        if found is None and pull:
            try:
                found = client.images.pull(ref).id
            except docker.errors.APIError as exc:
                raise ImageError(f"image.ref {ref!r} could not be pulled: {exc}") from None
        if found is None:
            raise ImageError(
                f"image.ref {ref!r} is not present in the local engine (pull it, or allow pulls)"
            )
        return BuiltImage(spec.name, ref, found, "ref")
    tag = image_tag(spec, image_digest(folder))
    found = image_id(client, tag)
    if found is not None and not force:
        return BuiltImage(spec.name, tag, found, "exists")
    if image_id(client, base_tag) is None:
        raise ImageError(
            f"base image {base_tag!r} is missing: run infra/images/build-base.sh "
            "(or `rlsd verifiers build`)"
        )
    run_prepare(spec, folder)
    log: list[str] = []
    try:
        stream = client.api.build(
            path=str(folder),
            dockerfile=spec.image.dockerfile,
            tag=tag,
            buildargs={"BASE_IMAGE": base_tag},
            rm=True,
            forcerm=True,
            network_mode="none",
            decode=True,
            labels={"rlsd.verifier": spec.name, "rlsd.version": spec.version},
            timeout=BUILD_TIMEOUT_S,
        )
        for chunk in stream:
            if "stream" in chunk:
                log.append(chunk["stream"])
            if "error" in chunk:
                log.append(chunk["error"])
                raise ImageError(f"docker build failed: {_tail(''.join(log))}")
    except docker.errors.APIError as exc:
        raise ImageError(f"docker build failed: {exc}; log: {_tail(''.join(log))}") from None
    found = image_id(client, tag)
    if found is None:
        raise ImageError(f"docker build produced no image {tag}: {_tail(''.join(log))}")
    return BuiltImage(spec.name, tag, found, "built")


def build_images(
    specs: list[tuple[Path, VerifierSpec]],
    base_tag: str = BASE_IMAGE,
    *,
    client: Any = None,
    force: bool = False,
    pull: bool = False,
) -> list[BuiltImage]:
    """Build every spec's image; a failing spec is reported ``invalid`` and the others go on."""
    client = client or docker_client()
    out = []
    for folder, spec in specs:
        try:
            out.append(build_image(spec, folder, base_tag, client=client, force=force, pull=pull))
        except ImageError as exc:
            out.append(BuiltImage(spec.name, None, None, "invalid", str(exc)))
    return out


def build_base(force: bool = False, tag: str = BASE_IMAGE) -> None:
    """Run ``infra/images/build-base.sh`` (idempotent unless ``force``)."""
    if not BASE_SCRIPT.is_file():
        raise ImageError(f"{BASE_SCRIPT} not found (the base image script ships with the repo)")
    argv = ["bash", str(BASE_SCRIPT), "--tag", tag] + (["--force"] if force else [])
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"building the base image failed: {_tail(proc.stderr + proc.stdout)}")
