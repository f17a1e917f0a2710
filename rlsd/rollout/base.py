"""The rollout interface: prompts in, G sampled completions per prompt out."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, Field


class SamplingSettings(BaseModel):
    """How completions are sampled; recorded with every rollout batch."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(1.0, ge=0.0, description="Sampling temperature (method: 1.0).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, description="Top-k filter; 0 disables it.")
    max_new_tokens: int = Field(64, ge=1, description="Longest completion, in tokens.")
    do_sample: bool = Field(True, description="False = greedy (evaluation).")
    stop: list[str] = Field(
        default_factory=list, description="Literal strings that end a completion (kept in it)."
    )
    stop_regex: str | None = Field(
        None,
        description="A regular expression that ends a completion once the text matches it, e.g. "
        "the final-answer line; the matched text is kept.",
    )


@dataclass
class RolloutBatch:
    """Completions of a batch of prompts, G per prompt, groups contiguous (prompt i -> rows iG..iG+G-1)."""

    prompt_ids: list[list[int]]  # one per prompt (shared by its group)
    response_ids: list[list[int]]  # one per completion, trimmed to its real length
    texts: list[str]
    truncated: list[bool]  # hit max_new_tokens without eos or a stop
    group_size: int
    settings: SamplingSettings
    timings: dict[str, float] = field(default_factory=dict)
    #: the prompts as the forward passes take them (ids, or dicts with vision tensors)
    prompt_inputs: list[Any] | None = None
    #: the sampling engine's own log-prob of each sampled token (one list per response, aligned
    #: with ``response_ids``), where the engine reports them (vLLM). The trainer compares them
    #: with its recomputed log-probs: the on-policy check (``rollout/logprob_diff_*``).
    logprobs: list[list[float]] | None = None

    @property
    def num_sequences(self) -> int:
        return len(self.response_ids)

    def group_of(self, row: int) -> int:
        return row // self.group_size

    def response_tensors(self, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded [N, T] response ids and their 0/1 mask (T = longest real response)."""
        width = max((len(r) for r in self.response_ids), default=0)
        ids = torch.full((len(self.response_ids), max(width, 1)), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids, dtype=torch.float32)
        for i, r in enumerate(self.response_ids):
            if r:
                ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
                mask[i, : len(r)] = 1.0
        return ids, mask


class RolloutEngine(Protocol):
    """Every engine (transformers generate, vLLM) answers the same call."""

    def generate(
        self,
        prompt_ids: list[list[int]],
        group_size: int,
        settings: SamplingSettings,
        seed: int,
        group_offset: int = 0,
    ) -> RolloutBatch: ...

    def sync_weights(self, model: torch.nn.Module) -> None:
        """Make the engine sample from the policy's current weights (after an optimizer step)."""
        ...


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Ids that end a completion: the model's generation-config eos ids and the tokenizer's."""
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return set(ids)


def generate_sampling_kwargs(settings: SamplingSettings) -> dict[str, Any]:
    """``model.generate`` keywords for ``settings`` (greedy clears the config's sampling knobs,
    which would otherwise warn)."""
    kwargs: dict[str, Any] = {"do_sample": settings.do_sample}
    if settings.do_sample:
        kwargs.update(
            temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or None
        )
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def trim_at_stops(
    generated: list[list[int]], eos_ids: set[int], stopped_at: dict[int, int] | None = None
) -> tuple[list[list[int]], list[bool]]:
    """Cut each row of ``model.generate``'s output where it ended; return (responses, truncated).

    A row ends at its first eos (kept: it was sampled) or at the length where its text first hit
    a stop (``stopped_at[row]``, from ``TextStop``), whichever comes first; rows that did neither
    ran to max_new_tokens and are truncated. The rows are cut here, not by pad tokens, because
    generate pads finished rows with the pad id, which for many chat models is the eos id.
    """
    stopped_at = stopped_at or {}
    responses: list[list[int]] = []
    truncated: list[bool] = []
    for i, toks in enumerate(generated):
        length = len(toks)
        ended = False
        for j, tok in enumerate(toks):
            if tok in eos_ids:
                length, ended = j + 1, True  # the eos is part of the response: it is sampled
                break
        if i in stopped_at and stopped_at[i] <= length:
            length, ended = stopped_at[i], True
        responses.append(toks[:length])
        truncated.append(not ended)
    return responses, truncated


def group_chunk_starts(n_prompts: int, group_size: int, max_batch_sequences: int) -> range:
    """Where each ``generate`` call's chunk of prompts starts: whole groups, at most
    ``max_batch_sequences`` rows (at least one group) per call."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return range(0, n_prompts, max(1, max_batch_sequences // group_size))


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Sample in eval mode (no dropout), then give the model back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed from parts, stable across processes and Python runs (unlike hash())."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
