"""Forward passes that turn (prompt, response) token lists into per-token hidden states.

Only the hidden states that predict response tokens are kept ([M, H], M = real response tokens);
the vocabulary projection happens later in chunks (``rlsd.algo.token_logprobs_from_hidden``), so no
[N, T, V] tensor is ever built.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaModel

from rlsd.models.loader import unwrap


@dataclass
class ResponseIndex:
    """Where the M real response tokens of a batch sit in its right-padded [N, T] layout."""

    rows: torch.Tensor  # [M] row of each token
    cols: torch.Tensor  # [M] position of each token inside its response
    targets: torch.Tensor  # [M] token ids
    mask: torch.Tensor  # [N, T] float 0/1
    lengths: list[int]

    @classmethod
    def build(cls, responses: list[list[int]]) -> ResponseIndex:
        lengths = [len(r) for r in responses]
        width = max(max(lengths, default=0), 1)
        rows = torch.tensor([i for i, n in enumerate(lengths) for _ in range(n)], dtype=torch.long)
        cols = torch.tensor([j for n in lengths for j in range(n)], dtype=torch.long)
        targets = torch.tensor([t for r in responses for t in r], dtype=torch.long)
        mask = torch.zeros(len(responses), width)
        mask[rows, cols] = 1.0
        return cls(rows, cols, targets, mask, lengths)

    @property
    def num_tokens(self) -> int:
        return int(self.targets.numel())

    def scatter(self, values: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """[M] -> [N, T]; padding gets ``fill``. Differentiable."""
        out = values.new_full(self.mask.shape, fill)
        return out.index_put((self.rows, self.cols), values)


def output_head(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    head = unwrap(model).get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


# transformers 5.2x renamed the decoder's ``past_key_values`` argument and output to ``cache``.
_CACHE_KW = (
    "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
)


def _decoder(model: nn.Module) -> nn.Module:
    return unwrap(model).get_decoder()


def right_pad(
    rows: list[list[int]], pad: int, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``[len(rows), width]`` long ids and their 0/1 mask (width: longest row, >= 1)."""
    width = max(max((len(r) for r in rows), default=0), 1) if width is None else width
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):  # positions 0..len-1 are the real ones
        if r:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
    return ids, mask


def gather_response_hidden(
    first: torch.Tensor, hidden: torch.Tensor | None, responses: list[list[int]]
) -> torch.Tensor:
    """The shared-prefix passes' result: ``[M, H]`` in ResponseIndex order.

    ``first[i]`` (the prefix's last hidden state) predicts response i's token 0 and
    ``hidden[i, j]`` (the response pass over ``responses[i][:-1]``) its token j + 1; ``hidden``
    is None when no response has more than one token. Empty responses contribute nothing.
    """
    out_rows = []
    for i, r in enumerate(responses):
        if not r:
            continue
        out_rows.append(first[i : i + 1])
        if len(r) > 1:
            out_rows.append(hidden[i, : len(r) - 1])
    if not out_rows:
        return first[:0]
    return torch.cat(out_rows, dim=0)


def response_hidden_plain(
    model: nn.Module,
    prompts: list[list[int]],
    responses: list[list[int]],
    pad_id: int,
) -> torch.Tensor:
    """Hidden states predicting each response token, one full sequence per row.

    Row i is prompt_i + response_i[:-1] (the last token is predicted, never fed); the result is
    [M, H] in ResponseIndex order. Gradients flow when called with grad enabled.
    """
    device = next(model.parameters()).device
    ids, attn = right_pad([p + r[:-1] for p, r in zip(prompts, responses, strict=True)], pad_id)
    hidden = _decoder(model)(
        input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False
    ).last_hidden_state
    rows = [i for i, r in enumerate(responses) for _ in range(len(r))]
    cols = [len(prompts[i]) - 1 + j for i, r in enumerate(responses) for j in range(len(r))]
    return hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]


def response_hidden_shared_prefix(
    model: nn.Module,
    prefixes: list[list[int]],
    responses: list[list[int]],
    group_size: int,
    pad_id: int,
) -> torch.Tensor:
    """Hidden states predicting each response token, encoding each group's prefix once.

    ``prefixes[g]`` is shared by responses g*G .. g*G+G-1. The prefix is run once per group with a
    KV cache; the cache is repeated G times and the responses attend to it. Same result as
    ``response_hidden_plain`` on prefix + response, values and gradients (tested), at 1/G of the
    prefix cost. Differentiable: the student's update backpropagates through the repeated cache
    into the single prefix pass; the teacher calls it under no_grad.
    """
    if len(responses) != len(prefixes) * group_size:
        raise ValueError(
            f"{len(responses)} responses do not make {len(prefixes)} groups of {group_size}"
        )
    device = next(model.parameters()).device
    decoder = _decoder(model)
    b = len(prefixes)
    # Right padding: a padded query still sees its row's real tokens, so no attention row is
    # fully masked (fully masked rows give NaN in fused bf16 kernels, and NaN reaches real rows
    # through 0 * NaN in the value product).
    pids, pmask = right_pad(prefixes, pad_id)
    plen = pmask.sum(-1)
    out = decoder(
        input_ids=pids.to(device),
        attention_mask=pmask.to(device),
        use_cache=True,
    )
    last = out.last_hidden_state[torch.arange(b, device=device), (plen - 1).to(device)]
    first = last.repeat_interleave(group_size, dim=0)  # predicts response token 0
    cache = out.cache if _CACHE_KW == "cache" else out.past_key_values
    cache.batch_repeat_interleave(group_size)

    rest = [r[:-1] for r in responses]
    rwidth = max((len(r) for r in rest), default=0)
    hidden = None
    if rwidth > 0:
        rids, rmask = right_pad(rest, pad_id, rwidth)
        rpos = plen.repeat_interleave(group_size)[:, None] + torch.arange(rwidth)[None, :]
        full_mask = torch.cat([pmask.repeat_interleave(group_size, dim=0), rmask], dim=1)
        hidden = decoder(
            input_ids=rids.to(device),
            attention_mask=full_mask.to(device),
            position_ids=rpos.to(device),
            use_cache=True,
            **{_CACHE_KW: cache},
        ).last_hidden_state
    return gather_response_hidden(first, hidden, responses)
