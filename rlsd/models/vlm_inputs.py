"""Batching the inputs of a vision-language model: what rollout and the forward passes share.

``rlsd.rollout.hf_generate_mm`` (sampling) and ``rlsd.train.forward_mm`` (the training forward)
both batch the prompt dicts of ``rlsd.models.vlm.encode_mm_prompt`` and need the model's family
and placeholder ids; these live here, below both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlsd.models.loader import unwrap
from rlsd.models.vlm import IDEFICS_FAMILIES, QWEN_FAMILIES


def mm_family(model: nn.Module) -> str:
    """The supported vision-language family of ``model`` (under any PEFT / DDP wrapper)."""
    family = unwrap(model).config.model_type
    if family not in QWEN_FAMILIES + IDEFICS_FAMILIES:
        raise ValueError(f"not a supported vision-language model: model_type {family!r}")
    return family


def placeholder_ids(model: nn.Module) -> set[int]:
    """Token ids the model replaces with vision features wherever they occur in ``input_ids``."""
    config = unwrap(model).config
    ids = {getattr(config, "image_token_id", None), getattr(config, "video_token_id", None)}
    return {int(i) for i in ids if i is not None}


def collate_vision(
    family: str, prompts: list[dict[str, Any]], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Batch the vision tensors of ``prompts`` (one per row, in row order) for one forward.

    Qwen-VL: patch sequences and grids concatenated (the model splits them by grid).
    SmolVLM / Idefics3: ``[rows, max_tiles, 3, H, W]`` with all-zero padding tiles (which the
    model drops) and ``pixel_attention_mask`` False on padding. Rows without images are fine.
    Returns {} when no prompt has images.
    """
    with_images = [p for p in prompts if p.get("pixel_values") is not None]
    if not with_images:
        return {}
    if family in QWEN_FAMILIES:
        return {
            "pixel_values": torch.cat([p["pixel_values"] for p in with_images]).to(device),
            "image_grid_thw": torch.cat([p["image_grid_thw"] for p in with_images]).to(device),
        }
    ref = with_images[0]["pixel_values"]
    tiles = max(p["pixel_values"].shape[0] for p in with_images)
    height = max(p["pixel_values"].shape[-2] for p in with_images)
    width = max(p["pixel_values"].shape[-1] for p in with_images)
    pixels = ref.new_zeros(len(prompts), tiles, ref.shape[1], height, width)
    mask = torch.zeros(len(prompts), tiles, height, width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        pv = p.get("pixel_values")
        if pv is None:
            continue
        n, _, h, w = pv.shape
        pixels[i, :n, :, :h, :w] = pv
        pm = p.get("pixel_attention_mask")
        mask[i, :n, :h, :w] = True if pm is None else pm.bool()
    return {"pixel_values": pixels.to(device), "pixel_attention_mask": mask.to(device)}
