"""The default rollout engine: batched sampling from the live policy module, with text stops.

Two decoders, the same ``RolloutBatch``: ``loop`` (default) is the product's own group-aware
decode loop over the model's forward (``rlsd.rollout.decode``: each prompt prefilled once, no
per-step cache copies, finished rows dropped, inverse-CDF sampling); ``generate`` is
transformers' ``model.generate``, kept selectable as the reference.
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)

from rlsd.rollout.base import (
    RolloutBatch,
    SamplingSettings,
    derive_seed,
    eos_token_ids,
    eval_mode,
    generate_sampling_kwargs,
    group_chunk_starts,
    trim_at_stops,
)
from rlsd.rollout.decode import decode_groups


class TextStop(StoppingCriteria):
    """Ends each row once its generated text contains a stop string or matches the stop regex.

    transformers pads rows that are done with the pad token, which for many chat models is also the
    eos token; so the length at which each row stopped is recorded here rather than inferred later.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_width: int,
        stop: list[str],
        stop_regex: str | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.stop = stop
        self.pattern = re.compile(stop_regex) if stop_regex else None
        self.stopped_at: dict[int, int] = {}

    def __call__(self, input_ids: torch.LongTensor, scores=None, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        generated = input_ids[:, self.prompt_width :]
        rows = [i for i in range(input_ids.shape[0]) if i not in self.stopped_at]
        if rows:
            texts = self.tokenizer.batch_decode(generated[rows], skip_special_tokens=True)
            for i, text in zip(rows, texts, strict=True):
                if any(s in text for s in self.stop) or (
                    self.pattern and self.pattern.search(text)
                ):
                    self.stopped_at[i] = generated.shape[1]
        for i in self.stopped_at:
            done[i] = True
        return done


class HFGenerateEngine:
    """Samples G completions per prompt, at most ``max_batch_sequences`` rows per call.

    Each call is seeded from (seed, first group of the call), so the same groups sampled in a
    data-parallel rank or in a single process with the same chunking get the same tokens.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_batch_sequences: int = 64,
        decode: str = "loop",
    ) -> None:
        if decode not in ("loop", "generate"):
            raise ValueError(f"decode must be 'loop' or 'generate', got {decode!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_sequences = max_batch_sequences
        self.decode = decode
        self.eos_ids = eos_token_ids(model, tokenizer)

    def sync_weights(self, model: torch.nn.Module) -> None:
        # generate() runs on the live policy module: nothing to copy.
        self.model = model

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: list[list[int]],
        group_size: int,
        settings: SamplingSettings,
        seed: int,
        group_offset: int = 0,
    ) -> RolloutBatch:
        starts = group_chunk_starts(len(prompt_ids), group_size, self.max_batch_sequences)
        responses: list[list[int]] = []
        truncated: list[bool] = []
        timings = {"prefill": 0.0, "decode": 0.0}
        t0 = time.perf_counter()
        with eval_mode(self.model):
            for start in starts:
                chunk = prompt_ids[start : start + starts.step]
                call_seed = derive_seed(seed, group_offset + start)
                if self.decode == "loop":
                    res = decode_groups(
                        self.model,
                        self.tokenizer,
                        chunk,
                        group_size,
                        settings,
                        call_seed,
                        self.eos_ids,
                        self.tokenizer.pad_token_id,
                    )
                    r, t = res.responses, res.truncated
                    timings["prefill"] += res.prefill_seconds
                    timings["decode"] += res.decode_seconds
                else:
                    rows = [p for p in chunk for _ in range(group_size)]
                    r, t = self._generate_rows(rows, settings, call_seed)
                responses.extend(r)
                truncated.extend(t)
        timings = timings if self.decode == "loop" else {}
        texts = self.tokenizer.batch_decode(responses, skip_special_tokens=True)
        return RolloutBatch(
            prompt_ids=[list(p) for p in prompt_ids],
            response_ids=responses,
            texts=texts,
            truncated=truncated,
            group_size=group_size,
            settings=settings,
            timings={"generate": time.perf_counter() - t0, **timings},
        )

    def _generate_rows(
        self, rows: list[list[int]], settings: SamplingSettings, seed: int
    ) -> tuple[list[list[int]], list[bool]]:
        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in rows)
        device = self.model.device
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for i, r in enumerate(rows):  # left padding: every prompt ends at the last column
            input_ids[i, width - len(r) :] = torch.tensor(r)
            attention[i, width - len(r) :] = 1
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
        return generate_trimmed(self.model, self.tokenizer, inputs, width, settings, seed,
                                self.eos_ids)  # fmt: skip


def generate_trimmed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: dict[str, torch.Tensor],
    width: int,
    settings: SamplingSettings,
    seed: int,
    eos_ids: set[int],
    **extra: Any,
) -> tuple[list[list[int]], list[bool]]:
    """One ``model.generate`` call on left-padded ``inputs`` (prompts ``width`` wide), seeded,
    stopped at the settings' stop strings, each row cut where it ended (text and VLM engines)."""
    stopper = None
    criteria = StoppingCriteriaList()
    if settings.stop or settings.stop_regex:
        stopper = TextStop(tokenizer, width, settings.stop, settings.stop_regex)
        criteria.append(stopper)
    torch.manual_seed(seed)
    out = model.generate(
        **inputs,
        max_new_tokens=settings.max_new_tokens,
        stopping_criteria=criteria,
        pad_token_id=tokenizer.pad_token_id,
        **generate_sampling_kwargs(settings),
        **extra,
    )
    generated = out[:, width:].cpu().tolist()
    return trim_at_stops(generated, eos_ids, stopper.stopped_at if stopper is not None else None)
