"""vLLM against the product's own decode loop on the real model (marker ``vllm``)."""

from __future__ import annotations

import importlib.util

import pytest

from rlsd.rollout import HFGenerateEngine, SamplingSettings
from rlsd.rollout.vllm_engine import VLLMEngine
from rlsd.tasks import ArithmeticTaskConfig, generate_arithmetic_tasks
from rlsd.train.batch import student_prompt_ids

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm"),
]

#: the default config's stop regex (the final-answer line)
ANSWER_LINE = r"####\s*-?\d[\d,]*(?:\.\d+)?\s*\n"


def test_matches_the_transformers_engine_greedy_on_smollm2(smollm2):
    """Greedy decoding of the real model with the default config's stop regex: the same tokens,
    texts and truncation flags as the product's decode loop."""
    train, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=6, n_heldout=1))
    prompts = [student_prompt_ids(smollm2.tokenizer, t) for t in train]
    s = SamplingSettings(do_sample=False, max_new_tokens=32, stop_regex=ANSWER_LINE)
    hf = HFGenerateEngine(smollm2.model, smollm2.tokenizer).generate(prompts, 2, s, seed=0)
    eng = VLLMEngine(smollm2.path, dtype="float32", kv_cache_gib=0.5)
    try:
        got = eng.generate(prompts, 2, s, seed=0)
    finally:
        eng.close()
    assert got.response_ids == hf.response_ids
    assert got.texts == hf.texts
    assert got.truncated == hf.truncated
