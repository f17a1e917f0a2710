"""Vision-language policies: tiny models of five families build, reload, encode images, generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlsd.models import LoadedPolicy, ModelConfig, load_policy
from rlsd.models.vlm import (
    FAMILIES,
    IDEFICS_FAMILIES,
    QWEN_FAMILIES,
    encode_mm_prompt,
    is_vision_language,
    load_vlm,
    mm_prompt_text,
    vlm_family,
)
from rlsd.rollout import SamplingSettings
from rlsd.rollout.hf_generate_mm import HFGenerateEngineMM
from tests.helpers import tiny_vlm
from tests.helpers.tiny_vlm import make_tiny_vlm, shapes_image

vlm = tiny_vlm.vlm  # the shared fixture: a tiny model of each family

QUESTION = [{"role": "user", "content": "How many rectangles are there?"}]


def test_tiny_vlm_builds_saves_and_reloads(vlm):
    family = vlm.family
    assert family in FAMILIES and vlm_family(vlm.path) == family
    assert isinstance(vlm, LoadedPolicy), "a VLM goes wherever a text policy goes"
    assert vlm.source == f"local:{vlm.path}" and len(vlm.digest) == 64
    assert is_vision_language(vlm.path) and is_vision_language(vlm.model.config)
    config, tok = vlm.model.config, vlm.tokenizer
    placeholder = "<|image_pad|>" if family in QWEN_FAMILIES else "<image>"
    assert config.image_token_id == tok.convert_tokens_to_ids(placeholder)
    assert vlm.model.get_input_embeddings().num_embeddings == len(tok)
    saved = json.loads((Path(vlm.path) / "processor_config.json").read_text())
    assert saved["processor_class"] == type(vlm.processor).__name__
    assert tok.padding_side == "left" and tok.pad_token_id is not None


def test_encode_prompt_expands_each_image_into_its_tokens(vlm):
    family, tok = vlm.family, vlm.tokenizer
    images = [shapes_image(64, 64, 3, 0), shapes_image(96, 48, 2, 1)]
    enc = encode_mm_prompt(vlm, QUESTION, images)
    ids = enc["input_ids"]
    assert isinstance(ids, list) and all(isinstance(t, int) for t in ids)
    n_image_tokens = ids.count(vlm.image_token_id)
    text = tok.decode(ids)
    assert "How many rectangles are there?" in text
    if family in QWEN_FAMILIES:
        grid = enc["image_grid_thw"]
        assert grid.shape == (2, 3)
        assert enc["pixel_values"].shape[0] == int(grid.prod(-1).sum())
        assert n_image_tokens == int(grid.prod(-1).sum()) // 4  # 2x2 spatial merge
        assert grid[1, 1] != grid[1, 2], "a 96x48 image keeps its aspect ratio"
        assert enc["mm_token_type_ids"] == [int(t == vlm.image_token_id) for t in ids]
        assert text.count("<|vision_start|>") == 2
        assert text.endswith("<|im_start|>assistant\n")
    else:
        tiles, _, h, w = enc["pixel_values"].shape
        assert enc["pixel_attention_mask"].shape == (tiles, h, w)
        assert n_image_tokens == 4 * tiles  # 4 tokens per tile, global views included
        assert text.count("<global-img>") == 2 and "<row_1_col_1>" in text
        assert text.endswith("Assistant:")
    # The rendered chat text (for the leak check) has one placeholder per image.
    rendered = mm_prompt_text(vlm, QUESTION, 2)
    assert rendered.count("<|image_pad|>" if family in QWEN_FAMILIES else "<image>") == 2
    # A prompt without images is text only.
    plain = encode_mm_prompt(vlm, QUESTION, [])
    assert vlm.image_token_id not in plain["input_ids"] and "pixel_values" not in plain


def test_generate_with_images_groups_seeds_and_stops(vlm):
    prompts = [
        encode_mm_prompt(vlm, QUESTION, [shapes_image(64, 64, 3, 0)]),
        encode_mm_prompt(vlm, QUESTION, [shapes_image(96, 48, 2, 1), shapes_image(64, 64, 1, 2)]),
        encode_mm_prompt(vlm, QUESTION, []),
    ]
    engine = HFGenerateEngineMM(vlm.model, vlm.tokenizer, max_batch_sequences=4)
    s = SamplingSettings(max_new_tokens=5)
    batch = engine.generate(prompts, 2, s, seed=3)
    assert batch.num_sequences == 6 and batch.group_size == 2
    assert batch.prompt_ids == [p["input_ids"] for p in prompts]
    assert all(1 <= len(r) <= 5 for r in batch.response_ids)
    assert len(batch.texts) == 6 and batch.timings["generate"] > 0
    assert engine.generate(prompts, 2, s, seed=3).response_ids == batch.response_ids
    # Chunking (2 groups per call) does not change what a group draws.
    alone = engine.generate(prompts[2:], 2, s, seed=3, group_offset=2)
    assert alone.response_ids == batch.response_ids[4:]
    # Left padding with images: a prompt decodes the same greedily alone as in a batch.
    greedy = SamplingSettings(max_new_tokens=4, do_sample=False)
    together = engine.generate(prompts, 1, greedy, seed=0).response_ids
    for i, p in enumerate(prompts):
        assert engine.generate([p], 1, greedy, seed=0).response_ids[0] == together[i]
    # Never a placeholder token in a response.
    assert all(vlm.image_token_id not in r for r in batch.response_ids)
    # Stop strings end a row where its text first contains one (same call, so same draws).
    stop = next((c for c in batch.texts[0] if not c.isspace()), None)
    if stop is not None:
        stopped = engine.generate(prompts, 2, s.model_copy(update={"stop": [stop]}), seed=3)
        row = stopped.response_ids[0]
        assert row == batch.response_ids[0][: len(row)] and not stopped.truncated[0]
        assert stop in stopped.texts[0]


def test_text_models_are_untouched(tiny_model_dir):
    assert not is_vision_language(tiny_model_dir)
    assert not is_vision_language("smollm2-135m-instruct")
    assert vlm_family({"model_type": "llama"}) is None
    policy = load_policy(ModelConfig(name_or_path=str(tiny_model_dir)))
    assert type(policy.model).__name__ == "LlamaForCausalLM"
    with pytest.raises(ValueError, match="vision-language families"):
        load_vlm(str(tiny_model_dir))


def test_families_cover_both_input_layouts():
    assert set(QWEN_FAMILIES) | set(IDEFICS_FAMILIES) == set(FAMILIES)
    with pytest.raises(ValueError, match="unknown family"):
        make_tiny_vlm("llava", "/nonexistent")
