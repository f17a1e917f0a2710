"""The trainer reads snapshots made by `rlsd ingest`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsd.context.ingest import ingest
from rlsd.context.snapshot import load_snapshot
from rlsd.train.data import DatasetError, eval_subset, load_run_tasks
from rlsd.train.trainer import ResumeError, train
from tests.conftest import tiny_config
from tests.helpers.context_store import make_store


def _rows(n: int, offset: int = 0) -> list[tuple]:
    return [
        (f"kb-{i:03d}", f"What is {i} plus {i}?", str(2 * i), f"Add {i} and {i}: {i} + {i} = {2 * i}.",
         f"wiki/{i}", "math-answer")
        for i in range(offset, offset + n)
    ]  # fmt: skip


def _snapshot(tmp_path: Path, rows: list[tuple], name: str) -> Path:
    store = make_store(tmp_path / f"{name}.sqlite", rows)
    src = {
        "name": "kb",
        "url": f"sqlite:///{store}",
        "table": "kb",
        "columns": {"id": "ref", "prompt": "ask", "answer": "gold",
                    "privileged_context": "solution", "source": "origin", "verifier": "tool"},
        "domain": "arithmetic",
        "heldout_fraction": 0.25,
        "prompt_template": "Solve: {prompt}\\nEnd with '#### <number>'.",
    }  # fmt: skip
    sources = tmp_path / f"{name}.yaml"
    sources.write_text(json.dumps({"sources": [src]}))
    policy = tmp_path / "policy.yaml"
    policy.write_text("allowed_sources: ['*']\n")
    return ingest(sources, policy_path=policy, out_root=tmp_path / f"snaps-{name}").path


def test_trainer_trains_from_a_snapshot_and_records_its_digest(tiny_model_dir, tmp_path):
    snap = _snapshot(tmp_path, _rows(40), "a")
    cfg = tiny_config(tiny_model_dir, tmp_path / "run", **{"task.dataset": str(snap),
                                                           "algo.name": "rlsd"})  # fmt: skip
    result = train(cfg)
    loaded = load_snapshot(snap)
    lineage = json.loads((tmp_path / "run" / "dataset.json").read_text())
    assert lineage["digest"] == loaded.digest and lineage["dataset"] == str(snap)
    assert lineage["train"] + lineage["heldout"] == 40 and lineage["heldout"] > 0
    assert result.eval_after is not None and result.eval_after.num_tasks == min(
        8, lineage["heldout"]
    )
    # the rollouts were drawn from the snapshot's training split
    train_ids = {t.id for t in loaded.split("train")}
    samples = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and train_ids

    # resuming against a different snapshot is refused
    other = _snapshot(tmp_path, _rows(40, offset=100), "b")
    cfg2 = tiny_config(tiny_model_dir, tmp_path / "run", **{"task.dataset": str(snap),
                                                            "run.steps": 3})  # fmt: skip
    (tmp_path / "run" / "dataset.json").write_text(json.dumps({**lineage, "digest": "sha256:x"}))
    with pytest.raises(ResumeError, match="dataset digest"):
        train(cfg2, resume=True)
    assert other != snap


def test_trainer_takes_an_already_loaded_snapshot(tiny_model_dir, tmp_path, monkeypatch):
    snap = _snapshot(tmp_path, _rows(20), "l")
    loaded = load_snapshot(snap)

    def no_reload(*args, **kwargs):
        raise AssertionError("the snapshot handed over must not be read again")

    monkeypatch.setattr("rlsd.context.snapshot.load_snapshot", no_reload)
    cfg = tiny_config(tiny_model_dir, tmp_path / "run", **{"task.dataset": str(snap),
                      "algo.name": "grpo", "run.steps": 1, "eval.num_tasks": 0})  # fmt: skip
    train(cfg, snapshot=loaded, show_progress=False)
    lineage = json.loads((tmp_path / "run" / "dataset.json").read_text())
    assert lineage["digest"] == loaded.digest
    assert lineage["train"] + lineage["heldout"] == 20


def test_domain_filter_and_missing_verifier_errors(tmp_path):
    from rlsd.train.config import TaskConfig

    snap = _snapshot(tmp_path, _rows(12), "c")
    with pytest.raises(DatasetError, match=r"\['sql'\] not in snapshot"):
        load_run_tasks(TaskConfig(dataset=str(snap), domains=["sql"]))
    tasks = load_run_tasks(TaskConfig(dataset=str(snap), domains=["arithmetic"]))
    assert tasks.lineage["domains"] == ["arithmetic"] and tasks.train


def test_eval_subset_takes_every_domain_round_robin():
    from rlsd.tasks.record import ChatMessage, Task

    def t(i: int, d: str) -> Task:
        return Task(id=f"{d}-{i}", prompt=[ChatMessage(role="user", content="q")], answer="1",
                    privileged_context="p", verifier="math-answer", split="heldout", source="s",
                    metadata={"domain": d})  # fmt: skip

    tasks = [t(i, "a") for i in range(5)] + [t(i, "b") for i in range(2)]
    assert [x.id for x in eval_subset(tasks, 5)] == ["a-0", "b-0", "a-1", "b-1", "a-2"]
    single = [t(i, "a") for i in range(5)]
    assert eval_subset(single, 3) == single[:3]


def test_rlsd_writes_token_credit_samples_the_report_can_render(tiny_model_dir, tmp_path):
    from rlsd.tracking.credit_view import read_credit_samples, render_credit_html

    cfg = tiny_config(tiny_model_dir, tmp_path / "run", **{
        "algo.name": "rlsd", "run.steps": 3, "run.credit_samples": 2,
        "run.credit_sample_every": 2, "eval.num_tasks": 0})  # fmt: skip
    train(cfg)
    samples = read_credit_samples(tmp_path / "run" / "credit_samples.jsonl")
    assert samples and {x.step for x in samples} <= {0, 2} and len(samples) <= 4
    for x in samples:
        assert x.seq_advantage != 0 and len(x.tokens) == len(x.weight) > 0
        # Â_t has the verifier's sign, and its magnitude is inside the clip band around |A|
        assert all((a > 0) == (x.seq_advantage > 0) for a in x.token_advantage)
        assert all(1 - 0.2 - 1e-5 <= w <= 1 + 0.2 + 1e-5 for w in x.weight)
    html = render_credit_html(samples, tmp_path / "credit.html")
    assert html.read_text().count("<span") >= sum(len(x.tokens) for x in samples)
    grpo = tiny_config(tiny_model_dir, tmp_path / "grpo", **{"algo.name": "grpo",
                                                              "eval.num_tasks": 0})  # fmt: skip
    train(grpo)
    assert not (tmp_path / "grpo" / "credit_samples.jsonl").exists()
