"""Checkpoints: weights, optimizer, scheduler, RNG states, step and data position.

Each checkpoint is written into a temporary folder and renamed, so a kill mid-write leaves the
previous checkpoint intact; ``latest_checkpoint`` only sees complete ones.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

STATE = "trainer_state.json"


def _tensors(module: nn.Module, trainable_only: bool) -> dict[str, torch.Tensor]:
    names = {n for n, p in module.named_parameters() if p.requires_grad} if trainable_only else None
    out = {}
    seen: dict[int, str] = {}
    for name, t in module.state_dict().items():
        if names is not None and name not in names:
            continue
        # safetensors refuses shared storage (tied embeddings): keep the first name only.
        key = t.data_ptr()
        if key in seen and t.numel() > 0:
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    teacher: nn.Module | None = None,
    rank: int = 0,
    is_main: bool = True,
    keep: int = 2,
    barrier: Any = None,
) -> Path:
    """Write checkpoint ``step`` under ``root``; every rank writes its RNG state, rank 0 the rest."""
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if barrier:
        barrier()
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if is_main:
        save_file(_tensors(model, trainable_only=False), str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if teacher is not None:
            save_file(_tensors(teacher, trainable_only=False), str(tmp / "teacher.safetensors"))
    if barrier:
        barrier()
    if is_main:
        (tmp / STATE).write_text(json.dumps({"step": step, **state}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(p for p in root.glob("step-*") if (p / STATE).exists())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if barrier:
        barrier()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(p for p in root.glob("step-*") if (p / STATE).exists())
    return done[-1] if done else None


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    teacher: nn.Module | None = None,
    rank: int = 0,
) -> dict[str, Any]:
    state = json.loads((path / STATE).read_text())
    weights = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # Tied weights are stored once; anything else missing means the wrong checkpoint.
    real_missing = [m for m in missing if not _is_tied(model, m)]
    if real_missing or unexpected:
        raise ValueError(
            f"{path}/model.safetensors does not match the model: missing {real_missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    if teacher is not None:
        teacher.load_state_dict(load_file(str(path / "teacher.safetensors")), strict=False)
    rng_file = path / f"rng-rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    return state


def _is_tied(model: nn.Module, name: str) -> bool:
    sd = model.state_dict()
    ptr = sd[name].data_ptr()
    return any(k != name and v.data_ptr() == ptr for k, v in sd.items())
