"""Rollouts with images: transformers ``generate`` on a vision-language model, batched.

The multimodal twin of ``HFGenerateEngine``: same chunking (at most ``max_batch_sequences`` rows
per call, whole groups), same per-call seeding, same stop handling and the same ``RolloutBatch``.
Prompts are the dicts of ``rlsd.models.vlm.encode_mm_prompt`` (``input_ids`` + vision tensors).
Each prompt's row is repeated G times, rows are left-padded, and the vision inputs of all rows of
a call are concatenated (Qwen-VL: patch sequences + ``image_grid_thw``, with left-padded
``mm_token_type_ids``; SmolVLM / Idefics3: ``[rows, tiles, 3, H, W]`` + ``pixel_attention_mask``).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlsd.models.vlm import QWEN_FAMILIES
from rlsd.models.vlm_inputs import collate_vision, mm_family, placeholder_ids
from rlsd.rollout.base import (
    RolloutBatch,
    SamplingSettings,
    derive_seed,
    eos_token_ids,
    eval_mode,
    group_chunk_starts,
)
from rlsd.rollout.hf_generate import generate_trimmed


class HFGenerateEngineMM:
    """Samples G completions per multimodal prompt with ``model.generate``.

    Each call is seeded from (seed, first group of the call), as in ``HFGenerateEngine``.
    Image / video placeholder ids are suppressed while sampling (``suppress_placeholders``): a
    sampled placeholder would be replaced by image features when the response is re-encoded.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_batch_sequences: int = 64,
        suppress_placeholders: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_sequences = max_batch_sequences
        self.suppress_placeholders = suppress_placeholders
        self.family = mm_family(model)
        self.eos_ids = eos_token_ids(model, tokenizer)

    def sync_weights(self, model: torch.nn.Module) -> None:
        # generate() runs on the live policy module: nothing to copy.
        self.model = model

    @torch.no_grad()
    def generate(
        self,
        prompts: list[dict[str, Any]],
        group_size: int,
        settings: SamplingSettings,
        seed: int,
        group_offset: int = 0,
    ) -> RolloutBatch:
        """``prompts[i]`` -> rows i*G .. i*G+G-1 of the returned RolloutBatch."""
        starts = group_chunk_starts(len(prompts), group_size, self.max_batch_sequences)
        responses: list[list[int]] = []
        truncated: list[bool] = []
        t0 = time.perf_counter()
        with eval_mode(self.model):
            for start in starts:
                rows = [p for p in prompts[start : start + starts.step] for _ in range(group_size)]
                r, t = self._generate_rows(rows, settings, derive_seed(seed, group_offset + start))
                responses.extend(r)
                truncated.extend(t)
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return RolloutBatch(
            prompt_ids=[list(p["input_ids"]) for p in prompts],
            response_ids=responses,
            texts=texts,
            truncated=truncated,
            group_size=group_size,
            settings=settings,
            timings={"generate": time.perf_counter() - t0},
        )

    def model_inputs(self, rows: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], int]:
        """Left-padded ``generate`` inputs for ``rows`` (one prompt dict per row) and their width."""
        pad = self.tokenizer.pad_token_id
        device = self.model.device
        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        types = torch.zeros_like(input_ids)
        for i, r in enumerate(rows):  # left padding: every prompt ends at the last column
            n = len(r["input_ids"])
            input_ids[i, width - n :] = torch.tensor(r["input_ids"], dtype=torch.long)
            attention[i, width - n :] = 1
            if r.get("mm_token_type_ids") is not None:
                types[i, width - n :] = torch.tensor(r["mm_token_type_ids"], dtype=torch.long)
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
        if self.family in QWEN_FAMILIES:
            inputs["mm_token_type_ids"] = types.to(device)
        inputs.update(collate_vision(self.family, rows, device))
        return inputs, width

    def _generate_rows(
        self, rows: list[dict[str, Any]], settings: SamplingSettings, seed: int
    ) -> tuple[list[list[int]], list[bool]]:
        inputs, width = self.model_inputs(rows)
        extra = {}
        if self.suppress_placeholders:
            extra["suppress_tokens"] = sorted(placeholder_ids(self.model))
        return generate_trimmed(self.model, self.tokenizer, inputs, width, settings, seed,
                                self.eos_ids, **extra)  # fmt: skip
