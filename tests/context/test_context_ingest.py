"""Ingestion into versioned snapshots, and the leakage guard over every demo record."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rlsd.context import IngestionPolicyError, load_sources, read_source
from rlsd.context.ingest import IngestResult, ingest
from rlsd.context.manifest import SplitCounts, manifest_json
from rlsd.context.policy import Redactor, SourceNotAllowedError, load_privileged_policy
from rlsd.context.reader import hash_split
from rlsd.context.snapshot import SnapshotError, load_snapshot
from rlsd.demo import DEMO_SOURCES
from rlsd.tasks.leak import normalise
from tests.helpers.context_store import GOOD_ROWS, make_store

REPO = Path(__file__).resolve().parents[2]


def test_demo_snapshot_layout_counts_and_manifest(demo_snapshot: IngestResult) -> None:
    snap = load_snapshot(demo_snapshot.path)
    m = snap.manifest
    # the result carries the snapshot as loaded from disk
    assert demo_snapshot.snapshot.path == snap.path and demo_snapshot.snapshot.manifest == m
    assert [t.id for t in demo_snapshot.snapshot.tasks] == [t.id for t in snap.tasks]
    assert demo_snapshot.path.name.endswith(m.digest.removeprefix("sha256:")[:12])
    counts = m.counts
    assert counts.tasks == len(snap.tasks) == counts.train + counts.heldout
    assert {s.name for s in m.sources} == set(counts.by_source)
    for s in m.sources:
        c = counts.by_source[s.name]
        assert s.tasks == c.train + c.heldout
        assert "${RLSD_DEMO_STORE}" in s.url  # the reference, never the resolved value
    assert m.validation is not None and m.validation.passed is True
    assert m.policy is not None and m.policy.store_privileged_text is False
    assert (
        m.policy.digest
        == load_privileged_policy(REPO / "policies/privileged_context.yaml").digest()
    )
    # GSM8K is held out whole (its split column wins); arithmetic keeps its generator's split
    assert counts.by_domain["gsm8k"].train == 0
    assert counts.by_domain["arithmetic"] == SplitCounts(train=256, heldout=64)
    # the typed manifest writes back the very bytes on disk: nothing lost, nothing added
    assert manifest_json(m) == (snap.path / "manifest.json").read_text(encoding="utf-8")
    # the student-visible file holds digests, never privileged text
    tasks_text = (snap.path / "tasks.jsonl").read_text()
    for t in snap.tasks[:: max(1, len(snap.tasks) // 50)]:
        assert len(t.privileged_context) < 12 or t.privileged_context not in tasks_text
    assert oct((snap.path / "privileged.jsonl").stat().st_mode)[-3:] == "600"
    summary = json.loads((snap.path / "validation" / "summary.json").read_text())
    assert set(summary["sources"]) == set(counts.by_source)


def test_same_inputs_same_digest_and_idempotent(
    demo_store: tuple[Path, dict], demo_snapshot: IngestResult, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("RLSD_DEMO_STORE", str(demo_store[0]))
    monkeypatch.chdir(tmp_path)  # defaults (policy, verifiers) resolve from the checkout
    again = ingest(DEMO_SOURCES, out_root=tmp_path / "a")
    assert again.snapshot.digest == demo_snapshot.snapshot.digest
    assert again.created
    third = ingest(DEMO_SOURCES, out_root=tmp_path / "a")
    assert not third.created and third.path == again.path
    assert (tmp_path / "a" / "LATEST").read_text().strip() == again.path.name
    assert load_snapshot(tmp_path / "a").digest == again.snapshot.digest


def _kb_sources(tmp_path: Path, store: Path, **extra: object) -> Path:
    src = {
        "name": "kb-hash",
        "url": f"sqlite:///{store}",
        "table": "kb",
        "columns": {"id": "ref", "prompt": "ask", "answer": "gold",
                    "privileged_context": "solution", "source": "origin", "verifier": "tool"},
        "domain": "arithmetic",
        "heldout_fraction": 0.5,
        **extra,
    }  # fmt: skip
    path = tmp_path / "kb_sources.yaml"
    path.write_text(json.dumps({"sources": [src]}))
    return path


def _policy(tmp_path: Path, allowed: str = "*") -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(f"allowed_sources: ['{allowed}']\n")
    return p


def test_hash_split_is_stable_when_rows_are_added(tmp_path: Path) -> None:
    rows = [(f"kb-{i}", f"What is {i} plus {i}?", str(2 * i), f"Add {i} and {i}: {2 * i}.",
             "wiki", "math-answer") for i in range(1, 41)]  # fmt: skip
    small = make_store(tmp_path / "small.sqlite", rows[:20])
    big = make_store(tmp_path / "big.sqlite", rows)
    policy = _policy(tmp_path)
    a = ingest(_kb_sources(tmp_path, small), policy_path=policy, out_root=tmp_path / "s")
    b = ingest(_kb_sources(tmp_path, big), policy_path=policy, out_root=tmp_path / "s")
    split_a = {t.id: t.split for t in load_snapshot(a.path).tasks}
    split_b = {t.id: t.split for t in load_snapshot(b.path).tasks}
    assert all(split_b[i] == s for i, s in split_a.items())  # old rows never move
    assert {s for s in split_b.values()} == {"train", "heldout"}
    assert all(split_b[i] == hash_split(i, 0.5) for i in split_b)
    assert a.snapshot.digest != b.snapshot.digest


def test_tampered_snapshot_is_refused(demo_snapshot: IngestResult, tmp_path: Path) -> None:
    copy = tmp_path / demo_snapshot.path.name
    shutil.copytree(demo_snapshot.path, copy)
    priv = copy / "privileged.jsonl"
    lines = priv.read_text().splitlines()
    rec = json.loads(lines[0])
    rec["privileged_context"] += " (edited)"
    lines[0] = json.dumps(rec)
    os.chmod(priv, 0o600)
    priv.write_text("\n".join(lines) + "\n")
    with pytest.raises(SnapshotError, match="privileged.jsonl: sha256 .* does not match"):
        load_snapshot(copy)
    with pytest.raises(SnapshotError, match="not a snapshot"):
        load_snapshot(tmp_path / "nowhere")


def test_sources_the_policy_does_not_allow_are_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "kb.sqlite", GOOD_ROWS)
    with pytest.raises(SourceNotAllowedError, match=r"\['kb-hash'\].*allowed_sources"):
        ingest(
            _kb_sources(tmp_path, store),
            policy_path=_policy(tmp_path, "crm-*"),
            out_root=tmp_path / "s",
        )
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").glob("kb-*"))


def test_threshold_stop_keeps_the_evidence(tmp_path: Path) -> None:
    bad = [("kb-bad", "What is 1 plus 1?", "two", "Add 1 and 1 to get 2.", "w", "math-answer")]
    store = make_store(tmp_path / "kb.sqlite", [*GOOD_ROWS, *bad])
    sources = _kb_sources(tmp_path, store, expectations={"answer_regex": "^[0-9]+$"})
    with pytest.raises(IngestionPolicyError) as exc:
        ingest(sources, policy_path=_policy(tmp_path), out_root=tmp_path / "s")
    assert "expect_column_values_to_match_regex(answer)" in str(exc.value)
    failed = list((tmp_path / "s" / "failed").glob("*/validation/kb-hash.quarantine.jsonl"))
    assert len(failed) == 1 and "kb-bad" in failed[0].read_text()
    assert not list((tmp_path / "s").glob("kb-sources-*"))  # no snapshot was written


def test_ids_claimed_by_two_sources_are_quarantined_not_merged(tmp_path: Path) -> None:
    a = make_store(tmp_path / "a.sqlite", GOOD_ROWS)
    b = make_store(tmp_path / "b.sqlite", GOOD_ROWS[:2])
    base = json.loads(_kb_sources(tmp_path, a).read_text())["sources"][0]
    other = {**base, "name": "kb-other", "url": f"sqlite:///{b}"}
    path = tmp_path / "two.yaml"
    path.write_text(json.dumps({"sources": [{**base, "policy": {"max_bad_fraction": 0.5}},
                                            {**other, "policy": {"max_bad_fraction": 1.0}}]}))  # fmt: skip
    res = ingest(path, policy_path=_policy(tmp_path), out_root=tmp_path / "s")
    ids = {t.id for t in load_snapshot(res.path).tasks}
    assert ids == {r[0] for r in GOOD_ROWS[2:]}
    q = (res.path / "quarantine" / "kb-other.jsonl").read_text()
    assert "duplicate_id_across_sources(kb-hash, kb-other)" in q


def test_no_student_prompt_holds_its_privileged_context_or_a_remnant(
    demo_store: tuple[Path, dict], demo_snapshot: IngestResult, monkeypatch
) -> None:
    """The leakage guard over every record of every demo source.

    Independent of the ingestion's own checks: the raw privileged text is read straight from the
    store, the student text and the redacted privileged text from the snapshot.
    """
    monkeypatch.setenv("RLSD_DEMO_STORE", str(demo_store[0]))
    policy = load_privileged_policy(REPO / "policies/privileged_context.yaml")
    redactor = Redactor(policy.redaction)
    snap = load_snapshot(demo_snapshot.path)
    by_id = {t.id: t for t in snap.tasks}
    checked = 0
    for cfg in load_sources(DEMO_SOURCES):
        rows = read_source(cfg)
        assert rows, cfg.name
        for row in rows:
            task = by_id[row["id"]]  # every demo row made it into the snapshot
            student = normalise(" ".join(m.content for m in task.prompt))
            raw = row["privileged_context"]
            redacted = task.privileged_context
            assert redacted == redactor.redact(raw)[0]
            for text in (raw, redacted):
                if len(normalise(text)) >= 8:
                    assert normalise(text) not in student, task.id
            # a remnant: the pieces between placeholders, and the values redaction removed
            for piece in redactor.placeholder_regex().split(redacted):
                if len(normalise(piece)) >= 40:
                    assert normalise(piece) not in student, task.id
            for m in redactor.find(raw):
                assert normalise(raw[m.start : m.end]) not in student, task.id
            assert not redactor.find(" ".join(m.content for m in task.prompt)), task.id
            checked += 1
    assert checked == len(snap.tasks) == demo_snapshot.snapshot.manifest.counts.tasks


def test_redaction_reaches_the_teacher_prompt(demo_snapshot: IngestResult) -> None:
    """Demo privileged text with PII (reviewers' notes) reaches the teacher prompt redacted."""
    from rlsd.configs import DEFAULT_CONFIG
    from rlsd.train.batch import teacher_messages
    from rlsd.train.config import load_config

    template = load_config(DEFAULT_CONFIG).teacher.prompt_template
    snap = load_snapshot(demo_snapshot.path)
    total: dict[str, int] = {}
    for s in snap.manifest.sources:
        for k, n in s.redactions.items():
            total[k] = total.get(k, 0) + n
    assert total.get("email", 0) > 0 and total.get("phone", 0) > 0, total
    redacted = [t for t in snap.tasks if "[REDACTED:" in t.privileged_context]
    assert redacted and sum(total.values()) >= len(redacted)
    redactor = Redactor()
    for t in redacted:
        teacher_text = " ".join(m["content"] for m in teacher_messages(t, template))
        assert "[REDACTED:" in teacher_text
        assert not redactor.find(teacher_text), t.id


def test_cli_ingest_reports_the_snapshot(
    demo_store: tuple[Path, dict], tmp_path: Path, monkeypatch
) -> None:
    from typer.testing import CliRunner

    from rlsd.cli import app

    monkeypatch.delenv("RLSD_DEMO_STORE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    out = runner.invoke(
        app, ["ingest", "--store", str(demo_store[0]), "--out", str(tmp_path / "snaps")]
    )
    assert out.exit_code == 0, out.output
    snap = load_snapshot(tmp_path / "snaps")
    assert snap.digest in out.output and "rlsd train --dataset" in out.output
    monkeypatch.delenv("RLSD_DEMO_STORE", raising=False)
    missing = runner.invoke(app, ["ingest", "--store", str(tmp_path / "none.sqlite")])
    assert missing.exit_code == 2 and "rlsd demo-store" in missing.output
