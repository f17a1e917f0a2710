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
carries ``rlsd_group_prefix`` (a ``GroupPrefix``), a decode step's attention reads each group's
prompt once (``cascade_decode_attention``). The attention maths lives here, with the kernel that
calls it; the cache layer that keeps the prompt apart lives with the decode loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.cache_utils import Cache
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

#: the name registered with transformers' attention and mask interfaces
SDPA_GROUPED = "rlsd_sdpa_grouped"


@dataclass
class GroupPrefix:
    """What ``cascade_decode_attention`` needs besides the module and its query.

    ``cache``'s layers keep each group's prompt in ``prefix_keys`` / ``prefix_values`` and the
    rows' own tokens apart (``rlsd.rollout.decode.GroupPrefixLayer``).
    """

    cache: Cache
    prefix_mask: torch.Tensor  # [groups, prompt width] bool, False at left padding
    rows: torch.Tensor  # [live rows] original row of each batch row (group * G + j)
    group_size: int


def cascade_decode_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    state: GroupPrefix,
    scaling: float,
) -> torch.Tensor:
    """One decode step's attention: each row's query over its group's prompt (read once per
    group) and over its own tokens, merged by their log-sum-exps. Exactly softmax attention over
    the concatenation (tested against transformers' attention over a repeated cache).

    ``query`` [n, heads, 1, d]; ``key`` / ``value`` the rows' own tokens [n, kv_heads, t, d].
    Returns [n, 1, heads, d].
    """
    layer = state.cache.layers[module.layer_idx]
    kp, vp = layer.prefix_keys.float(), layer.prefix_values.float()
    n, heads, _, d = query.shape
    groups, kv_heads, width, _ = kp.shape
    g, size = heads // kv_heads, state.group_size
    q = query.float().view(n, kv_heads, g, d)  # query head h reads key/value head h // g
    # The group's prompt: its rows' queries side by side (finished rows' slots stay zero).
    slots = q.new_zeros(groups * size, kv_heads, g, d)
    slots[state.rows] = q
    slots = (
        slots.view(groups, size, kv_heads, g, d).transpose(1, 2).reshape(groups, kv_heads, -1, d)
    )
    sp = torch.matmul(slots, kp.transpose(-1, -2)).mul_(scaling)
    sp.masked_fill_(~state.prefix_mask[:, None, None, :], float("-inf"))
    mp = sp.amax(dim=-1, keepdim=True)
    ep = sp.sub_(mp).exp_()
    lp = ep.sum(dim=-1, keepdim=True)
    op = torch.matmul(ep, vp)

    def per_row(t: torch.Tensor) -> torch.Tensor:
        t = t.view(groups, kv_heads, size, g, -1).transpose(1, 2)
        return t.reshape(groups * size, kv_heads, g, -1)[state.rows]

    op, mp, lp = per_row(op), per_row(mp), per_row(lp)
    # The row's own tokens (the current one included: the cache was updated first).
    ss = torch.matmul(q, key.float().transpose(-1, -2)).mul_(scaling)
    ms = ss.amax(dim=-1, keepdim=True)
    es = ss.sub_(ms).exp_()
    ls = es.sum(dim=-1, keepdim=True)
    os_ = torch.matmul(es, value.float())
    m = torch.maximum(mp, ms)
    a, b = (mp - m).exp_(), (ms - m).exp_()
    out = (op * a + os_ * b) / (lp * a + ls * b)
    return out.view(n, 1, heads, d).to(query.dtype)


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
