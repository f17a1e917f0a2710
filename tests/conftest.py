"""Shared fixtures: a tiny random model (fast paths), the real bundled SmolLM2, the toy verifier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers.postgres import postgres_server  # noqa: F401
from tests.helpers.servers import prefect_mlflow_servers  # noqa: F401

os.environ.setdefault("RLSD_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Two OpenMP threads on a 2-core machine shared with anything else slow tiny ops down 100-fold.
torch.set_num_threads(1)

from tests.helpers.toy_verifier import register  # noqa: E402

register()

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from rlsd.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def smollm2():
    """The real bundled model (dequantised once into the user cache, then <1 s per load)."""
    from rlsd.models import load_policy

    return load_policy()


def tiny_config(model_dir: Path, out_dir: Path, **overrides):
    """A training config that runs every code path of the trainer on the tiny model in seconds."""
    from rlsd.train.config import load_config

    base = {
        "model.name_or_path": str(model_dir),
        "task.verifier": "toy-even-length",
        "task.arithmetic.n_train": 64,
        "task.arithmetic.n_heldout": 16,
        "rollout.group_size": 4,
        "rollout.prompts_per_step": 4,
        "rollout.max_batch_sequences": 16,
        "rollout.sampling.temperature": 1.0,
        "rollout.sampling.max_new_tokens": 10,
        "eval.num_tasks": 8,
        "eval.max_new_tokens": 6,
        "run.steps": 2,
        "run.micro_batch_sequences": 8,
        "run.checkpoint_every": 1,
        "run.output_dir": str(out_dir),
        "run.num_threads": 1,
    }
    base.update(overrides)
    return load_config(None, base)
