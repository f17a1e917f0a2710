"""Scaled-dot-product attention that hands grouped key/value heads to torch as they are.

transformers' ``sdpa`` attention repeats every key and value head ``heads / kv_heads`` times
(``repeat_kv``) whenever an attention mask is given, because CUDA's fused kernels fall back to
the slow path for masked grouped-query attention. The CPU kernels take the mask and the groups
together; on the shared-prefix training pass (a mask, and a prompt cache repeated for G rows)
the repeat costs a copy of every cached key and value per layer, and a reduction of their
gradients in backward (issue 7 measured ~1 s per update on SmolLM2). ``sdpa_grouped`` passes
``enable_gqa=True`` on CPU and defers to transformers' ``sdpa`` everywhere else, so the results
are the same (tested against ``sdpa``).

It also serves the decode loop's group-prefix cache (``rlsd.rollout.decode``): when the forward
carries ``rlsd_group_prefix``, a decode step's attention reads each group's prompt once.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

#: the name registered with transformers' attention and mask interfaces
SDPA_GROUPED = "rlsd_sdpa_grouped"


def sdpa_grouped_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    q_length = query.shape[2]
    group_prefix = kwargs.pop("rlsd_group_prefix", None)
    if group_prefix is not None and q_length == 1:
        # the decode loop's cache keeps each group's prompt once (rlsd.rollout.decode)
        from rlsd.rollout.decode import cascade_decode_attention

        return cascade_decode_attention(module, query, key, value, group_prefix, scaling), None
    groups = getattr(module, "num_key_value_groups", 1)
    if (
        groups == 1
        or query.device.type != "cpu"
        or q_length == 1  # decoding: transformers packs the groups into the query already
        or attention_mask is None
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
    ):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs
        )
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(SDPA_GROUPED, sdpa_grouped_attention)
AttentionMaskInterface.register(SDPA_GROUPED, sdpa_mask)


def transformers_attn_implementation(name: str) -> str:
    """The name transformers knows for a ``ModelConfig.attn_implementation`` value."""
    return SDPA_GROUPED if name == "sdpa_grouped" else name
