"""A snapshot is checked by its content, not by what its manifest says about it.

Each forgery below is the red team's: edit the data files, then rewrite every per-file record and
count in ``manifest.json`` to match -- everything but the content digest. Loading must refuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from rlsd.context.ingest import IngestResult
from rlsd.context.snapshot import (
    MANIFEST_FILE,
    PRIVILEGED_FILE,
    TASKS_FILE,
    SnapshotError,
    content_digest,
    load_snapshot,
    write_snapshot,
)
from rlsd.tasks import generate_arithmetic_tasks

Lines = list[dict]


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    train, heldout = generate_arithmetic_tasks({"n_train": 6, "n_heldout": 3, "few_shot": 0})
    path, _ = write_snapshot(train + heldout, tmp_path / "snaps", name="arith", manifest_extra={})
    return path


def _read(path: Path) -> tuple[Lines, Lines, dict]:
    tasks = [json.loads(x) for x in (path / TASKS_FILE).read_text().splitlines()]
    priv = [json.loads(x) for x in (path / PRIVILEGED_FILE).read_text().splitlines()]
    return tasks, priv, json.loads((path / MANIFEST_FILE).read_text())


def _recount(tasks: Lines) -> dict:
    def table(key: str) -> dict:
        out: dict[str, dict[str, int]] = {}
        for t in tasks:
            row = out.setdefault(str(t["metadata"].get(key, "unknown")), {"train": 0, "heldout": 0})
            row[t["split"]] += 1
        return dict(sorted(out.items()))

    return {
        "tasks": len(tasks),
        "train": sum(t["split"] == "train" for t in tasks),
        "heldout": sum(t["split"] == "heldout" for t in tasks),
        "by_domain": table("domain"),
        "by_source": table("context_source"),
    }


def _forge(
    path: Path, edit: Callable[[Lines, Lines], None], *, redigest: bool = False
) -> tuple[str, str]:
    """Apply ``edit`` to the data files and make the manifest agree with them everywhere but
    in the content digest (and there too with ``redigest``); returns (claimed, recomputed)."""
    tasks, priv, manifest = _read(path)
    edit(tasks, priv)
    tasks_bytes = "".join(json.dumps(t, sort_keys=True) + "\n" for t in tasks).encode()
    priv_bytes = "".join(json.dumps(p, sort_keys=True) + "\n" for p in priv).encode()
    (path / TASKS_FILE).write_bytes(tasks_bytes)
    os.chmod(path / PRIVILEGED_FILE, 0o600)
    (path / PRIVILEGED_FILE).write_bytes(priv_bytes)
    for name, data, n in ((TASKS_FILE, tasks_bytes, len(tasks)), (PRIVILEGED_FILE, priv_bytes, len(priv))):  # fmt: skip
        manifest["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), lines=n)
    manifest["counts"] = _recount(tasks)
    recomputed = content_digest(tasks_bytes, priv_bytes)
    if redigest:
        manifest["digest"] = recomputed
    (path / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return manifest["digest"], recomputed


def _refused(path: Path, claimed: str, recomputed: str) -> None:
    assert claimed != recomputed
    with pytest.raises(SnapshotError) as err:
        load_snapshot(path)
    msg = str(err.value)
    assert str(path) in msg and claimed in msg and recomputed in msg, msg
    assert "per-file sha256 match the files" in msg  # the forger rewrote them: not evidence


def test_an_edited_answer_with_rewritten_file_hashes_is_refused(snapshot: Path) -> None:
    def edit(tasks: Lines, priv: Lines) -> None:
        tasks[0]["answer"] = str(tasks[0]["answer"]) + "1"

    _refused(snapshot, *_forge(snapshot, edit))


def test_a_heldout_task_moved_into_train_is_refused(snapshot: Path) -> None:
    before = load_snapshot(snapshot)
    moved = before.split("heldout")[0].id

    def edit(tasks: Lines, priv: Lines) -> None:
        (row,) = [t for t in tasks if t["id"] == moved]
        row["split"] = "train"

    claimed, recomputed = _forge(snapshot, edit)
    assert json.loads((snapshot / MANIFEST_FILE).read_text())["counts"]["heldout"] == 2
    _refused(snapshot, claimed, recomputed)


def test_a_dropped_task_is_refused(snapshot: Path) -> None:
    def edit(tasks: Lines, priv: Lines) -> None:
        dropped = tasks.pop(2)["id"]
        priv[:] = [p for p in priv if p["id"] != dropped]

    _refused(snapshot, *_forge(snapshot, edit))


def test_an_edited_privileged_text_is_refused_even_with_its_digest_updated(
    snapshot: Path,
) -> None:
    def edit(tasks: Lines, priv: Lines) -> None:
        priv[0]["privileged_context"] += " The answer is 7."
        text = priv[0]["privileged_context"]
        tasks[0]["privileged_sha256"] = "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    _refused(snapshot, *_forge(snapshot, edit))


def test_a_fully_redigested_snapshot_is_another_snapshot(snapshot: Path) -> None:
    # The digest is no signature: whoever rewrites it too gets a snapshot that loads, under a
    # new digest -- which is what lineage shows and a resume refuses (test_checkpoint_integrity).
    old = load_snapshot(snapshot).digest

    def edit(tasks: Lines, priv: Lines) -> None:
        tasks[0]["answer"] = "12345"

    _, recomputed = _forge(snapshot, edit, redigest=True)
    forged = load_snapshot(snapshot)
    assert forged.digest == recomputed != old
    assert {t.answer for t in forged.tasks} >= {"12345"}


def test_a_snapshot_keeps_loading_under_its_own_digest(demo_snapshot: IngestResult) -> None:
    # an ingested snapshot (sources, policy, counts per source) passes every check unchanged
    snap = load_snapshot(demo_snapshot.path)
    manifest = json.loads((demo_snapshot.path / MANIFEST_FILE).read_text())
    assert snap.digest == manifest["digest"] == demo_snapshot.snapshot.digest


@pytest.mark.parametrize("missing", [PRIVILEGED_FILE, TASKS_FILE])
def test_a_missing_data_file_is_named(snapshot: Path, missing: str) -> None:
    (snapshot / missing).unlink()
    with pytest.raises(SnapshotError, match=f"{snapshot / missing}: missing"):
        load_snapshot(snapshot)


def test_a_manifest_without_files_is_named(snapshot: Path) -> None:
    manifest = json.loads((snapshot / MANIFEST_FILE).read_text())
    del manifest["files"]
    (snapshot / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=r"manifest\.json: invalid manifest\n.*files"):
        load_snapshot(snapshot)


def test_a_manifest_whose_files_lack_an_entry_is_named(snapshot: Path) -> None:
    manifest = json.loads((snapshot / MANIFEST_FILE).read_text())
    del manifest["files"][PRIVILEGED_FILE]
    (snapshot / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=rf"files\.{PRIVILEGED_FILE} is missing"):
        load_snapshot(snapshot)


def test_a_manifest_that_lies_about_its_counts_or_files_is_refused(
    snapshot: Path, tmp_path: Path
) -> None:
    counts = tmp_path / "counts"
    shutil.copytree(snapshot, counts)
    manifest = json.loads((counts / MANIFEST_FILE).read_text())
    manifest["counts"]["by_domain"]["sql"] = {"train": 1, "heldout": 0}
    (counts / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=r"counts\.by_domain = .*'sql'"):
        load_snapshot(counts)

    files = tmp_path / "files"
    shutil.copytree(snapshot, files)
    manifest = json.loads((files / MANIFEST_FILE).read_text())
    manifest["files"][TASKS_FILE]["sha256"] = "0" * 64
    (files / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(SnapshotError, match=rf"files\.{TASKS_FILE}\.sha256 = 0000"):
        load_snapshot(files)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda t, p: t[0].pop("privileged_sha256"), r"tasks\.jsonl:1: field 'privileged_sha256'"),
        (lambda t, p: p[0].pop("id"), r"privileged\.jsonl:1: field 'id' is missing"),
        (lambda t, p: p.pop(0), r"tasks\.jsonl:\d+: task .* has no privileged row"),
        (lambda t, p: t.append(dict(t[0])), r"tasks\.jsonl:\d+: task id .* repeats"),
    ],
    ids=["no-privileged-digest", "no-privileged-id", "no-privileged-row", "repeated-id"],
)
def test_malformed_rows_are_snapshot_errors_not_key_errors(
    snapshot: Path, edit: Callable[[Lines, Lines], None], match: str
) -> None:
    # redigested, so the rows themselves are what the loader meets
    _forge(snapshot, edit, redigest=True)
    with pytest.raises(SnapshotError, match=match):
        load_snapshot(snapshot)
