"""Where converted models and file digests are cached, and how a cache entry is written safely."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


def default_cache_dir() -> Path:
    if env := os.environ.get("RLSD_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlsd"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def dir_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of a model directory's weights: the one weights file's digest, or a digest over the
    shards' names and digests; "unknown" when the directory has no weights file."""
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    if not files:
        return "unknown"
    if len(files) == 1:
        return cached_file_digest(files[0], cache_dir)
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + cached_file_digest(f, cache_dir).encode())
    return h.hexdigest()


def cached_file_digest(path: Path, cache_dir: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so a reload does not rehash 500 MB."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    index = cache_dir / "digests.json"
    with file_lock(cache_dir / ".digests.lock"):
        known = json.loads(index.read_text()) if index.exists() else {}
        if key in known:
            return known[key]
        digest = sha256_file(path)
        known[key] = digest
        tmp = index.with_suffix(".tmp")
        tmp.write_text(json.dumps(known, indent=0))
        tmp.replace(index)
    return digest


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock (two data-parallel ranks may convert the same model)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
