"""The product's own sampling loop over a transformers causal LM, built for G-way group rollouts.

``model.generate`` spends most of a CPU rollout on work the arithmetic does not need (issue 7):
it prefills each group's prompt G times, concatenates the whole KV cache at every step, keeps
decoding rows that already stopped, and samples through ``torch.multinomial``. This loop:

* **prefills each distinct prompt once** and repeats its KV cache for the G rows of its group;
* writes each step's keys and values into **preallocated cache capacity** (a transformers
  ``DynamicLayer`` subclass) instead of concatenating;
* **drops finished rows** from the batch (and from the cache) as they stop;
* samples by **inverse CDF** over the softmax (one cumulative sum and a binary search per row),
  with the same temperature / top-k / top-p semantics as transformers' logits processors.

The model's own forward (``logits_to_keep=1``) does the maths, so any causal LM that takes a
``Cache``, ``position_ids`` and a 2-D attention mask works; the result is the same tokens as
``generate`` for greedy decoding (tested) and draws from the same distribution when sampling.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import Cache, DynamicLayer

from rlsd.models.attention import SDPA_GROUPED, GroupPrefix
from rlsd.rollout.base import SamplingSettings


class PreallocatedLayer(DynamicLayer):
    """A KV-cache layer that writes into capacity allocated once and returns views of its prefix.

    ``DynamicLayer`` concatenates the whole cache at every decode step (a copy of everything so
    far, per layer, per step); here each step writes one column.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        b, h, _, dk = key_states.shape
        self.device = key_states.device
        self.keys = key_states.new_empty(b, h, self.capacity, dk)
        self.values = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = key_states.shape[-2]
        end = self.length + n
        if end > self.capacity:
            raise RuntimeError(f"KV cache capacity {self.capacity} exceeded ({end} positions)")
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_seq_length(self) -> int:
        return self.length

    def reset(self) -> None:
        super().reset()
        self.length = 0

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        self.length = max(0, self.length + tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.is_initialized:
            self.keys = self.keys.repeat_interleave(repeats, dim=0)
            self.values = self.values.repeat_interleave(repeats, dim=0)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            # Only the filled prefix is copied; the rest of the capacity is fresh.
            keep = self.keys[indices, :, : self.length]
            vkeep = self.values[indices, :, : self.length]
            self.keys = self.keys.new_empty(len(indices), *self.keys.shape[1:])
            self.values = self.values.new_empty(len(indices), *self.values.shape[1:])
            self.keys[:, :, : self.length] = keep
            self.values[:, :, : self.length] = vkeep


def preallocated_cache(
    model: PreTrainedModel, capacity: int, layer: type[PreallocatedLayer] = PreallocatedLayer
) -> Cache:
    """A transformers ``Cache`` with one ``layer`` (of ``capacity`` positions) per decoder layer."""
    config = model.config.get_text_config()
    return Cache(layers=[layer(capacity) for _ in range(config.num_hidden_layers)])


class GroupPrefixLayer(PreallocatedLayer):
    """A KV-cache layer that keeps each group's prompt once and each row's own tokens apart.

    The prefill's keys and values (one row per distinct prompt) stay as they are; decode steps
    write the G rows' own keys and values into preallocated capacity. Attention over the prompt
    then reads its keys once per group instead of once per row
    (``rlsd.models.attention.cascade_decode_attention``):
    at a 1,000-token prompt and G = 8 that is most of a decode step's memory traffic.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.prefix_keys: torch.Tensor | None = None
        self.prefix_values: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.prefix_keys is None:
            self.prefix_keys, self.prefix_values = key_states, value_states
            self.device = key_states.device
            return key_states, value_states
        return super().update(key_states, value_states)

    def get_seq_length(self) -> int:
        prefix = 0 if self.prefix_keys is None else self.prefix_keys.shape[-2]
        return prefix + self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def batch_repeat_interleave(self, repeats: int) -> None:
        pass  # the prompt is not repeated: that is the point

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            super().batch_select_indices(indices)


# --------------------------------------------------------------------------------------------
# Sampling


def filter_logits(logits: torch.Tensor, settings: SamplingSettings) -> torch.Tensor:
    """Temperature, then top-k, then top-p, as transformers' logits processors apply them.

    Returns float32 logits with filtered-out tokens at ``-inf`` (at least one token survives).
    """
    logits = logits.float()
    if settings.temperature not in (0.0, 1.0):
        logits = logits / settings.temperature
    if settings.top_k and settings.top_k < logits.shape[-1]:
        kth = torch.topk(logits, settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if settings.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = cum <= (1.0 - settings.top_p)
        drop_sorted[:, -1] = False  # the most likely token always survives
        drop = drop_sorted.scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_tokens(
    logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row of ``logits`` [n, V]: argmax when greedy, else a draw from the filtered
    softmax by inverse CDF (a float64 cumulative sum and a binary search: one pass over the
    vocabulary, where ``torch.multinomial`` costs several)."""
    if not settings.do_sample:
        return logits.argmax(dim=-1)
    probs = filter_logits(logits, settings).softmax(dim=-1)
    cdf = probs.cumsum(dim=-1, dtype=torch.float64)
    u = torch.rand(probs.shape[0], 1, generator=generator, device=probs.device, dtype=torch.float64)
    # right=True: the first token whose cumulative mass exceeds u, so a zero-probability token
    # (an unchanged cdf entry) can never be picked.
    picked = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    return picked.clamp_(max=probs.shape[-1] - 1)


# --------------------------------------------------------------------------------------------
# The loop


@dataclass
class DecodeResult:
    responses: list[list[int]]  # per row, trimmed to where it stopped (eos / stop text included)
    truncated: list[bool]  # ran to max_new_tokens without stopping
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0


class _Stops:
    """Whether a row's generated text contains a stop string or matches the stop regex."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, settings: SamplingSettings) -> None:
        self.tokenizer = tokenizer
        self.stop = settings.stop
        self.pattern = re.compile(settings.stop_regex) if settings.stop_regex else None

    @property
    def active(self) -> bool:
        return bool(self.stop or self.pattern)

    def hits(self, generated: Iterable[list[int]]) -> list[bool]:
        texts = self.tokenizer.batch_decode(list(generated), skip_special_tokens=True)
        return [
            any(s in t for s in self.stop) or bool(self.pattern and self.pattern.search(t))
            for t in texts
        ]


def cache_kwarg(model: PreTrainedModel) -> str:
    # transformers 5.2x renamed ``past_key_values`` to ``cache`` (the old name warns).
    params = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def decode_groups(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    group_size: int,
    settings: SamplingSettings,
    seed: int,
    eos_ids: set[int],
    pad_id: int,
) -> DecodeResult:
    """G completions of each prompt (rows grouped: prompt i -> rows i*G .. i*G+G-1)."""
    device = model.device
    n_rows = len(prompts) * group_size
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):  # left padding: every prompt ends at the last column
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp_(min=0)
    # The group-prefix cache needs the product's attention function to read it.
    cascade = getattr(model.config, "_attn_implementation", None) == SDPA_GROUPED
    if cascade:  # capacity for the rows' own tokens; the prompt is kept as prefilled
        cache = preallocated_cache(model, settings.max_new_tokens, GroupPrefixLayer)
    else:
        cache = preallocated_cache(model, width + settings.max_new_tokens)
    generator = None
    if settings.do_sample:
        generator = torch.Generator(device=device).manual_seed(seed)
    kw = cache_kwarg(model)

    t0 = time.perf_counter()
    out = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=positions.to(device),
        use_cache=True,
        logits_to_keep=1,
        **{kw: cache},
    )
    logits = out.logits[:, -1].repeat_interleave(group_size, dim=0)
    if group_size > 1 and not cascade:
        cache.batch_repeat_interleave(group_size)
    row_mask = None if cascade else mask.repeat_interleave(group_size, dim=0).to(device)
    next_pos = (positions[:, -1] + 1).repeat_interleave(group_size).to(device)
    prefill_seconds = time.perf_counter() - t0

    t1 = time.perf_counter()
    generated: list[list[int]] = [[] for _ in range(n_rows)]
    stopped = [False] * n_rows
    live = torch.arange(n_rows)  # original row of each batch row
    extra = {}
    if cascade:
        state = GroupPrefix(cache, mask.bool().to(device), live.to(device), group_size)
        extra = {"rlsd_group_prefix": state}
    stops = _Stops(tokenizer, settings)
    eos = torch.tensor(sorted(eos_ids), dtype=torch.long, device=device)
    while True:
        tokens = sample_tokens(logits, settings, generator)
        tok_list = tokens.tolist()
        rows = live.tolist()
        for r, t in zip(rows, tok_list, strict=True):
            generated[r].append(t)
        done = torch.isin(tokens, eos).cpu()
        if stops.active:
            open_rows = [j for j in range(len(rows)) if not done[j]]
            if open_rows:
                hit = stops.hits(generated[rows[j]] for j in open_rows)
                for j, h in zip(open_rows, hit, strict=True):
                    if h:
                        done[j] = True
        for j in done.nonzero().flatten().tolist():
            stopped[rows[j]] = True
        if len(generated[rows[0]]) >= settings.max_new_tokens or bool(done.all()):
            break
        keep = (~done).nonzero().flatten()
        if len(keep) < len(rows):
            keep_dev = keep.to(device)
            cache.batch_select_indices(keep_dev)
            live = live[keep]
            tokens = tokens[keep_dev]
            next_pos = next_pos[keep_dev]
            if cascade:
                state.rows = live.to(device)
            else:
                row_mask = row_mask[keep_dev]
        if not cascade:
            row_mask = torch.cat([row_mask, row_mask.new_ones(len(live), 1)], dim=1)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=row_mask,
            position_ids=next_pos[:, None],
            use_cache=True,
            logits_to_keep=1,
            **{kw: cache},
            **extra,
        )
        logits = out.logits[:, -1]
        next_pos = next_pos + 1
    return DecodeResult(
        responses=generated,
        truncated=[not s for s in stopped],
        prefill_seconds=prefill_seconds,
        decode_seconds=time.perf_counter() - t1,
    )
