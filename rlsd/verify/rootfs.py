"""The verifier base image's root filesystem on disk: what the local sandbox runs verifiers in.

The local sandbox must give the same verdicts as Docker, so it runs the same interpreter, the
same packages and the same files: the base image's root filesystem itself, read-only under
bubblewrap, not the host's ``/usr``. That tree lives in the cache,
``$RLSD_CACHE_DIR/verifier-base/<tag>/rootfs`` (default ``~/.cache/rlsd``), with a ``meta.json``
saying where it came from:

* ``infra/images/build-base.sh`` keeps the debootstrap tree it imports into Docker there (and
  ``--rootfs-only`` builds just the tree, on a machine without an engine);
* otherwise, when an engine answers and has the image, :func:`ensure_rootfs` exports the image
  (``docker export``) into the cache, and exports it again when the image id changes.

With neither, the local sandbox refuses to run (:class:`RootfsError` says how to get one).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlsd.verify.engine import docker_answers, docker_client
from rlsd.verify.images import BASE_IMAGE, BASE_SCRIPT, image_id

#: The image's environment when meta.json does not say (what build-base.sh sets).
DEFAULT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
}
_lock = threading.Lock()


class RootfsError(RuntimeError):
    """No root filesystem of the base image is available to the local sandbox."""


@dataclass(frozen=True)
class Rootfs:
    path: Path
    tag: str
    image_id: str | None
    source: str
    env: dict[str, str]


def cache_root() -> Path:
    if env := os.environ.get("RLSD_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rlsd"


def rootfs_home(tag: str = BASE_IMAGE) -> Path:
    """``<cache>/verifier-base/<tag as a file name>``: holds ``rootfs/`` and ``meta.json``."""
    return cache_root() / "verifier-base" / re.sub(r"[^A-Za-z0-9_.-]", "_", tag)


def find_rootfs(tag: str = BASE_IMAGE) -> Rootfs | None:
    """The cached tree for ``tag``, if one is complete (has ``meta.json`` and a python3)."""
    home = rootfs_home(tag)
    try:
        meta = json.loads((home / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    path = home / "rootfs"
    if not (path / "usr" / "bin" / "python3").exists():
        return None
    env = meta.get("env") if isinstance(meta.get("env"), dict) else DEFAULT_ENV
    return Rootfs(path, tag, meta.get("image_id"), str(meta.get("source", "?")), dict(env))


def _engine_image_id(tag: str, client: Any = None) -> tuple[Any, str | None]:
    if client is None and not docker_answers():
        return None, None  # no engine (or no package): only the cache counts
    try:
        client = client or docker_client(timeout=30)
        return client, image_id(client, tag)
    except Exception:  # noqa: BLE001 - the engine went away: only the cache counts
        return None, None


def _image_env(client: Any, tag: str) -> dict[str, str]:
    try:
        env = client.images.get(tag).attrs.get("Config", {}).get("Env") or []
    except Exception:  # noqa: BLE001
        return dict(DEFAULT_ENV)
    return dict(e.split("=", 1) for e in env if "=" in e)


def export_rootfs(client: Any, tag: str, image_id: str) -> Rootfs:
    """``docker export`` a container of ``tag`` into the cache (atomically replacing the old)."""
    home = rootfs_home(tag)
    home.mkdir(parents=True, exist_ok=True)
    work = home / f".export-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    container = client.api.create_container(image_id, command=["true"], network_disabled=True)
    try:
        stream = client.api.export(container["Id"])
        reader = _Chunks(stream)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            tar.extractall(work, numeric_owner=True, filter="fully_trusted")
    finally:
        client.api.remove_container(container["Id"], force=True)
    (work / "verifier").mkdir(exist_ok=True)  # the mount point of the verifier's files
    old = home / "rootfs"
    if old.exists():
        shutil.rmtree(old)
    work.replace(old)
    meta = {
        "tag": tag,
        "image_id": image_id,
        "source": "docker export",
        "env": _image_env(client, tag),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    (home / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    found = find_rootfs(tag)
    if found is None:
        raise RootfsError(f"exporting {tag} produced no usable root filesystem in {home}")
    return found


class _Chunks:
    """A file-like reader over docker's export stream (an iterator of byte chunks)."""

    def __init__(self, stream: Any) -> None:
        self._it = iter(stream)
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def ensure_rootfs(tag: str = BASE_IMAGE, client: Any = None) -> Rootfs:
    """The base image's root filesystem, exported from Docker when the cache lacks it or holds
    another image id; :class:`RootfsError` when there is no way to get it."""
    with _lock:
        found = find_rootfs(tag)
        client, engine_id = _engine_image_id(tag, client)
        if engine_id is not None and (found is None or found.image_id != engine_id):
            try:
                return export_rootfs(client, tag, engine_id)
            except Exception as exc:  # noqa: BLE001
                if found is None:
                    raise RootfsError(f"exporting the base image {tag} failed: {exc}") from None
        if found is not None:
            return found
        raise RootfsError(
            f"the local sandbox runs verifiers in the base image's root filesystem and there is "
            f"none for {tag} in {rootfs_home(tag)}: run `sudo bash {BASE_SCRIPT} --rootfs-only` "
            "(debootstrap, no Docker needed) or build the image where an engine answers "
            "(`rlsd verifiers build`)"
        )


def build_rootfs_only(tag: str = BASE_IMAGE) -> None:
    """Run ``build-base.sh --rootfs-only`` (debootstrap into the cache; root needed)."""
    proc = subprocess.run(
        ["bash", str(BASE_SCRIPT), "--rootfs-only", "--tag", tag], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RootfsError(f"build-base.sh --rootfs-only failed: {(proc.stderr or '')[-1500:]}")
