"""Reducing a per-token loss matrix ``[N, T]`` to the scalar that is back-propagated.

How tokens are averaged changes the objective (long responses weigh more under
token-mean, equal per response under seq-mean), so the mode is a config choice.
Every mode is a *sum* of per-row terms divided by a normaliser; passing the global
normaliser (``num_tokens`` / ``num_seqs`` / ``norm_len``) from the full batch makes
the losses of micro-batches or data-parallel shards add up exactly to the full-batch
loss, which is what gradient accumulation needs.
"""

from __future__ import annotations

import torch

AGG_MODES: tuple[str, ...] = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum-norm",
)

Normaliser = int | float | torch.Tensor


def _check_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if x.shape != mask.shape:
        raise ValueError(
            f"values and mask must have the same shape, got {tuple(x.shape)} and {tuple(mask.shape)}"
        )
    return mask.bool()


def _check_positive(name: str, value: Normaliser) -> None:
    if not isinstance(value, torch.Tensor) and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is nonzero.

    Uses ``where`` rather than multiplication so that garbage (inf/NaN) in padded
    positions can neither leak into the value nor into the gradient.
    """
    m = _check_mask(x, mask)
    kept = torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is nonzero; 0 when there are none.

    Returning 0 for an empty mask (instead of NaN) keeps metrics and losses finite
    for micro-batches that happen to contain only padding.
    """
    m = _check_mask(x, mask)
    count = m.sum().clamp(min=1).to(x.dtype)
    return masked_sum(x, m) / count


def aggregate_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    agg: str = "token-mean",
    num_tokens: Normaliser | None = None,
    num_seqs: Normaliser | None = None,
    norm_len: Normaliser | None = None,
) -> torch.Tensor:
    """Reduce a ``[N, T]`` per-token loss to a scalar according to ``agg``.

    Modes:

    * ``"token-mean"``: sum over masked tokens / ``num_tokens``
      (default: number of masked tokens here; 0 if there are none).
    * ``"seq-mean-token-mean"``: each row's mean over its masked tokens (a row with
      no tokens contributes 0), summed over rows / ``num_seqs`` (default: ``N``).
    * ``"seq-mean-token-sum-norm"`` (Dr. GRPO): each row's masked sum / ``norm_len``
      (default: ``T`` = ``mask.shape[1]``), summed over rows / ``num_seqs``
      (default: ``N``). A constant ``norm_len`` removes the length bias of per-row means.

    To split one batch into pieces whose losses sum to the full-batch loss, pass the
    full batch's masked-token count as ``num_tokens``, its row count as ``num_seqs``
    and its padded length as ``norm_len`` to every piece.
    """
    if loss_mat.dim() != 2:
        raise ValueError(f"loss_mat must be 2-D [N, T], got shape {tuple(loss_mat.shape)}")
    m = _check_mask(loss_mat, mask)
    if agg == "token-mean":
        if num_tokens is None:
            num_tokens = m.sum().clamp(min=1).to(loss_mat.dtype)
        _check_positive("num_tokens", num_tokens)
        return masked_sum(loss_mat, m) / num_tokens
    if agg == "seq-mean-token-mean":
        if num_seqs is None:
            num_seqs = max(loss_mat.shape[0], 1)
        _check_positive("num_seqs", num_seqs)
        seq_count = m.sum(dim=1).clamp(min=1).to(loss_mat.dtype)
        seq_losses = masked_sum(loss_mat, m, dim=1) / seq_count
        return seq_losses.sum() / num_seqs
    if agg == "seq-mean-token-sum-norm":
        if num_seqs is None:
            num_seqs = max(loss_mat.shape[0], 1)
        if norm_len is None:
            norm_len = max(loss_mat.shape[1], 1)
        _check_positive("num_seqs", num_seqs)
        _check_positive("norm_len", norm_len)
        seq_losses = masked_sum(loss_mat, m, dim=1) / norm_len
        return seq_losses.sum() / num_seqs
    raise ValueError(f"unknown loss aggregation mode {agg!r}; valid: {list(AGG_MODES)}")
