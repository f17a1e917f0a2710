"""The vLLM engine answers the same interface with the transformers engine's semantics.

Marker ``vllm``: these run where vllm is installed (``make test-vllm``, .venv-vllm with PyPI's
CPU build; on a CUDA machine with ``rlsd[gpu]`` the same tests run on the GPU build).
"""

from __future__ import annotations

import importlib.util
import re

import pytest
import torch

from rlsd.models import ModelConfig, load_policy
from rlsd.rollout import SamplingSettings
from rlsd.rollout.vllm_engine import VLLMEngine, policy_weights
from rlsd.tasks import ArithmeticTaskConfig, generate_arithmetic_tasks
from rlsd.train.batch import student_prompt_ids

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="needs vllm"),
]

#: engine log-prob vs an fp32 transformers forward of the same weights (measured: <= 1e-6 on the
#: tiny model, <= 5e-5 on SmolLM2)
LOGPROB_TOL = 1e-3


@pytest.fixture(scope="module")
def engine(vllm_tiny_model_dir):
    eng = VLLMEngine(str(vllm_tiny_model_dir), dtype="float32", kv_cache_gib=0.25,
                     disable_log_stats=False)  # fmt: skip
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def tiny(vllm_tiny_model_dir):
    return load_policy(ModelConfig(name_or_path=str(vllm_tiny_model_dir)))


@pytest.fixture(scope="module")
def prompts(tiny):
    train, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=4, n_heldout=1))
    return [student_prompt_ids(tiny.tokenizer, t) for t in train]


def _recomputed_logprobs(model, prompt, response, temperature):
    with torch.no_grad():
        ids = torch.tensor([prompt + response])
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return logits.log_softmax(-1).gather(1, torch.tensor(response)[:, None]).squeeze(1)


def _max_logprob_diff(model, batch, temperature):
    worst = 0.0
    for row, (resp, lps) in enumerate(zip(batch.response_ids, batch.logprobs, strict=True)):
        ref = _recomputed_logprobs(model, batch.prompt_ids[batch.group_of(row)], resp, temperature)
        worst = max(worst, float((ref - torch.tensor(lps)).abs().max()))
    return worst


def test_groups_shapes_truncation_and_logprobs(engine, prompts, tiny):
    s = SamplingSettings(temperature=0.7, max_new_tokens=9)
    batch = engine.generate(prompts, 4, s, seed=3)
    assert batch.num_sequences == 16 and batch.group_size == 4
    assert batch.prompt_ids == prompts and batch.settings == s
    eos = engine.eos_ids
    for r, trunc, lps in zip(batch.response_ids, batch.truncated, batch.logprobs, strict=True):
        assert 1 <= len(r) <= 9 and len(lps) == len(r)
        assert all(lp <= 0.0 for lp in lps)
        ended = bool(set(r) & eos)
        assert ended == (not trunc)
        if ended:
            assert r[-1] in eos and not set(r[:-1]) & eos, "the eos ends the response, kept"
        else:
            assert len(r) == 9
    assert batch.texts == tiny.tokenizer.batch_decode(batch.response_ids, skip_special_tokens=True)
    assert batch.timings["generate"] > 0
    # the log-probs are those of the tempered distribution that was sampled from
    assert _max_logprob_diff(tiny.model, batch, 0.7) < LOGPROB_TOL


def test_same_seed_same_samples_and_groups_independent_of_the_batch(engine, prompts):
    s = SamplingSettings(max_new_tokens=8)
    a = engine.generate(prompts, 4, s, seed=11)
    assert engine.generate(prompts, 4, s, seed=11).response_ids == a.response_ids
    assert engine.generate(prompts, 4, s, seed=12).response_ids != a.response_ids
    # each group is seeded by its global index: a rank sampling groups 2-3 alone draws the same
    rank1 = engine.generate(prompts[2:], 4, s, seed=11, group_offset=2)
    assert rank1.response_ids == a.response_ids[8:]
    # the G samples of a group differ
    assert len({tuple(r) for r in a.response_ids[:4]}) > 1


def test_greedy_is_one_answer_per_group_with_untempered_logprobs(engine, prompts, tiny):
    s = SamplingSettings(do_sample=False, temperature=0.7, max_new_tokens=6)
    batch = engine.generate(prompts[:2], 3, s, seed=0)
    assert batch.response_ids[0] == batch.response_ids[1] == batch.response_ids[2]
    assert _max_logprob_diff(tiny.model, batch, 1.0) < LOGPROB_TOL


def _first_hit(tokenizer, tokens, hit):
    for n in range(1, len(tokens) + 1):
        if hit(tokenizer.decode(tokens[:n], skip_special_tokens=True)):
            return n
    return None


@pytest.mark.parametrize("kind", ["stop", "stop_regex"])
def test_stops_end_a_response_where_its_text_first_hits(engine, prompts, kind):
    """The transformers engine's semantics: the row ends at the first token after which its
    decoded text contains a stop string / matches the regex, that token kept, not truncated."""
    tok = engine.tokenizer
    free = engine.generate(prompts, 4, SamplingSettings(max_new_tokens=12), seed=5)
    # a stop that some rows reach mid-way: a piece of one row's text
    row = next(r for r in free.response_ids if len(r) >= 8)
    piece = tok.decode(row[4:6], skip_special_tokens=True).strip() or "e"
    if kind == "stop":
        s = SamplingSettings(max_new_tokens=12, stop=[piece])

        def hit(text):
            return piece in text

    else:
        pattern = re.compile(re.escape(piece) + r"|\d")
        s = SamplingSettings(max_new_tokens=12, stop_regex=pattern.pattern)

        def hit(text):
            return bool(pattern.search(text))

    stopped = engine.generate(prompts, 4, s, seed=5)
    n_cut = 0
    for full, got, trunc, lps in zip(
        free.response_ids, stopped.response_ids, stopped.truncated, stopped.logprobs, strict=True
    ):
        cut = _first_hit(tok, full, hit)
        expected = full[:cut] if cut is not None else full
        assert got == expected  # the same draws up to the stop (same seed)
        assert len(lps) == len(got)
        if cut is not None:
            n_cut += cut < len(full)
            assert not trunc
    assert n_cut > 0, "the stop cut some rows short"


def test_sync_loads_weights_in_place_and_resets_the_prefix_cache(
    engine, vllm_tiny_model_dir, prompts, tiny
):
    policy = load_policy(ModelConfig(name_or_path=str(vllm_tiny_model_dir)))
    resets = []
    reset = engine.llm.reset_prefix_cache
    engine.llm.reset_prefix_cache = lambda *a, **k: resets.append(1) or reset(*a, **k)
    try:
        s = SamplingSettings(temperature=0.7, max_new_tokens=8)
        before = engine.generate(prompts, 2, s, seed=1)
        assert _max_logprob_diff(policy.model, before, 0.7) < LOGPROB_TOL
        with torch.no_grad():  # an "optimizer step" big enough to see
            g = torch.Generator().manual_seed(0)
            for p in policy.model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
        stale = engine.generate(prompts, 2, s, seed=1)
        assert _max_logprob_diff(policy.model, stale, 0.7) > 100 * LOGPROB_TOL
        syncs = engine.syncs
        engine.sync_weights(policy.model)
        assert resets == [1] and engine.syncs == syncs + 1
        synced = engine.generate(prompts, 2, s, seed=1)
        assert _max_logprob_diff(policy.model, synced, 0.7) < LOGPROB_TOL
    finally:
        engine.llm.reset_prefix_cache = reset
        engine.sync_weights(tiny.model)  # the other tests' reference weights again
    assert _max_logprob_diff(tiny.model, engine.generate(prompts, 2, s, seed=1), 0.7) < LOGPROB_TOL


def test_prefix_cache_is_shared_within_a_group(engine, prompts):
    """32-token blocks: the G samples of a group reuse their prompt's KV."""
    assert engine.prefix_cache_enabled()

    def hits():
        return next(m.value for m in engine.llm.get_metrics() if m.name == "vllm:prefix_cache_hits")

    assert len(prompts[0]) >= 64
    start = hits()
    engine.generate(prompts[:1], 4, SamplingSettings(max_new_tokens=2), seed=123)
    # (the prompt may be cached already by an earlier test: then all 4 samples hit)
    assert hits() - start >= 3 * 32


def test_weights_are_the_checkpoint_names(tiny):
    names = [n for n, _ in policy_weights(tiny.model)]
    assert "model.layers.0.self_attn.q_proj.weight" in names
    t = dict(policy_weights(tiny.model))["model.norm.weight"]
    assert t.data_ptr() == tiny.model.model.norm.weight.data_ptr(), "references, not copies"


def test_a_head_size_the_cpu_kernels_lack_is_refused(tiny_model_dir):
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        pytest.skip("the CPU kernels' limit")
    with pytest.raises(ValueError, match="head sizes"):
        VLLMEngine(str(tiny_model_dir), dtype="float32", kv_cache_gib=0.25)
