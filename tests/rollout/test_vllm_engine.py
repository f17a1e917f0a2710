"""The vLLM engine answers the same interface; only where vllm and a GPU are present."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.gpu


def test_vllm_engine_samples_groups(tiny_model_dir):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a GPU")
    from rlsd.rollout import SamplingSettings
    from rlsd.rollout.vllm_engine import VLLMEngine

    engine = VLLMEngine(str(tiny_model_dir), dtype="float32")
    batch = engine.generate([[1, 2, 3], [4, 5]], 3, SamplingSettings(max_new_tokens=4), seed=0)
    assert batch.num_sequences == 6 and all(1 <= len(r) <= 4 for r in batch.response_ids)
