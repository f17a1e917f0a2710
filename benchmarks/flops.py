"""Matmul FLOPs of a decoder-only transformer for the tokens a step actually processes, and the
machine's measured fp32 matmul rate, so that a phase's time can be set against physics.

Counting rules (multiply-add = 2 FLOPs; only matmuls, which are nearly all of the arithmetic):

* a token through the decoder costs ``2 x (matmul parameters of the layers)``: q, k, v, o and the
  MLP's up / gate / down projections of every layer;
* a position whose logits are computed costs ``2 x vocab x hidden`` more (the output head);
* attention costs ``2 x 2 x layers x heads x head_dim`` per (query, key) pair: q.k^T and p.v.
  Causal attention over a sequence of n new tokens after ``past`` cached ones has
  ``n x past + n (n + 1) / 2`` useful pairs (masked pairs are not counted, nor padding);
* backward = 2 x forward (gradients of the inputs and of the weights of every matmul);
* generation = a prefill forward over the prompt (logits of its last position only) plus one
  forward per decode step over the KV cache: for a row that is the same sum as one forward over
  ``prompt + response - 1`` tokens with logits at the ``response`` positions that sample. When the
  engine prefills each group's prompt once (the product's decode loop), the prompt is counted
  once per group, not once per row: the repeats are work it does not do, and counting them
  would flatter its rate.

Only real tokens count: padding, masked attention pairs and rows that keep decoding after they
stopped are overhead, and show up as a lower achieved rate.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder-only transformer that its matmul FLOPs depend on."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    gated_mlp: bool = True  # Llama / Qwen / Mistral: up, gate and down projections

    @classmethod
    def from_config(cls, config: Any) -> Shape:
        """From a transformers config (a VLM's ``text_config`` is used when present)."""
        config = getattr(config, "text_config", None) or config
        hidden = config.hidden_size
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or hidden // heads
        act = getattr(config, "hidden_act", "silu")
        return cls(
            layers=config.num_hidden_layers,
            hidden=hidden,
            heads=heads,
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            intermediate=config.intermediate_size,
            vocab=config.vocab_size,
            gated_mlp=act in ("silu", "swish", "gelu_pytorch_tanh") or "glu" in str(act),
        )

    @property
    def layer_matmul_params(self) -> int:
        """Weights of one layer's matmuls (attention projections and MLP)."""
        h, d = self.hidden, self.head_dim
        attn = h * self.heads * d + 2 * h * self.kv_heads * d + self.heads * d * h
        mlp = (3 if self.gated_mlp else 2) * h * self.intermediate
        return attn + mlp

    @property
    def decoder_matmul_params(self) -> int:
        return self.layers * self.layer_matmul_params

    @property
    def head_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def attention_flops_per_pair(self) -> int:
        return 2 * 2 * self.layers * self.heads * self.head_dim


def attention_pairs(new: int, past: int = 0, causal: bool = True) -> int:
    """(query, key) pairs of ``new`` tokens attending to ``past`` cached ones and to each other."""
    if new <= 0:
        return 0
    if causal:
        return new * past + new * (new + 1) // 2
    return new * (past + new)


def forward_flops(
    shape: Shape, new: int, past: int = 0, logits: int | None = None, causal: bool = True
) -> int:
    """FLOPs of one forward over ``new`` tokens after ``past`` cached ones, with the output head
    applied at ``logits`` positions (default: every new token)."""
    if new <= 0:
        return 0
    logits = new if logits is None else logits
    return (
        2 * shape.decoder_matmul_params * new
        + 2 * shape.head_params * logits
        + shape.attention_flops_per_pair * attention_pairs(new, past, causal)
    )


def scoring_forward_flops(
    shape: Shape,
    prompts: Sequence[int],
    responses: Sequence[int],
    group_size: int,
    shared_prefix: bool,
) -> int:
    """One forward that yields the log-probs of every response token (teacher pass, or the
    forward half of the update).

    ``prompts`` holds one length per group, ``responses`` one per row (``group_size`` rows per
    group). Plain: each row runs prompt + response[:-1]. Shared prefix: each group's prompt runs
    once and its rows run response[:-1] over the prompt's cache. Logits at every response token.
    """
    if len(responses) != len(prompts) * group_size:
        raise ValueError(f"{len(responses)} responses for {len(prompts)} groups of {group_size}")
    total = 0
    for g, p in enumerate(prompts):
        rows = responses[g * group_size : (g + 1) * group_size]
        if shared_prefix:
            total += forward_flops(shape, p, logits=0)
            for r in rows:
                if r > 0:
                    # the prompt's last hidden state predicts token 0: one head product
                    total += 2 * shape.head_params
                    total += forward_flops(shape, r - 1, past=p, logits=r - 1)
        else:
            for r in rows:
                if r > 0:
                    total += forward_flops(shape, p + r - 1, logits=r)
    return total


def training_flops(
    shape: Shape,
    prompts: Sequence[int],
    responses: Sequence[int],
    group_size: int,
    shared_prefix: bool,
) -> int:
    """Forward + backward (= 3 x forward) of the policy-gradient update."""
    return 3 * scoring_forward_flops(shape, prompts, responses, group_size, shared_prefix)


def generation_flops(
    shape: Shape,
    prompts: Sequence[int],
    responses: Sequence[int],
    group_size: int = 1,
    shared_prefix: bool = False,
) -> int:
    """Arithmetic cost of sampling. ``responses`` holds one length per row; ``prompts`` one per
    row, or with ``shared_prefix`` one per group of ``group_size`` rows.

    Prefill of each row's prompt (logits of its last position) and one decode step per further
    sampled token over the KV cache; finished rows and padding are not counted. With
    ``shared_prefix`` each group's prompt is prefilled once and its rows decode over its cache.
    """
    if not shared_prefix:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
        return sum(
            forward_flops(shape, p + r - 1, logits=r)
            for p, r in zip(prompts, responses, strict=True)
            if r > 0
        )
    if len(responses) != len(prompts) * group_size:
        raise ValueError(f"{len(responses)} responses for {len(prompts)} groups of {group_size}")
    total = 0
    for g, p in enumerate(prompts):
        total += forward_flops(shape, p, logits=1)
        for r in responses[g * group_size : (g + 1) * group_size]:
            total += forward_flops(shape, r - 1, past=p, logits=r - 1) if r > 1 else 0
    return total


# --------------------------------------------------------------------------------------------
# The machine's rate


@dataclass(frozen=True)
class MatmulRate:
    """Measured fp32 ``torch.mm`` rate at the current thread count, in GFLOP/s."""

    best: float
    median: float
    size: str
    threads: int

    def __str__(self) -> str:
        return (
            f"{self.best:.1f} GFLOP/s best, {self.median:.1f} median ({self.size} fp32 torch.mm, "
            f"{self.threads} threads)"
        )


def measure_matmul_rate(
    m: int = 2048, k: int = 2048, n: int = 2048, reps: int = 7, min_seconds: float = 0.0
) -> MatmulRate:
    """Time ``reps`` products of [m, k] x [k, n] fp32 matrices (after a warm-up)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g)
    b = torch.randn(k, n, generator=g)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm-up: page in, pick kernels
    rates = []
    t_start = time.perf_counter()
    while len(rates) < reps or time.perf_counter() - t_start < min_seconds:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        dt = time.perf_counter() - t0
        rates.append(2 * m * k * n / dt / 1e9)
    return MatmulRate(max(rates), statistics.median(rates), f"{m}x{k}x{n}", torch.get_num_threads())


def within(seconds: float, flops: float, rate_gflops: float) -> float:
    """How many times its arithmetic cost (``flops`` at ``rate_gflops``) a phase took."""
    ideal = flops / (rate_gflops * 1e9)
    return seconds / ideal if ideal > 0 else float("inf")
