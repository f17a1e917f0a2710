"""Checkpoints: weights, optimizer, scheduler, RNG states, step and data position.

A checkpoint is the folder ``step-<NNNNNN>`` under the run's ``checkpoints/``. It is written into
``.tmp-step-<NNNNNN>``, every file is fsynced, then ``trainer_state.json`` -- written last --
records each file's size and sha256, the folder is fsynced and renamed, and the parent is fsynced:
after a crash at any point the newest ``step-*`` folder is either complete or absent (a stale
``.tmp-*`` folder is not a checkpoint and is swept at the next save).

A complete checkpoint can still be damaged afterwards (a truncated copy, a full disk, a bad
sector). :func:`resume_checkpoint` checks each checkpoint against its recorded sizes and digests,
newest first, warns about and skips a damaged one, and resumes from the newest intact one; the
check depends only on the files, so every rank of a data-parallel run picks the same one. That is
why ``run.keep_checkpoints`` defaults to 2: with one kept there is nothing to fall back to.

What a checkpoint holds is accelerate's state (``accelerate/``: weights, optimizer, each rank's
RNG states, the scheduler and a frozen teacher as registered objects), written and read by
``Accelerator.save_state`` / ``load_state``, so a sharded (FSDP) run saves its shards and
resumes from them. The weights of an unsharded run are stored unwrapped (no ``module.`` prefix of
DDP), so a run may resume on a different number of processes. Checkpoints of earlier versions
(``model.safetensors`` beside ``trainer_state.json``) still resume: :func:`read_checkpoint`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

if TYPE_CHECKING:
    from accelerate import Accelerator

STATE = "trainer_state.json"
#: accelerate's state, inside the checkpoint folder
ACCELERATE_DIR = "accelerate"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
TEACHER_FILE = "teacher.safetensors"
_STEP_DIR = re.compile(r"step-(\d{6,})")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"

log = logging.getLogger("rlsd.train")


class CheckpointError(RuntimeError):
    """A checkpoint is unreadable, truncated or incomplete, or none of a run's is usable."""


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # A rename is durable only once the directory holding it is synced.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:  # no directory handles (not POSIX): nothing more can be done
        if exc.errno in (errno.EACCES, errno.EISDIR):
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems (and platforms) cannot sync a directory; the rename itself is still
        # atomic there, so this is the best that can be had, not an error.
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _discard(path: Path) -> None:
    """Delete a folder so that a crash midway never leaves a half-deleted ``step-*`` behind."""
    if not path.exists():
        return
    trash = path.with_name(f"{_TRASH_PREFIX}{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _step_of(path: Path) -> int | None:
    m = _STEP_DIR.fullmatch(path.name)
    return int(m.group(1)) if m else None


def list_checkpoints(root: Path) -> list[Path]:
    """Every ``step-*`` folder under ``root``, oldest first by step number (complete or not)."""
    if not root.is_dir():
        return []
    found = [(s, p) for p in root.iterdir() if p.is_dir() and (s := _step_of(p)) is not None]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    root: Path, step: int, acc: Accelerator, state: dict[str, Any], keep: int = 2
) -> Path:
    """Write checkpoint ``step`` under ``root`` through ``acc.save_state``; every rank calls it.

    The newest ``keep`` checkpoints are kept; older ones are deleted only once the new one is
    durable, so a crash never leaves the run with fewer complete checkpoints than before."""
    final = root / f"step-{step:06d}"
    tmp = root / f"{_TMP_PREFIX}{final.name}"
    is_main = acc.is_main_process
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        # Partial folders of an earlier crash (any step) are never checkpoints: sweep them.
        for stale in root.glob(f"{_TMP_PREFIX}step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(f"{_TRASH_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / ACCELERATE_DIR))  # collective: RNG per rank, FSDP shards per rank
    acc.wait_for_everyone()
    if is_main:
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for f in files:
            _fsync_file(f)
        for d in sorted({f.parent for f in files}, key=lambda d: -len(d.parts)):
            _fsync_dir(d)
        # Written last, after every rank's files are in: it vouches for all of them.
        record = {
            f.relative_to(tmp).as_posix(): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
            for f in files
        }
        with (tmp / STATE).open("w", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": step, **state, "files": record}, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        _discard(final)  # a re-saved step (after resuming from an older checkpoint)
        tmp.rename(final)
        _fsync_dir(root)
        for old in list_checkpoints(root)[:-keep]:
            _discard(old)
        _fsync_dir(root)
    acc.wait_for_everyone()
    return final


def unwrapped_weights_hooks(acc: Accelerator) -> None:
    """Store an unsharded run's weights unwrapped: DDP's ``module.`` prefix would tie a
    checkpoint to the number of processes that wrote it. (FSDP's shards are accelerate's.)"""

    def save(models: list[nn.Module], weights: list[dict], _dir: str) -> None:
        for i in range(len(weights)):
            weights[i] = _untied_state(acc.unwrap_model(models[i]))

    def load(models: list[nn.Module], _dir: str) -> None:
        if models and weights_are_unwrapped(acc):
            models[:] = [acc.unwrap_model(m) for m in models]

    acc.register_save_state_pre_hook(save)
    acc.register_load_state_pre_hook(load)


def _untied_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each shared storage (tied embeddings) under its first name only:
    safetensors stores a storage once, and ``load_model`` restores the ties."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in module.state_dict().items():
        if t.numel() and t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        out[name] = t
    return out


def weights_are_unwrapped(acc: Accelerator) -> bool:
    from accelerate.utils import DistributedType

    return acc.distributed_type != DistributedType.FSDP


def latest_checkpoint(root: Path) -> Path | None:
    """The newest ``step-*`` folder, intact or not: whether the run folder holds a run at all.

    Which checkpoint a resume may use is :func:`resume_checkpoint`'s to say."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def checkpoint_problem(path: Path, rank: int = 0) -> str | None:
    """Why ``path`` cannot be resumed from (naming the file at fault), or None when it can.

    Checks the recorded size and sha256 of every file; a checkpoint written before they were
    recorded is checked for the files a resume reads."""
    try:
        state = json.loads((path / STATE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{path / STATE} is missing (the checkpoint is incomplete)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"{path / STATE} is unreadable: {exc}"
    if not isinstance(state, dict):
        return f"{path / STATE}: not a JSON object"
    step = state.get("step")
    if not isinstance(step, int) or step != _step_of(path):
        return f"{path / STATE}: step = {step!r}, but the folder is {path.name}"
    files = state.get("files")
    if files is None:
        needed = [MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE]
        missing = [n for n in needed if not (path / n).is_file()]
        return f"{path / missing[0]} is missing (the checkpoint is incomplete)" if missing else None
    if not isinstance(files, dict) or not (
        MODEL_FILE in files or any(str(k).startswith(f"{ACCELERATE_DIR}/") for k in files)
    ):
        return (
            f"{path / STATE}: files = {str(files)[:80]!r} lists neither {ACCELERATE_DIR}/ "
            f"nor {MODEL_FILE}"
        )
    for name, rec in sorted(files.items()):
        f = path / name
        if not isinstance(rec, dict) or not {"bytes", "sha256"} <= rec.keys():
            return f"{path / STATE}: files.{name} = {rec!r} lacks bytes / sha256"
        if not f.is_file():
            return f"{f} is missing (the checkpoint is incomplete)"
        size = f.stat().st_size
        if size != rec["bytes"]:
            return f"{f} has {size} bytes, {STATE} recorded {rec['bytes']} (truncated?)"
        got = _sha256(f)
        if got != rec["sha256"]:
            return (
                f"{f}: sha256 {got[:16]}... differs from the recorded {str(rec['sha256'])[:16]}..."
            )
    # A rank without an RNG file (the run resumes on more processes) keeps its seeded state, as
    # before; refusing here would make the ranks disagree on which checkpoint to take.
    return None


@dataclass
class LoadedCheckpoint:
    """A checked checkpoint, not yet applied (:func:`apply_checkpoint`). Its files are verified
    against their recorded digests before anything is applied; a checkpoint of an earlier
    version (no ``accelerate/``) is also read into memory here (``legacy``)."""

    path: Path
    state: dict[str, Any]
    legacy: LegacyTensors | None = None

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def accelerate_dir(self) -> Path:
        return self.path / ACCELERATE_DIR


@dataclass
class LegacyTensors:
    """What a checkpoint written before accelerate's state holds, read into memory."""

    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    teacher: dict[str, torch.Tensor] | None
    rng: dict[str, Any] | None


def read_checkpoint(path: Path, rank: int = 0) -> LoadedCheckpoint:
    """Check and read every file of ``path``; a damaged one is a :class:`CheckpointError`.

    Everything is read before anything is applied, so a failure leaves the model untouched."""
    problem = checkpoint_problem(path, rank)
    if problem is not None:
        raise CheckpointError(problem)
    state = json.loads((path / STATE).read_text(encoding="utf-8"))
    if (path / ACCELERATE_DIR).is_dir():
        return LoadedCheckpoint(path, state)

    def read(name: str, loader: Any) -> Any:
        try:
            return loader(path / name)
        except Exception as exc:  # torch / safetensors raise many kinds on a damaged file
            raise CheckpointError(f"{path / name} is unreadable: {exc}") from exc

    model = read(MODEL_FILE, lambda p: load_file(str(p)))
    optimizer = read(OPTIMIZER_FILE, lambda p: torch.load(p, weights_only=False))
    scheduler = read(SCHEDULER_FILE, lambda p: torch.load(p, weights_only=False))
    teacher = None
    if (path / TEACHER_FILE).exists():
        teacher = read(TEACHER_FILE, lambda p: load_file(str(p)))
    rng_name = f"rng-rank{rank}.pt"
    rng = None
    if (path / rng_name).exists():
        rng = read(rng_name, lambda p: torch.load(p, weights_only=False))
    return LoadedCheckpoint(path, state, LegacyTensors(model, optimizer, scheduler, teacher, rng))


def resume_checkpoint(root: Path, rank: int = 0) -> LoadedCheckpoint | None:
    """The newest intact checkpoint under ``root``, read; None when there are none at all.

    A damaged newer one is skipped with a warning naming it and what is wrong; when checkpoints
    exist but none is intact, a :class:`CheckpointError` lists them (never a silent step 0)."""
    found = list_checkpoints(root)
    problems: list[str] = []
    for path in reversed(found):
        try:
            ckpt = read_checkpoint(path, rank)
        except CheckpointError as exc:
            log.warning("checkpoint %s is not usable, trying the one before: %s", path, exc)
            problems.append(str(exc))
            continue
        if problems:
            log.warning("resuming from %s instead of the newer, damaged checkpoint(s)", path)
        return ckpt
    if found:
        raise CheckpointError(
            f"{root}: no usable checkpoint among {[p.name for p in found]}:\n  "
            + "\n  ".join(problems)
            + "\n(pass --overwrite to start the run again)"
        )
    return None


def apply_checkpoint(
    ckpt: LoadedCheckpoint,
    acc: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    teacher: nn.Module | None = None,
) -> dict[str, Any]:
    """Put a checked checkpoint into the live run: ``acc.load_state`` (weights, optimizer, RNGs,
    the registered scheduler and teacher), or for a legacy checkpoint the tensors read.

    ``model`` is the unwrapped policy, ``optimizer`` / ``scheduler`` the ones the run steps."""
    if ckpt.legacy is None:
        if not weights_are_unwrapped(acc) and not any(ckpt.accelerate_dir.glob("*fsdp*")):
            raise CheckpointError(
                f"{ckpt.accelerate_dir} was written by an unsharded run; this FSDP run cannot "
                "resume from it (resume it without FSDP, or start again with --overwrite)"
            )
        if weights_are_unwrapped(acc) and not (ckpt.accelerate_dir / MODEL_FILE).is_file():
            raise CheckpointError(
                f"{ckpt.accelerate_dir} holds sharded (FSDP) weights; resume it with the same "
                "FSDP launch configuration"
            )
        acc.load_state(str(ckpt.accelerate_dir))
        return ckpt.state
    t, path = ckpt.legacy, ckpt.path
    missing, unexpected = model.load_state_dict(t.model, strict=False)
    # Tied weights are stored once; anything else missing means the wrong checkpoint.
    real_missing = [m for m in missing if not _is_tied(model, m)]
    if real_missing or unexpected:
        raise ValueError(
            f"{path / MODEL_FILE} does not match the model: missing {real_missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    optimizer.load_state_dict(t.optimizer)
    scheduler.load_state_dict(t.scheduler)
    if teacher is not None:
        if t.teacher is None:
            raise CheckpointError(f"{path / TEACHER_FILE} is missing; the run has a teacher")
        teacher.load_state_dict(t.teacher, strict=False)
    if t.rng is not None:
        set_rng_state(t.rng)
    return ckpt.state


def load_checkpoint(
    path: Path,
    acc: Accelerator,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    teacher: nn.Module | None = None,
) -> dict[str, Any]:
    """Read, check and apply the checkpoint at ``path``; returns its trainer state."""
    ckpt = read_checkpoint(path, acc.process_index)
    return apply_checkpoint(ckpt, acc, model, optimizer, scheduler, teacher)


def _is_tied(model: nn.Module, name: str) -> bool:
    sd = model.state_dict()
    ptr = sd[name].data_ptr()
    return any(k != name and v.data_ptr() == ptr for k, v in sd.items())
