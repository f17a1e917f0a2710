"""Versioned dataset snapshots: what ingestion produces and the trainer reads.

A snapshot is a directory named ``<name>-<digest12>``::

    manifest.json        format, content digest, counts per split / domain / source, the sources
                         (URL with its ${ENV} references, query digest), the data policy's digest,
                         the split rule, file digests, validation outcome
    tasks.jsonl          one task per line, sorted by id: the student prompt, answer, verifier,
                         split, domain, provenance -- and only a digest of the privileged text
    privileged.jsonl     id -> redacted privileged text; governed data for the trainer only,
                         never logged as an artifact unless the policy allows it
    validation/          per-source Great Expectations results and a summary.json
    quarantine/          per-source quarantined rows (reasons, digests; no privileged text)
    images/              the images the tasks reference, by pixel digest:
                         ``images/<hex[:2]>/<hex>.png`` (an :class:`~rlsd.tasks.images.ImageStore`)

The content digest covers ``tasks.jsonl`` and ``privileged.jsonl`` (both canonical JSON, sorted
by id), so the same inputs give the same digest whatever the database engine or the time of
ingestion, and a snapshot directory is written once (to a temporary name, then renamed). Each task
line holds its split, its answer and its image references (``"sha256:<hex>"`` over the pixels),
so the digest covers all of them, and the images through their pixel digests; the manifest counts
the images (``images.count``, ``images.bytes``).

:func:`load_snapshot` trusts none of the manifest's claims about the data: it recomputes the
content digest from the files and refuses a snapshot whose digest is not the manifest's, then
checks the privileged digests, the counts and every referenced image's pixels. The per-file
sha256 under ``files`` are checked for consistency only: whoever can edit a data file can edit
them too. (Whoever rewrites the manifest's digest as well makes a *different* snapshot: a resume
compares the digest a run recorded and refuses it.)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rlsd.configs.loading import validation_problems
from rlsd.context.manifest import Counts, SnapshotManifest, SplitCounts, manifest_json
from rlsd.context.reader import privileged_digest
from rlsd.tasks.images import (
    ImageIntegrityError,
    ImageNotFoundError,
    ImageStore,
    default_image_store,
    find_image,
    is_digest_ref,
    pixel_digest,
    relative_image_path,
)
from rlsd.tasks.record import Task

SNAPSHOT_FORMAT = "rlsd-snapshot/1"
TASKS_FILE = "tasks.jsonl"
PRIVILEGED_FILE = "privileged.jsonl"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "LATEST"
IMAGES_DIR = "images"


class SnapshotError(ValueError):
    """A snapshot is missing, malformed or does not match its manifest."""


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def task_line(task: Task) -> dict[str, Any]:
    """A task as stored in ``tasks.jsonl``: everything but the privileged text."""
    data = task.model_dump(mode="json")
    data["privileged_sha256"] = privileged_digest(data.pop("privileged_context"))
    return data


def encode_tasks(tasks: Sequence[Task]) -> tuple[bytes, bytes]:
    """The two data files' bytes, sorted by id (ids must be unique)."""
    ordered = sorted(tasks, key=lambda t: t.id)
    ids = [t.id for t in ordered]
    dup = sorted({a for a, b in zip(ids, ids[1:], strict=False) if a == b})
    if dup:
        raise SnapshotError(f"task ids repeat in the snapshot: {dup[:10]}")
    tasks_bytes = "".join(_canon(task_line(t)) + "\n" for t in ordered).encode("utf-8")
    priv_bytes = "".join(
        _canon({"id": t.id, "privileged_context": t.privileged_context}) + "\n" for t in ordered
    ).encode("utf-8")
    return tasks_bytes, priv_bytes


def content_digest(tasks_bytes: bytes, priv_bytes: bytes) -> str:
    h = hashlib.sha256()
    for name, data in ((TASKS_FILE, tasks_bytes), (PRIVILEGED_FILE, priv_bytes)):
        h.update(f"{name}\n{len(data)}\n".encode())
        h.update(data)
    return "sha256:" + h.hexdigest()


def _counts(tasks: Sequence[Task]) -> Counts:
    by_domain: dict[str, dict[str, int]] = {}
    by_source: dict[str, dict[str, int]] = {}
    for t in tasks:
        domain = str(t.metadata.get("domain", "unknown"))
        source = str(t.metadata.get("context_source", "unknown"))
        for table, key in ((by_domain, domain), (by_source, source)):
            row = table.setdefault(key, {"train": 0, "heldout": 0})
            row[t.split] += 1
    return Counts(
        tasks=len(tasks),
        train=sum(t.split == "train" for t in tasks),
        heldout=sum(t.split == "heldout" for t in tasks),
        by_domain={k: SplitCounts(**v) for k, v in sorted(by_domain.items())},
        by_source={k: SplitCounts(**v) for k, v in sorted(by_source.items())},
    )


def image_refs(tasks: Iterable[Task]) -> list[str]:
    """The distinct image digests ``tasks`` reference, sorted; plain paths are refused."""
    refs: set[str] = set()
    for t in tasks:
        for ref in t.images:
            if not is_digest_ref(ref):
                raise SnapshotError(
                    f"task {t.id!r} references image {ref!r} by path; a snapshot holds images "
                    "by digest only -- put it into an ImageStore and reference the "
                    "'sha256:<hex>' it returns"
                )
            refs.add(ref)
    return sorted(refs)


def _copy_images(refs: Sequence[str], stores: Sequence[ImageStore], dest: Path) -> int:
    """Copy each image into ``dest/<hex[:2]>/<hex>.png`` after checking its pixels; bytes."""
    total = 0
    for ref in refs:
        try:
            src = find_image(ref, stores)
        except ImageNotFoundError as exc:
            raise SnapshotError(f"cannot snapshot an image a task references: {exc}") from exc
        target = dest / relative_image_path(ref)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        try:
            ImageStore(dest).verify(ref)
        except (ImageIntegrityError, OSError, ValueError) as exc:
            raise SnapshotError(f"image {ref} from {src} is corrupt: {exc}") from exc
        total += target.stat().st_size
    return total


def write_snapshot(
    tasks: Sequence[Task],
    out_root: Path | str,
    *,
    name: str,
    manifest_extra: Mapping[str, Any],
    evidence_dir: Path | str | None = None,
    image_stores: Sequence[ImageStore] | None = None,
) -> tuple[Path, bool]:
    """Write (or find) the snapshot of ``tasks``; returns (directory, created).

    ``manifest_extra`` adds top-level manifest fields (ingestion's sources, policy, ...; see
    :class:`~rlsd.context.manifest.SnapshotManifest`). ``evidence_dir`` holds ``validation/`` and ``quarantine/`` to move in. If a snapshot with the
    same content digest exists it is kept as it is (``created`` is False): its evidence is that
    of the ingestion that first produced it.

    Images the tasks reference (by digest) are looked up in ``image_stores`` in order (default:
    the default store, ``$RLSD_CACHE_DIR/images``), checked and copied into ``images/``.
    """
    out_root = Path(out_root)
    tasks_bytes, priv_bytes = encode_tasks(tasks)
    digest = content_digest(tasks_bytes, priv_bytes)
    refs = image_refs(tasks)
    final = out_root / f"{name}-{digest.removeprefix('sha256:')[:12]}"
    out_root.mkdir(parents=True, exist_ok=True)
    if (final / MANIFEST_FILE).exists():
        existing = json.loads((final / MANIFEST_FILE).read_text(encoding="utf-8"))
        if existing.get("digest") != digest:
            raise SnapshotError(
                f"{final} exists with digest {existing.get('digest')}, not {digest}"
            )
        _set_latest(out_root, final.name)
        return final, False
    fields: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "name": name,
        "digest": digest,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "counts": _counts(tasks),
        "files": {
            TASKS_FILE: {"sha256": hashlib.sha256(tasks_bytes).hexdigest(), "lines": len(tasks)},
            PRIVILEGED_FILE: {
                "sha256": hashlib.sha256(priv_bytes).hexdigest(),
                "lines": len(tasks),
                "privileged": True,
            },
        },
        **manifest_extra,
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_root))
    try:
        image_bytes = 0
        if refs:
            stores = list(image_stores) if image_stores is not None else [default_image_store()]
            image_bytes = _copy_images(refs, stores, tmp / IMAGES_DIR)
        fields["images"] = {"dir": IMAGES_DIR, "count": len(refs), "bytes": image_bytes}
        manifest = SnapshotManifest.model_validate(fields)
        (tmp / TASKS_FILE).write_bytes(tasks_bytes)
        (tmp / PRIVILEGED_FILE).write_bytes(priv_bytes)
        os.chmod(tmp / PRIVILEGED_FILE, 0o600)  # governed data: owner-only, like the source DB
        if evidence_dir is not None:
            for sub in ("validation", "quarantine"):
                src = Path(evidence_dir) / sub
                if src.exists():
                    shutil.copytree(src, tmp / sub)
        (tmp / MANIFEST_FILE).write_text(manifest_json(manifest), encoding="utf-8")
        os.chmod(tmp, 0o755)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _set_latest(out_root, final.name)
    return final, True


def _set_latest(out_root: Path, dirname: str) -> None:
    tmp = out_root / f".{LATEST_FILE}.tmp"
    tmp.write_text(dirname + "\n", encoding="utf-8")
    tmp.replace(out_root / LATEST_FILE)


@dataclass
class Snapshot:
    """A loaded snapshot: its folder, its manifest and every task (privileged text included).

    Made by :func:`load_snapshot` only: ``content_digest`` is the digest it recomputed from the
    files, which is what a run records and a resume compares -- never the manifest's word."""

    path: Path
    manifest: SnapshotManifest
    tasks: list[Task]
    content_digest: str

    @property
    def digest(self) -> str:
        return self.content_digest

    def split(self, which: str, domains: Iterable[str] | None = None) -> list[Task]:
        wanted = set(domains) if domains else None
        return [
            t
            for t in self.tasks
            if t.split == which and (wanted is None or t.metadata.get("domain") in wanted)
        ]

    @property
    def domains(self) -> list[str]:
        return sorted(self.manifest.counts.by_domain)

    @property
    def image_store(self) -> ImageStore:
        """The snapshot's images (``images/``), to resolve the tasks' image digests."""
        return ImageStore(self.path / IMAGES_DIR)


def resolve_snapshot_path(path: Path | str) -> Path:
    """A snapshot directory, its manifest, or a snapshots root (its LATEST snapshot)."""
    p = Path(path)
    if p.is_file() and p.name == MANIFEST_FILE:
        p = p.parent
    if (p / MANIFEST_FILE).exists():
        return p
    if (p / LATEST_FILE).exists():
        return p / (p / LATEST_FILE).read_text(encoding="utf-8").strip()
    raise SnapshotError(
        f"{p}: not a snapshot (no {MANIFEST_FILE}) nor a snapshots folder (no {LATEST_FILE}); "
        "run `rlsd ingest` to make one"
    )


def read_manifest(path: Path) -> SnapshotManifest:
    """``manifest.json`` at ``path``, typed; a missing, unreadable or foreign one is an error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SnapshotError(f"{path}: unreadable manifest: {exc}") from exc
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != SNAPSHOT_FORMAT:
        raise SnapshotError(f"{path}: format {fmt!r}, expected {SNAPSHOT_FORMAT!r}")
    try:
        return SnapshotManifest.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, data)
        raise SnapshotError(f"{path}: invalid manifest\n  " + "\n  ".join(problems)) from None


def _read_data_file(root: Path, name: str) -> bytes:
    path = root / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(
            f"{path}: missing; every snapshot has {TASKS_FILE} and {PRIVILEGED_FILE}"
        ) from None
    except OSError as exc:
        raise SnapshotError(f"{path}: unreadable: {exc}") from exc


def _jsonl(path: Path, data: bytes, keys: Sequence[str]) -> list[tuple[int, dict[str, Any]]]:
    """The records of a JSONL file, each an object with ``keys``; errors name file and line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{path}: not UTF-8: {exc}") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SnapshotError(f"{path}:{n}: not JSON: {exc}") from None
        if not isinstance(rec, dict):
            raise SnapshotError(f"{path}:{n}: not a JSON object")
        missing = [k for k in keys if k not in rec]
        if missing:
            raise SnapshotError(f"{path}:{n}: field {missing[0]!r} is missing")
        out.append((n, rec))
    return out


def _check_digest(
    root: Path, manifest: SnapshotManifest, tasks_bytes: bytes, priv_bytes: bytes
) -> str:
    """The content digest recomputed from the two data files; a mismatch is refused.

    The per-file sha256 in the manifest sit next to the digest they would vouch for, so whoever
    edits a data file can rewrite them too: they are checked only for consistency, after the
    digest, and never stand in for it."""
    recomputed = content_digest(tasks_bytes, priv_bytes)
    claimed = manifest.digest
    records = manifest.files
    if recomputed != claimed:
        hints = []
        for fname, data in ((TASKS_FILE, tasks_bytes), (PRIVILEGED_FILE, priv_bytes)):
            rec = records.get(fname)
            got = hashlib.sha256(data).hexdigest()
            if rec is not None and rec.sha256 != got:
                hints.append(
                    f"{root / fname}: sha256 {got[:16]}... does not match the manifest's "
                    f"{rec.sha256[:16]}..."
                )
        if not hints:
            hints.append(
                "the manifest's per-file sha256 match the files: they were rewritten with them"
            )
        raise SnapshotError(
            f"snapshot {root}: content digest {recomputed}, recomputed from {TASKS_FILE} and "
            f"{PRIVILEGED_FILE}, is not the manifest's digest {claimed}; the snapshot was "
            "modified after ingestion\n  " + "\n  ".join(hints)
        )
    for fname, data in ((TASKS_FILE, tasks_bytes), (PRIVILEGED_FILE, priv_bytes)):
        rec = records.get(fname)
        if rec is None:
            raise SnapshotError(
                f"{root / MANIFEST_FILE}: files.{fname} is missing (files lists {sorted(records)})"
            )
        got = hashlib.sha256(data).hexdigest()
        if rec.sha256 != got:
            raise SnapshotError(
                f"{root / MANIFEST_FILE}: files.{fname}.sha256 = {rec.sha256[:16]}..., but the "
                f"file (whose content matches the digest) hashes to {got[:16]}..."
            )
    return recomputed


def _check_counts(root: Path, manifest: SnapshotManifest, tasks: list[Task]) -> None:
    """The manifest's counts are what the tasks give (a run reads its domains from them)."""

    def view(c: Counts) -> dict[str, Any]:
        table = lambda t: {k: (v.train, v.heldout) for k, v in t.items()}  # noqa: E731
        return {
            "tasks": c.tasks,
            "train": c.train,
            "heldout": c.heldout,
            "by_domain": table(c.by_domain),
            "by_source": table(c.by_source),
        }

    want, got = view(manifest.counts), view(_counts(tasks))
    for key in want:
        if want[key] != got[key]:
            raise SnapshotError(
                f"{root / MANIFEST_FILE}: counts.{key} = {want[key]}, but {TASKS_FILE} gives "
                f"{got[key]}"
            )


def load_snapshot(path: Path | str) -> Snapshot:
    """Read a snapshot and check it by its content.

    The content digest is recomputed from ``tasks.jsonl`` and ``privileged.jsonl`` and must be
    the manifest's; the tasks' privileged digests, the manifest's counts and every referenced
    image's pixels must match too. Any failure is a :class:`SnapshotError` naming the file.

    There is no unchecked mode: everything downstream (a run's lineage, a resume's comparison,
    the gate) takes the digest as the data's identity, and the check costs a hash of the files
    plus one decode per image."""
    root = resolve_snapshot_path(path)
    manifest = read_manifest(root / MANIFEST_FILE)
    # Read once: what is checked is what is parsed (no second read an edit could slip into).
    tasks_bytes = _read_data_file(root, TASKS_FILE)
    priv_bytes = _read_data_file(root, PRIVILEGED_FILE)
    digest = _check_digest(root, manifest, tasks_bytes, priv_bytes)
    privileged: dict[str, str] = {}
    for n, rec in _jsonl(root / PRIVILEGED_FILE, priv_bytes, ("id", "privileged_context")):
        if rec["id"] in privileged:
            raise SnapshotError(f"{root / PRIVILEGED_FILE}:{n}: id {rec['id']!r} repeats")
        privileged[rec["id"]] = rec["privileged_context"]
    tasks = []
    seen: set[str] = set()
    for n, rec in _jsonl(root / TASKS_FILE, tasks_bytes, ("id", "privileged_sha256")):
        where = f"{root / TASKS_FILE}:{n}"
        task_id = rec["id"]
        if task_id in seen:
            raise SnapshotError(f"{where}: task id {task_id!r} repeats")
        seen.add(task_id)
        digest_line = rec.pop("privileged_sha256")
        if task_id not in privileged:
            raise SnapshotError(f"{where}: task {task_id!r} has no privileged row")
        rec["privileged_context"] = privileged[task_id]
        if privileged_digest(rec["privileged_context"]) != digest_line:
            raise SnapshotError(f"{where}: privileged digest mismatch for task {task_id!r}")
        try:
            tasks.append(Task.model_validate(rec))
        except ValueError as exc:
            raise SnapshotError(f"{where}: invalid task: {exc}") from exc
    orphans = sorted(set(privileged) - seen)
    if orphans:
        raise SnapshotError(f"{root / PRIVILEGED_FILE}: rows for ids no task has: {orphans[:10]}")
    _check_counts(root, manifest, tasks)
    _check_images(root, manifest, tasks)
    return Snapshot(root, manifest, tasks, digest)


def _check_images(root: Path, manifest: SnapshotManifest, tasks: list[Task]) -> None:
    """Every referenced image is in ``images/`` and its pixels match its digest.

    The task lines name images by pixel digest, so the content digest covers the images only
    through this check."""
    first_user: dict[str, str] = {}
    for t in tasks:
        for ref in t.images:
            first_user.setdefault(ref, t.id)
    try:
        refs = image_refs(tasks)
    except SnapshotError as exc:
        raise SnapshotError(f"{root / TASKS_FILE}: {exc}") from exc
    want = manifest.images.count if manifest.images is not None else None
    if want is not None and want != len(refs):
        raise SnapshotError(
            f"{root / MANIFEST_FILE}: images.count = {want}, but the tasks reference {len(refs)}"
        )
    store = ImageStore(root / IMAGES_DIR)
    for ref in refs:
        path = store.path(ref)
        if not path.is_file():
            raise SnapshotError(
                f"{path}: image {ref} (task {first_user[ref]!r}) is missing from the snapshot"
            )
        try:
            got = pixel_digest(store.open(ref))
        except (OSError, ValueError) as exc:
            raise SnapshotError(f"{path}: image {ref} is unreadable: {exc}") from exc
        if got != ref:
            raise SnapshotError(
                f"{path}: pixels hash to {got[:23]}..., not {ref[:23]}... (task "
                f"{first_user[ref]!r}); the snapshot was modified after ingestion"
            )
