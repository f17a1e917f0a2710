"""Fixtures of the vLLM lane (marker ``vllm``; ``make test-vllm`` runs it in .venv-vllm)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def vllm_tiny_model_dir(tmp_path_factory) -> Path:
    """The tiny random Llama, with a head size vLLM's CPU attention takes (32).

    The shared ``tiny_model_dir`` has 4 heads of 16 over a 64-wide model; vLLM 0.32's CPU
    attention kernels take head sizes 32, 64, 80, ... only (the engine refuses the fixture
    with a clear error, tested), so this one has 2 query heads and 1 key/value head of 32.
    """
    from rlsd.models.tiny import make_tiny_model

    return make_tiny_model(
        tmp_path_factory.mktemp("tiny-vllm") / "model", hidden_size=64, num_heads=2, num_kv_heads=1
    )
