"""Multimodal forward passes: response hidden states of G responses sharing one prompt with images.

The counterparts of ``rlsd.train.forward`` for the vision-language families of
``rlsd.models.vlm``. Both functions return the final hidden states that predict each response
token, ``[M, H]`` in ``ResponseIndex`` order (row-major over responses, M = real response tokens),
so ``rlsd.algo.token_logprobs_from_hidden`` with ``output_head(model)`` works unchanged. Image and
prompt positions are never returned: they carry no loss.

A prompt is the dict ``rlsd.models.vlm.encode_mm_prompt`` returns: ``input_ids`` (list[int]) and,
when it has images, the family's vision tensors without a batch dimension (Qwen-VL:
``pixel_values`` [patches, D], ``image_grid_thw`` [images, 3] and ``mm_token_type_ids``
(list[int]); SmolVLM / Idefics3: ``pixel_values`` [tiles, 3, H, W], ``pixel_attention_mask``
[tiles, H, W]).

Positions. Qwen2-VL / Qwen2.5-VL / Qwen3-VL use 3-D M-RoPE: ``get_rope_index`` gives image tokens
(t, h, w) grid positions and text tokens equal positions on the three axes, continuing from the
largest position so far + 1. A prompt of L real tokens whose largest position is P therefore has
``rope_delta = P + 1 - L`` and the j-th response token sits at ``L + rope_delta + j`` on all three
axes, which is what ``generate`` does (``rope_deltas``) and what the shared-prefix pass passes as
explicit ``position_ids``. SmolVLM / Idefics3 use 1-D positions ``L + j``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from rlsd.models.loader import unwrap
from rlsd.models.vlm import QWEN_FAMILIES
from rlsd.models.vlm_inputs import collate_vision, mm_family, placeholder_ids
from rlsd.train.forward import gather_response_hidden, right_pad

__all__ = ["response_hidden_plain_mm", "response_hidden_shared_prefix_mm"]


def _mm_base(model: nn.Module) -> nn.Module:
    """The multimodal backbone (vision tower + projector + language model), without the LM head."""
    return unwrap(model).model


def _cache_kw(base: nn.Module) -> str:
    params = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _mm_types(prompt: dict[str, Any]) -> list[int]:
    types = prompt.get("mm_token_type_ids")
    return list(types) if types is not None else [0] * len(prompt["input_ids"])


def _check_responses(model: nn.Module, responses: list[list[int]]) -> None:
    bad = placeholder_ids(model)
    for i, r in enumerate(responses):
        if bad.intersection(r[:-1]):
            raise ValueError(
                f"response {i} contains an image placeholder token {sorted(bad.intersection(r))}: "
                "the plain multimodal forward would try to put image features there. Suppress "
                "these ids when sampling (HFGenerateEngineMM does) or use the shared-prefix pass."
            )


def response_hidden_plain_mm(
    model: nn.Module,
    prompt_inputs_per_seq: list[dict[str, Any]],
    responses: list[list[int]],
    pad_id: int,
) -> torch.Tensor:
    """Hidden states predicting each response token; every row re-encodes its prompt and images.

    Row i is ``prompt_inputs_per_seq[i]`` (input_ids + vision tensors) followed by
    ``responses[i][:-1]``, right-padded; the vision tower runs once per row. Positions are the
    model's own (``get_rope_index`` on the whole row for Qwen-VL). Returns ``[M, H]`` in
    ResponseIndex order. The reference for ``response_hidden_shared_prefix_mm``.
    """
    if len(prompt_inputs_per_seq) != len(responses):
        raise ValueError(f"{len(prompt_inputs_per_seq)} prompts for {len(responses)} responses")
    family = mm_family(model)
    _check_responses(model, responses)
    base = _mm_base(model)
    device = next(model.parameters()).device
    prompts = [list(p["input_ids"]) for p in prompt_inputs_per_seq]
    ids, attn = right_pad([p + r[:-1] for p, r in zip(prompts, responses, strict=True)], pad_id)
    kwargs: dict[str, Any] = collate_vision(family, prompt_inputs_per_seq, device)
    if family in QWEN_FAMILIES:
        types = [
            _mm_types(p) + [0] * max(len(r) - 1, 0)
            for p, r in zip(prompt_inputs_per_seq, responses, strict=True)
        ]
        kwargs["mm_token_type_ids"] = right_pad(types, 0, ids.shape[1])[0].to(device)
    hidden = base(
        input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False, **kwargs
    ).last_hidden_state
    rows = [i for i, r in enumerate(responses) for _ in range(len(r))]
    cols = [len(prompts[i]) - 1 + j for i, r in enumerate(responses) for j in range(len(r))]
    return hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]


def prompt_positions(
    model: nn.Module, prompts: list[dict[str, Any]], ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Position ids of right-padded prompts and each prompt's rope delta.

    Qwen-VL with images: ``get_rope_index`` -> ([3, B, W] positions, [B] deltas), the delta being
    (largest position + 1) - real length. Otherwise (None, zeros): positions are 0..L-1.
    """
    family = mm_family(model)
    zeros = torch.zeros(len(prompts), dtype=torch.long, device=ids.device)
    if family not in QWEN_FAMILIES or not any(p.get("image_grid_thw") is not None for p in prompts):
        return None, zeros
    base = _mm_base(model)
    types = right_pad([_mm_types(p) for p in prompts], 0, ids.shape[1])[0].to(ids.device)
    grid = torch.cat([p["image_grid_thw"] for p in prompts if p.get("image_grid_thw") is not None])
    positions, deltas = base.get_rope_index(
        input_ids=ids,
        mm_token_type_ids=types,
        image_grid_thw=grid.to(ids.device),
        attention_mask=mask,
    )
    return positions, deltas.reshape(-1).to(ids.device)


def response_hidden_shared_prefix_mm(
    model: nn.Module,
    group_prompts: list[dict[str, Any]],
    responses: list[list[int]],
    group_size: int,
    pad_id: int,
) -> torch.Tensor:
    """Hidden states predicting each response token, encoding each group's prompt + images once.

    ``group_prompts[g]`` is shared by responses ``g*G .. g*G+G-1``. The prompts (right-padded) and
    their images go through the model once (vision tower once per group) with a KV cache; the
    cache is repeated G times and the responses attend to it, at positions continuing the prompt's
    (``L + rope_delta + j``, see the module docstring). Equals ``response_hidden_plain_mm`` on
    the same rows, values and gradients (the repeated cache is differentiable, so the gradient
    reaches the prefix pass and the vision tower). Returns ``[M, H]`` in ResponseIndex order.
    """
    if len(responses) != len(group_prompts) * group_size:
        raise ValueError(
            f"{len(responses)} responses do not make {len(group_prompts)} groups of {group_size}"
        )
    family = mm_family(model)
    base = _mm_base(model)
    device = next(model.parameters()).device
    b = len(group_prompts)
    pids, pmask = right_pad([list(p["input_ids"]) for p in group_prompts], pad_id)
    pids, pmask = pids.to(device), pmask.to(device)
    plen = pmask.sum(-1)
    positions, deltas = prompt_positions(model, group_prompts, pids, pmask)
    kwargs: dict[str, Any] = collate_vision(family, group_prompts, device)
    if positions is not None:
        kwargs["position_ids"] = positions
    if family in QWEN_FAMILIES:
        kwargs["mm_token_type_ids"] = right_pad(
            [_mm_types(p) for p in group_prompts], 0, pids.shape[1]
        )[0].to(device)
    out = base(input_ids=pids, attention_mask=pmask, use_cache=True, **kwargs)
    last = out.last_hidden_state[torch.arange(b, device=device), plen - 1]
    first = last.repeat_interleave(group_size, dim=0)  # predicts response token 0
    cache_kw = _cache_kw(base)
    cache = getattr(out, cache_kw, None)
    if cache is None:
        raise RuntimeError(
            "the prefix pass returned no KV cache (gradient checkpointing turns the cache off in "
            "training mode): use response_hidden_plain_mm, or disable gradient checkpointing"
        )
    cache.batch_repeat_interleave(group_size)

    rest = [r[:-1] for r in responses]
    rwidth = max((len(r) for r in rest), default=0)
    hidden = None
    if rwidth > 0:
        rids, rmask = right_pad(rest, pad_id, rwidth)
        start = (plen + deltas).repeat_interleave(group_size)
        rpos = start[:, None] + torch.arange(rwidth, device=device)[None, :]
        if family in QWEN_FAMILIES:
            rpos = rpos[None].expand(3, -1, -1)
        full_mask = torch.cat([pmask.repeat_interleave(group_size, dim=0), rmask.to(device)], 1)
        hidden = base(
            input_ids=rids.to(device),
            attention_mask=full_mask,
            position_ids=rpos,
            use_cache=True,
            **{cache_kw: cache},
        ).last_hidden_state
    return gather_response_hidden(first, hidden, responses)
