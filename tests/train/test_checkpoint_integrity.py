"""Checkpoints are durable and checked; a damaged latest one falls back to the one before it; a
resume on changed snapshot content is refused."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from torch import nn

from rlsd.context.snapshot import (
    MANIFEST_FILE,
    PRIVILEGED_FILE,
    TASKS_FILE,
    SnapshotError,
    content_digest,
    write_snapshot,
)
from rlsd.tasks import generate_arithmetic_tasks
from rlsd.train import checkpoint as ck
from rlsd.train.checkpoint import (
    STATE,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
    unwrapped_weights_hooks,
)
from rlsd.train.trainer import ResumeError, train
from tests.conftest import tiny_config

TIMING = ("time/", "perf/")


ACC_FILES = ["accelerate/model.safetensors", "accelerate/optimizer.bin",
             "accelerate/random_states_0.pkl", "accelerate/custom_checkpoint_0.pkl"]  # fmt: skip


def _parts(seed: int = 0, teacher: nn.Module | None = None):
    """A run's parts as the trainer prepares them: model and optimizer through accelerate,
    the scheduler (and a frozen teacher) registered for its checkpoints."""
    torch.manual_seed(seed)
    acc = Accelerator(cpu=True)
    model = nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0)
    model, opt = acc.prepare(model, opt)
    acc.register_for_checkpointing(sched)
    if teacher is not None:
        acc.register_for_checkpointing(teacher)
    unwrapped_weights_hooks(acc)
    return acc, model, opt, sched


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    opt.zero_grad()


def _save_steps(root: Path, steps: list[int], keep: int = 2) -> nn.Module:
    acc, model, opt, sched = _parts()
    for s in steps:
        _step(model, opt)
        save_checkpoint(root, s, acc, {"data_position": s}, keep=keep)
    return model


def _legacy_checkpoint(path: Path, model: nn.Module, opt, sched, files: bool = True) -> None:
    """A checkpoint as rlsd wrote it before accelerate's state (tensors beside the state)."""
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))  # fmt: skip
    torch.save(opt.state_dict(), path / "optimizer.pt")
    torch.save(sched.state_dict(), path / "scheduler.pt")
    torch.save({"python": __import__("random").getstate(), "numpy": __import__("numpy").random.get_state(),
                "torch": torch.get_rng_state(), "cuda": None}, path / "rng-rank0.pt")  # fmt: skip
    record = {p.name: {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
              for p in sorted(path.iterdir())}  # fmt: skip
    state = {"step": int(path.name.split("-")[1]), "data_position": 7}
    if files:
        state["files"] = record
    (path / STATE).write_text(json.dumps(state))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_files_and_folders_are_fsynced_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    # The real fsync and rename run; they are only watched, to see what was synced when.
    events: list[tuple[str, str]] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst, *a, **kw) -> None:
        events.append(("rename", f"{src} -> {dst}"))
        real_rename(src, dst, *a, **kw)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    root = tmp_path / "ckpt"
    acc, *_ = _parts(teacher=nn.Linear(4, 3))
    final = save_checkpoint(root, 3, acc, {})
    tmp = root / ".tmp-step-000003"
    (moved,) = [i for i, e in enumerate(events) if e == ("rename", f"{tmp} -> {final}")]
    before = {p for kind, p in events[:moved] if kind == "fsync"}
    files = {str(tmp / p.relative_to(final)) for p in final.rglob("*") if p.is_file()}
    assert files == {str(tmp / n) for n in [*ACC_FILES, "accelerate/custom_checkpoint_1.pkl", STATE]}  # fmt: skip
    assert files | {str(tmp), str(tmp / "accelerate")} <= before, sorted(files - before)
    assert ("fsync", str(root)) in events[moved:]


def test_the_state_records_every_file_and_old_checkpoints_go(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    _save_steps(root, [1, 2, 3])
    assert [p.name for p in list_checkpoints(root)] == ["step-000002", "step-000003"]
    state = json.loads((root / "step-000003" / STATE).read_text())
    assert sorted(state["files"]) == sorted(ACC_FILES)
    for name in ACC_FILES:
        f = root / "step-000003" / name
        assert state["files"][name] == {
            "bytes": f.stat().st_size,
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
        }
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("damage", ["truncated", "bit-flip", "missing-file", "no-state", "bad-state"])  # fmt: skip
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    root = tmp_path / "ckpt"
    _save_steps(root, [1, 2])
    acc, expected, opt, sched = _parts()
    load_checkpoint(root / "step-000001", acc, expected, opt, sched)
    latest = root / "step-000002"
    if damage == "truncated":
        _truncate(latest / "accelerate/model.safetensors")
    elif damage == "bit-flip":
        data = bytearray((latest / "accelerate/optimizer.bin").read_bytes())
        data[-100] ^= 1
        (latest / "accelerate/optimizer.bin").write_bytes(bytes(data))
    elif damage == "missing-file":
        (latest / "accelerate/custom_checkpoint_0.pkl").unlink()
    elif damage == "no-state":
        (latest / STATE).unlink()
    else:
        _truncate(latest / STATE)
    assert latest_checkpoint(root) == latest  # the run folder still holds a run
    with caplog.at_level(logging.WARNING, logger="rlsd.train"):
        got = resume_checkpoint(root)
    assert got is not None and got.path == root / "step-000001" and got.step == 1
    assert any(str(latest) in r.getMessage() for r in caplog.records), caplog.text
    acc, model, opt, sched = _parts(seed=1)
    assert not torch.equal(model.weight, expected.weight)
    ck.apply_checkpoint(got, acc, model, opt, sched)
    assert torch.equal(model.weight, expected.weight)
    with pytest.raises(CheckpointError, match=str(latest)):
        load_checkpoint(latest, *_parts())


def test_partial_folders_of_a_crash_are_never_taken(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    _save_steps(root, [1, 2])
    # a crash mid-write (temporary folder), mid-delete (trash) and a stray step folder
    (root / ".tmp-step-000003").mkdir()
    (root / ".tmp-step-000003" / "accelerate").mkdir()
    (root / ".tmp-step-000003" / "accelerate" / "model.safetensors").write_bytes(b"\0" * 10)
    (root / ".trash-step-000000").mkdir()
    (root / "step-000004").mkdir()
    (root / "step-notanumber").mkdir()
    got = resume_checkpoint(root)
    assert got is not None and got.path.name == "step-000002"
    acc, *_ = _parts()
    save_checkpoint(root, 3, acc, {}, keep=3)
    assert not (root / ".trash-step-000000").exists()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_numeric_order_past_a_million_steps(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    _save_steps(root, [999_999, 1_000_000])
    assert [p.name for p in list_checkpoints(root)] == ["step-999999", "step-1000000"]
    got = resume_checkpoint(root)
    assert got is not None and got.step == 1_000_000


def test_no_usable_checkpoint_is_an_error_and_none_at_all_is_a_fresh_start(
    tmp_path: Path,
) -> None:
    root = tmp_path / "ckpt"
    assert resume_checkpoint(root) is None
    _save_steps(root, [1, 2])
    for p in list_checkpoints(root):
        _truncate(p / "accelerate/model.safetensors")
    with pytest.raises(CheckpointError, match=r"no usable checkpoint among \['step-000001', 'step-000002'\]") as err:  # fmt: skip
        resume_checkpoint(root)
    assert "step-000001/accelerate/model.safetensors has" in str(err.value)


def test_a_checkpoint_of_the_earlier_layout_still_resumes(tmp_path: Path) -> None:
    # Runs started before checkpoints were accelerate's state resume rather than restart.
    root = tmp_path / "ckpt"
    acc, model, opt, sched = _parts()
    _step(model, opt)
    _legacy_checkpoint(root / "step-000001", model, opt, sched)
    got = resume_checkpoint(root)
    assert got is not None and got.step == 1 and got.legacy is not None
    acc2, fresh, opt2, sched2 = _parts(seed=1)
    assert ck.apply_checkpoint(got, acc2, fresh, opt2, sched2)["data_position"] == 7
    assert torch.equal(fresh.weight, model.weight)
    assert opt2.state_dict()["state"][0]["step"] == 1


def test_a_checkpoint_written_before_sizes_were_recorded_still_loads(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    acc, model, opt, sched = _parts()
    _step(model, opt)
    _legacy_checkpoint(root / "step-000001", model, opt, sched, files=False)
    step1 = model.weight.detach().clone()
    _step(model, opt)
    _legacy_checkpoint(root / "step-000002", model, opt, sched, files=False)
    _truncate(root / "step-000002" / "optimizer.pt")  # unreadable: found when read
    got = resume_checkpoint(root)
    assert got is not None and got.step == 1
    assert torch.equal(got.legacy.model["weight"], step1)  # step 1's, not step 2's


# --- through the trainer ---------------------------------------------------------------------


def _comparable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_truncated_latest_checkpoint_resumes_from_the_previous_and_matches_a_straight_run(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from safetensors.torch import load_file

    over = {"run.checkpoint_every": 1, "eval.num_tasks": 0, "algo.name": "rlsd",
            "teacher.sync_interval": 2}  # fmt: skip
    straight = tiny_config(tiny_model_dir, tmp_path / "straight", **over, **{"run.steps": 4})
    train(straight, show_progress=False)

    broken = tmp_path / "broken"
    train(tiny_config(tiny_model_dir, broken, **over, **{"run.steps": 3}), show_progress=False)
    ckpts = broken / "checkpoints"
    assert [p.name for p in list_checkpoints(ckpts)] == ["step-000002", "step-000003"]
    _truncate(ckpts / "step-000003" / "accelerate" / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger="rlsd.train"):
        train(
            tiny_config(tiny_model_dir, broken, **over, **{"run.steps": 4}),
            resume=True,
            show_progress=False,
        )
    assert any("step-000003" in r.getMessage() for r in caplog.records), caplog.text
    rows = _metrics(broken)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert _comparable(rows) == _comparable(_metrics(tmp_path / "straight"))
    wa = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    wb = load_file(str(broken / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_resume_with_every_checkpoint_damaged_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:  # fmt: skip
    over = {"run.steps": 1, "eval.num_tasks": 0, "algo.name": "grpo"}
    train(tiny_config(tiny_model_dir, tmp_path / "run", **over), show_progress=False)
    _truncate(tmp_path / "run" / "checkpoints" / "step-000001" / "accelerate" / "optimizer.bin")
    cfg = tiny_config(tiny_model_dir, tmp_path / "run", **{**over, "run.steps": 2})
    with pytest.raises(
        ResumeError, match="no usable checkpoint.*\n.*step-000001/accelerate/optimizer.bin"
    ):
        train(cfg, resume=True, show_progress=False)


def _snapshot(root: Path) -> Path:
    train_tasks, heldout = generate_arithmetic_tasks({"n_train": 16, "n_heldout": 4, "few_shot": 0})
    path, _ = write_snapshot(train_tasks + heldout, root, name="arith", manifest_extra={})
    return path


def _edit_answer(snap: Path, *, redigest: bool) -> str:
    """The red team's in-place edit: one answer changed, the manifest's per-file hashes (and,
    with ``redigest``, its content digest) rewritten to match; returns the new content digest."""
    lines = [json.loads(x) for x in (snap / TASKS_FILE).read_text().splitlines()]
    target = next(t for t in lines if t["split"] == "train")
    target["answer"] = str(target["answer"]) + "0"
    tasks_bytes = "".join(json.dumps(t, sort_keys=True) + "\n" for t in lines).encode()
    (snap / TASKS_FILE).write_bytes(tasks_bytes)
    manifest = json.loads((snap / MANIFEST_FILE).read_text())
    manifest["files"][TASKS_FILE]["sha256"] = hashlib.sha256(tasks_bytes).hexdigest()
    digest = content_digest(tasks_bytes, (snap / PRIVILEGED_FILE).read_bytes())
    if redigest:
        manifest["digest"] = digest
    (snap / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return digest


def test_resume_after_the_snapshot_changed_in_place_is_refused(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    snap = _snapshot(tmp_path / "snaps")
    over = {"task.dataset": str(snap), "eval.num_tasks": 0, "algo.name": "grpo"}
    run = tmp_path / "run"
    train(tiny_config(tiny_model_dir, run, **over), show_progress=False)
    trained_on = json.loads((run / "dataset.json").read_text())["digest"]
    state = json.loads((run / "checkpoints" / "step-000002" / STATE).read_text())
    assert state["dataset_digest"] == trained_on
    again = tiny_config(tiny_model_dir, run, **{**over, "run.steps": 3})

    # the manifest still claims the old digest: the snapshot does not even load
    new = _edit_answer(snap, redigest=False)
    with pytest.raises(SnapshotError, match=f"content digest {new}.*manifest's digest {trained_on}"):  # fmt: skip
        train(again, resume=True, show_progress=False)

    # the digest rewritten too (and the run folder's dataset.json gone): the checkpoint's own
    # record of what it trained on refuses it
    newer = _edit_answer(snap, redigest=True)
    (run / "dataset.json").unlink()
    with pytest.raises(ResumeError, match=f"dataset digest {trained_on} .*checkpoint.*{newer}"):
        train(again, resume=True, show_progress=False)
    assert [r["step"] for r in _metrics(run)] == [1, 2]  # nothing trained on the changed data
