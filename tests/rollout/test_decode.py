"""The group-aware decode loop: same tokens as transformers' generate when greedy, the same
distribution when sampling, and a KV cache that matches transformers' own."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from rlsd.models import ModelConfig, load_policy
from rlsd.rollout import HFGenerateEngine, SamplingSettings
from rlsd.rollout.decode import cache_kwarg, filter_logits, preallocated_cache, sample_tokens
from rlsd.tasks import ArithmeticTaskConfig, generate_arithmetic_tasks
from rlsd.train.batch import student_prompt_ids

ANSWER_LINE = r"####\s*-?\d[\d,]*(?:\.\d+)?\s*\n"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))


def _prompts(tokenizer, n: int) -> list[list[int]]:
    train, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=n, n_heldout=1))
    return [student_prompt_ids(tokenizer, t) for t in train]


@pytest.mark.parametrize("group_size", [1, 3])
def test_greedy_loop_gives_generates_tokens_on_the_real_model(smollm2, group_size):
    """Prompts of different lengths (left padding), rows that stop at different steps (rows leave
    the batch), a stop regex and eos: token for token what ``model.generate`` produces."""
    prompts = _prompts(smollm2.tokenizer, 5)
    assert len({len(p) for p in prompts}) > 1
    s = SamplingSettings(do_sample=False, max_new_tokens=40, stop_regex=ANSWER_LINE)
    out = {}
    for decode in ("generate", "loop"):
        engine = HFGenerateEngine(smollm2.model, smollm2.tokenizer, 64, decode=decode)
        out[decode] = engine.generate(prompts, group_size, s, seed=0)
    assert out["loop"].response_ids == out["generate"].response_ids
    assert out["loop"].truncated == out["generate"].truncated
    lengths = {len(r) for r in out["loop"].response_ids}
    assert len(lengths) > 1, "rows should stop at different steps for this check to bite"
    assert out["loop"].timings["prefill"] > 0 and out["loop"].timings["decode"] > 0


@pytest.mark.parametrize("attn", ["sdpa_grouped", "sdpa"])
def test_greedy_loop_matches_generate_on_the_tiny_model_with_eos(tiny_model_dir, attn):
    """sdpa_grouped: the group-prefix cache (each prompt's keys read once per group by
    cascade_decode_attention); sdpa: the prompt cache repeated per row."""
    policy = load_policy(ModelConfig(name_or_path=str(tiny_model_dir), attn_implementation=attn))
    model, tok = policy.model, policy.tokenizer
    prompts = _prompts(tok, 4)
    s = SamplingSettings(do_sample=False, max_new_tokens=12)
    a = HFGenerateEngine(model, tok, 8, decode="generate").generate(prompts, 3, s, 0)
    b = HFGenerateEngine(model, tok, 8, decode="loop").generate(prompts, 3, s, 0)
    assert b.response_ids == a.response_ids
    assert b.truncated == a.truncated


def test_cascade_attention_equals_attention_over_the_repeated_prompt(tiny_model_dir):
    """Per-step logits of the group-prefix cache against transformers' own cache (prompt
    repeated per row), through left padding and rows leaving the batch."""

    from rlsd.models.attention import GroupPrefix
    from rlsd.rollout.decode import GroupPrefixLayer

    policy = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    model = policy.model.eval()
    kw = cache_kwarg(model)
    G = 3
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # the second prompt is 5 tokens, left-padded
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    steps = torch.randint(3, model.config.vocab_size, (4, 2 * G))
    live = torch.arange(2 * G)
    prefill = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": True}
    with torch.no_grad():
        ref_cache = DynamicCache(config=model.config)
        model(**prefill, **{kw: ref_cache})
        ref_cache.batch_repeat_interleave(G)
        cache = preallocated_cache(model, 8, GroupPrefixLayer)
        model(**prefill, **{kw: cache})
        state = GroupPrefix(cache, mask.bool(), live, G)
        row_mask = mask.repeat_interleave(G, 0)
        next_pos = (pos[:, -1] + 1).repeat_interleave(G)
        for t, step in enumerate(steps):
            if t == 2:  # rows 1 and 4 stop (one of each group)
                keep = torch.tensor([0, 2, 3, 5])
                ref_cache.batch_select_indices(keep)
                cache.batch_select_indices(keep)
                live, row_mask, next_pos = live[keep], row_mask[keep], next_pos[keep]
                state.rows = live
            tok = step[live][:, None]
            row_mask = torch.cat([row_mask, torch.ones(len(live), 1, dtype=row_mask.dtype)], 1)
            ref = model(
                input_ids=tok,
                attention_mask=row_mask,
                position_ids=next_pos[:, None],
                use_cache=True,
                **{kw: ref_cache},
            ).logits
            got = model(
                input_ids=tok,
                position_ids=next_pos[:, None],
                use_cache=True,
                rlsd_group_prefix=state,
                **{kw: cache},
            ).logits
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
            next_pos = next_pos + 1


def test_preallocated_cache_gives_dynamic_caches_logits(tiny):
    model = tiny.model.eval()
    torch.manual_seed(0)
    ids = torch.randint(3, tiny.model.config.vocab_size, (2, 7))
    steps = torch.randint(3, tiny.model.config.vocab_size, (4, 2, 1))
    results = []
    with torch.no_grad():
        kw = cache_kwarg(model)
        for cache in (DynamicCache(config=model.config), preallocated_cache(model, 16)):
            logits = [model(input_ids=ids, use_cache=True, **{kw: cache}).logits]
            cache.batch_repeat_interleave(2)
            for t, step in enumerate(steps):
                tok = step.repeat_interleave(2, dim=0)
                if t == 2:  # rows 1 and 2 stop
                    cache.batch_select_indices(torch.tensor([0, 3]))
                    tok = tok[[0, 3]]
                elif t == 3:
                    tok = tok[[0, 3]]
                logits.append(model(input_ids=tok, use_cache=True, **{kw: cache}).logits)
            results.append(logits)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.7, 0, 1.0), (1.0, 5, 1.0), (0.9, 0, 0.8), (1.3, 7, 0.6)]
)
def test_filters_match_transformers_logits_warpers(temperature, top_k, top_p):
    torch.manual_seed(1)
    logits = torch.randn(6, 50) * 3
    s = SamplingSettings(temperature=temperature, top_k=top_k, top_p=top_p)
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1.0:
        expected = TopPLogitsWarper(top_p)(None, expected)
    got = filter_logits(logits, s)
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    torch.testing.assert_close(got[~torch.isinf(got)], expected[~torch.isinf(expected)])


def test_inverse_cdf_sampling_draws_the_filtered_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 3.0, -30.0]]).repeat(40_000, 1)
    s = SamplingSettings(temperature=0.8, top_k=4)
    g = torch.Generator().manual_seed(0)
    draws = sample_tokens(logits, s, g)
    freq = torch.bincount(draws, minlength=6).double() / len(draws)
    want = filter_logits(logits[:1], s).softmax(-1)[0].double()
    assert freq[3] == 0 and freq[5] == 0, "filtered-out tokens are never drawn"
    assert float((freq - want).abs().max()) < 0.01
    # the same generator state gives the same draws; greedy is the argmax
    again = sample_tokens(logits, s, torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    greedy = sample_tokens(logits[:2], SamplingSettings(do_sample=False), None)
    assert greedy.tolist() == [4, 4]


def test_engine_rejects_an_unknown_decoder(tiny):
    with pytest.raises(ValueError, match="decode must be"):
        HFGenerateEngine(tiny.model, tiny.tokenizer, decode="beam")
