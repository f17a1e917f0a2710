"""The transformers-generate rollout engine: grouping, trimming, stops, seeding, chunking."""

from __future__ import annotations

import pytest
import torch

from rlsd.models import ModelConfig, load_policy
from rlsd.rollout import HFGenerateEngine, SamplingSettings
from rlsd.rollout.hf_generate import TextStop
from rlsd.tasks import ArithmeticTaskConfig, generate_arithmetic_tasks
from rlsd.train.batch import student_prompt_ids

ANSWER_LINE = r"####\s*-?\d[\d,]*(?:\.\d+)?\s*\n"


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))


@pytest.fixture(scope="module")
def prompts(tiny):
    train, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=4, n_heldout=1))
    return [student_prompt_ids(tiny.tokenizer, t) for t in train]


@pytest.mark.parametrize("decode", ["loop", "generate"])
def test_groups_are_contiguous_and_responses_trimmed(tiny, prompts, decode):
    engine = HFGenerateEngine(tiny.model, tiny.tokenizer, max_batch_sequences=16, decode=decode)
    s = SamplingSettings(max_new_tokens=9)
    batch = engine.generate(prompts, 4, s, seed=3)
    assert batch.num_sequences == 16 and batch.group_size == 4
    assert batch.prompt_ids == prompts
    assert batch.settings == s
    eos = tiny.tokenizer.eos_token_id
    for r, trunc in zip(batch.response_ids, batch.truncated, strict=True):
        assert 1 <= len(r) <= 9
        assert (eos in r) == (not trunc)
        if eos in r:
            assert r.index(eos) == len(r) - 1, "nothing after eos is kept"
        else:
            assert len(r) == 9
    ids, mask = batch.response_tensors(tiny.tokenizer.pad_token_id)
    assert mask.sum(1).tolist() == [len(r) for r in batch.response_ids]
    assert ids.shape[1] == max(len(r) for r in batch.response_ids)
    assert batch.timings["generate"] > 0


@pytest.mark.parametrize("decode", ["loop", "generate"])
def test_same_seed_same_samples_and_chunking_does_not_matter(tiny, prompts, decode):
    s = SamplingSettings(max_new_tokens=8)
    one_call = HFGenerateEngine(tiny.model, tiny.tokenizer, max_batch_sequences=8, decode=decode)
    a = one_call.generate(prompts, 4, s, seed=11)
    assert one_call.generate(prompts, 4, s, seed=11).response_ids == a.response_ids
    assert one_call.generate(prompts, 4, s, seed=12).response_ids != a.response_ids
    # A data-parallel rank sampling groups 2-3 alone draws what the single process drew for them.
    rank1 = one_call.generate(prompts[2:], 4, s, seed=11, group_offset=2)
    assert rank1.response_ids == a.response_ids[8:]


def test_text_stop_records_where_each_row_stopped(smollm2):
    tok = smollm2.tokenizer
    stop = TextStop(tok, prompt_width=2, stop=[], stop_regex=ANSWER_LINE)
    text_ids = tok("3 + 4 = 7\n#### 7\nmore text", add_special_tokens=False)["input_ids"]
    other = tok("no answer here at all, none; " * 4, add_special_tokens=False)["input_ids"]
    width = min(len(text_ids), len(other))
    prefix = [[1, 1], [1, 1]]
    done_at = None
    for t in range(1, width + 1):
        ids = torch.tensor([prefix[0] + text_ids[:t], prefix[1] + other[:t]])
        done = stop(ids, None)
        assert not done[1]
        if done[0] and done_at is None:
            done_at = t
    assert done_at is not None
    assert tok.decode(text_ids[:done_at]).rstrip().endswith("#### 7")
    assert stop.stopped_at[0] == done_at


def test_real_model_greedy_stops_after_the_answer_line(smollm2):
    train, _ = generate_arithmetic_tasks(ArithmeticTaskConfig(n_train=6, n_heldout=1))
    prompts = [student_prompt_ids(smollm2.tokenizer, t) for t in train]
    engine = HFGenerateEngine(smollm2.model, smollm2.tokenizer, max_batch_sequences=8)
    s = SamplingSettings(do_sample=False, max_new_tokens=48, stop_regex=ANSWER_LINE)
    batch = engine.generate(prompts, 1, s, seed=0)
    import re

    for text, trunc in zip(batch.texts, batch.truncated, strict=True):
        m = re.search(ANSWER_LINE, text)
        if m:
            assert text[m.end() :].strip() == "", "nothing is generated past the answer line"
            assert not trunc
