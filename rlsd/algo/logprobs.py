"""Log-probabilities of sampled tokens without materialising ``tokens × vocabulary``.

A policy update needs ``log π(y_t)`` for every response token, but the full logits
tensor (e.g. 8k tokens × 150k vocabulary × 4 bytes ≈ 5 GB) and its softmax saved for
backward dominate memory. :func:`token_logprobs_from_hidden` goes from the last hidden
states straight to the sampled-token log-probs, one chunk of tokens at a time, and
recomputes each chunk's logits in backward instead of saving them.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["token_logprobs_from_hidden", "token_logprobs_from_logits"]


def _check_targets(targets: torch.Tensor, vocab: int) -> None:
    """Fail loudly on out-of-range targets (e.g. -100 ignore labels).

    On a GPU the gather would otherwise die with an opaque device-side assert.
    """
    if targets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"targets must be an integer (long) tensor, got {targets.dtype}")
    if targets.numel() == 0:
        return
    lo, hi = int(targets.min()), int(targets.max())
    if lo < 0 or hi >= vocab:
        raise ValueError(
            f"targets must lie in [0, {vocab}), got values in [{lo}, {hi}]; "
            "replace padding labels (e.g. -100) with any valid id and mask them instead"
        )


def _chunk_logits(
    hidden_chunk: torch.Tensor,
    weight32: torch.Tensor,
    bias32: torch.Tensor | None,
    temperature: float,
) -> torch.Tensor:
    """``(h @ W.T + b) / temperature`` in float32 for one chunk of rows."""
    logits = hidden_chunk.to(torch.float32) @ weight32.T
    if bias32 is not None:
        logits += bias32
    if temperature != 1.0:
        logits /= temperature
    return logits


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """Fused ``linear → log_softmax → gather`` with chunked recomputation in backward.

    Saved for backward: hidden, weight, bias, targets and the per-row logsumexp, plus the
    softmax when it fits ``keep_probs_bytes``. Without it, peak extra memory is one
    ``chunk_size × V`` float32 block (plus a float32 copy of the weight when it is stored in lower
    precision, and the ``V × H`` weight gradient).
    """

    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        targets: torch.Tensor,
        temperature: float,
        chunk_size: int,
        compute_entropy: bool,
        keep_probs_bytes: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows = hidden.shape[0]
        vocab = weight.shape[0]
        device = hidden.device
        weight32 = weight.to(torch.float32)
        bias32 = None if bias is None else bias.to(torch.float32)
        logprobs = torch.empty(rows, dtype=torch.float32, device=device)
        lse = torch.empty(rows, dtype=torch.float32, device=device)
        entropy = torch.empty(rows if compute_entropy else 0, dtype=torch.float32, device=device)
        # Keep the softmax for backward when it is small enough: backward then skips the
        # recomputation of the logits (a third vocabulary-sized matmul) and two passes over them.
        needs_grad = any(ctx.needs_input_grad[:3])
        probs = None
        if needs_grad and rows * vocab * 4 <= keep_probs_bytes:
            probs = torch.empty(rows, vocab, dtype=torch.float32, device=device)
        # Autocast would silently run the matmul in bf16; this path promises float32.
        with torch.autocast(device_type=device.type, enabled=False):
            for start in range(0, rows, chunk_size):
                end = min(start + chunk_size, rows)
                logits = _chunk_logits(hidden[start:end], weight32, bias32, temperature)
                target_logit = logits.gather(1, targets[start:end, None]).squeeze(1)
                if probs is not None:
                    p = probs[start:end]
                    peak = logits.amax(dim=-1, keepdim=True)
                    torch.sub(logits, peak, out=p).exp_()
                    total = p.sum(dim=-1, keepdim=True)
                    p.div_(total)
                    chunk_lse = (peak + total.log()).squeeze(1)
                else:
                    chunk_lse = torch.logsumexp(logits, dim=-1)
                    if compute_entropy:
                        p = torch.exp(logits - chunk_lse[:, None])
                lse[start:end] = chunk_lse
                logprobs[start:end] = target_logit - chunk_lse
                if compute_entropy:
                    # sum_v p_v * z_v as a batched dot product: no [rows, V] temporary
                    entropy[start:end] = chunk_lse - torch.einsum("ij,ij->i", p, logits)
        ctx.save_for_backward(hidden, weight, bias, targets, lse)
        ctx.probs = probs
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, ...]:
        hidden, weight, bias, targets, lse = ctx.saved_tensors
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        nones = (None,) * 5
        probs, ctx.probs = ctx.probs, None  # used once; a second backward recomputes
        if grad_logprobs is None or not (need_hidden or need_weight or need_bias):
            return None, None, None, *nones
        temperature: float = ctx.temperature
        chunk_size: int = ctx.chunk_size
        rows = hidden.shape[0]
        weight32 = weight.to(torch.float32)
        bias32 = None if bias is None else bias.to(torch.float32)
        grad_scaled = grad_logprobs.to(torch.float32) / temperature

        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight32 = None  # the first chunk's product creates it: no V x H zero fill
        grad_bias32 = torch.zeros_like(bias32) if need_bias and bias32 is not None else None
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            for start in range(0, rows, chunk_size):
                end = min(start + chunk_size, rows)
                h32 = hidden[start:end].to(torch.float32)
                g = grad_scaled[start:end]
                # d logprob / d logits_raw = (onehot(y) - softmax) / temperature; build
                # -g·softmax in place, then add g at the targets.
                if probs is not None:
                    dlogits = probs[start:end].mul_(-g[:, None])
                else:
                    logits = _chunk_logits(h32, weight32, bias32, temperature)
                    dlogits = logits.sub_(lse[start:end, None]).exp_().mul_(-g[:, None])
                dlogits.scatter_add_(1, targets[start:end, None], g[:, None])
                if grad_hidden is not None:
                    grad_hidden[start:end] = (dlogits @ weight32).to(hidden.dtype)
                if need_weight:
                    if grad_weight32 is None:
                        grad_weight32 = dlogits.T @ h32
                    else:
                        grad_weight32.addmm_(dlogits.T, h32)
                if grad_bias32 is not None:
                    grad_bias32 += dlogits.sum(dim=0)
        if need_weight and grad_weight32 is None:  # no rows
            grad_weight32 = torch.zeros_like(weight32)
        grad_weight = None if grad_weight32 is None else grad_weight32.to(weight.dtype)
        grad_bias = None if grad_bias32 is None else grad_bias32.to(bias.dtype)
        return grad_hidden, grad_weight, grad_bias, *nones


#: keep the softmax for backward up to this size (one micro-batch of ~2,700 tokens of a 49k vocab)
KEEP_PROBS_BYTES = 512 * 2**20


def token_logprobs_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int = 1024,
    return_entropy: bool = True,
    keep_probs_bytes: int = KEEP_PROBS_BYTES,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of ``targets`` under ``softmax((hidden @ W.T + b) / T)``.

    ``hidden`` is ``[M, H]`` (any leading shape is flattened and restored), ``weight``
    the LM head ``[V, H]`` (may be tied to the input embedding; its gradient is simply
    returned and autograd accumulates it), ``targets`` the sampled ids ``[M]``. All
    maths in float32; outputs are float32 with the leading shape of ``targets``.

    Memory beyond the inputs is one ``chunk_size × V`` block in forward and backward;
    no ``M × V`` tensor is saved for backward. Works whether or not ``hidden`` /
    ``weight`` / ``bias`` require grad (the teacher path needs none).

    Entropy ``= logsumexp - Σ softmax·logits`` is a metric: it is returned detached
    (``None`` when ``return_entropy=False``, which skips its cost). It reuses the softmax the
    gradient needs, so it costs one batched dot product, not another pass over the vocabulary.

    When gradients are needed and ``tokens x V`` float32 fits in ``keep_probs_bytes``, the softmax
    is kept for backward instead of recomputed (0 = always recompute; the memory bound above).
    """
    if temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"expected hidden [..., H] and weight [V, H], got {tuple(hidden.shape)} "
            f"and {tuple(weight.shape)}"
        )
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must equal hidden's leading shape "
            f"{tuple(hidden.shape[:-1])}"
        )
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"bias must be [V]={weight.shape[0]}, got {tuple(bias.shape)}")
    _check_targets(targets, weight.shape[0])
    out_shape = targets.shape
    flat_hidden = hidden.reshape(-1, hidden.shape[-1])
    flat_targets = targets.reshape(-1).to(torch.int64)
    logprobs, entropy = _ChunkedTokenLogprobs.apply(
        flat_hidden,
        weight,
        bias,
        flat_targets,
        float(temperature),
        int(chunk_size),
        return_entropy,
        int(keep_probs_bytes),
    )
    return logprobs.view(out_shape), (entropy.view(out_shape) if return_entropy else None)


def token_logprobs_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """``log softmax(logits / T)[target]`` for logits ``[..., V]`` and targets ``[...]``.

    Computed as ``logit[target] - logsumexp(logits)`` chunk by chunk over the flattened
    leading dimension, so no full ``log_softmax`` copy of the logits is made. Output is
    float32 with the shape of ``targets``. For small inputs and tests; prefer
    :func:`token_logprobs_from_hidden` for real batches.
    """
    if temperature <= 0.0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"targets shape {tuple(targets.shape)} must equal logits' leading shape "
            f"{tuple(logits.shape[:-1])}"
        )
    _check_targets(targets, logits.shape[-1])
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_targets = targets.reshape(-1, 1).to(torch.int64)
    pieces = []
    for start in range(0, flat_logits.shape[0], chunk_size):
        chunk = flat_logits[start : start + chunk_size].to(torch.float32)
        if temperature != 1.0:
            chunk = chunk / temperature
        target_logit = chunk.gather(1, flat_targets[start : start + chunk_size]).squeeze(1)
        pieces.append(target_logit - torch.logsumexp(chunk, dim=-1))
    if not pieces:
        return torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    return torch.cat(pieces).view(targets.shape)
