"""Reduce a per-token loss ``[N, T]`` to the scalar a micro-batch backpropagates.

Modes (specs/grpo_methods.md §1; names as in ``algorithm.aggregation``), with l the per-token
loss and m the loss mask over the WHOLE mini-batch (all grad-accumulation micro-batches, all ranks):

* ``token_mean`` (DAPO, arXiv 2503.14476; TRL ``dapo``, verl ``token-mean``):
      L = sum_{i,t} l m / sum_{i,t} m
* ``seq_mean_token_mean`` (GRPO, arXiv 2402.03300; GSPO):
      L = (1/S) sum_{i in rows} ( sum_t l m / sum_t m )
* ``seq_mean_token_sum_norm`` (Dr. GRPO, arXiv 2503.20783):
      L = sum_{i,t} l m / (S * max_len),   max_len = rollout.max_tokens (a constant, not the padding)

S counts rows with at least one loss token. Rows whose mask is all zero (padding rows, rows a
credit module dropped, overlong-filtered rows) are excluded from S in both sequence modes: they
carry no loss, and counting them would shrink every other row's weight by how many rows a filter
removed. (TRL's ``dr_grpo`` divides by all local rows; we count kept rows for both modes alike.)

Exactness across micro-batches and ranks (anchors.md §1.4, OpenRLHF ``aggregate_loss``):
each call returns this micro-batch's *share* of the mini-batch loss, dividing by the global
counts ``global_tokens`` / ``global_seqs`` (from ``loss_counts`` summed over every micro-batch of
the mini-batch and all-reduced over ranks). Summing the shares over all micro-batches and ranks
gives L exactly. DeepSpeed's ``engine.backward`` scales the loss by 1/gas and the gradient
all-reduce averages over ranks, so the caller backpropagates
``share * loss_scale_for_engine(gas, world_size)``; the optimizer then sees grad L exactly.

Without global counts (None) each mode falls back to the local counts of this call, i.e. the
plain mean of this micro-batch (right for a single micro-batch on one rank).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def loss_counts(mask: torch.Tensor) -> tuple[float, float]:
    """(loss tokens, rows with a loss token) of one micro-batch; sum these over the mini-batch."""
    m = mask.float()
    return float(m.sum()), float((m.sum(-1) > 0).sum())


def loss_scale_for_engine(gradient_accumulation_steps: int, world_size: int) -> float:
    """Factor undoing DeepSpeed's 1/gas loss scaling and its mean over data-parallel ranks."""
    if gradient_accumulation_steps < 1 or world_size < 1:
        raise ValueError(
            f"loss_scale_for_engine: gradient_accumulation_steps={gradient_accumulation_steps} and "
            f"world_size={world_size} must both be >= 1"
        )
    return float(gradient_accumulation_steps * world_size)


def _denominator(given: float | None, local: torch.Tensor) -> torch.Tensor:
    if given is None:
        return local.clamp_min(1)
    if given <= 0:
        # A mini-batch with no loss tokens: every share is 0; keep the graph alive without NaN.
        return local.new_tensor(1.0)
    return local.new_tensor(float(given))


def token_mean(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """sum l m / global_tokens (DAPO token mean)."""
    m = mask.to(per_token_loss.dtype)
    return (per_token_loss * m).sum() / _denominator(global_tokens, m.sum())


def seq_mean_token_mean(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """sum over kept rows of the row's token mean / global_seqs (GRPO, GSPO)."""
    m = mask.to(per_token_loss.dtype)
    row_tokens = m.sum(-1)
    row_mean = (per_token_loss * m).sum(-1) / row_tokens.clamp_min(1)  # empty rows: 0
    rows = (row_tokens > 0).to(m.dtype).sum()
    return row_mean.sum() / _denominator(global_seqs, rows)


def seq_mean_token_sum_norm(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """sum l m / (global_seqs * max_len) (Dr. GRPO)."""
    if max_len is None or max_len <= 0:
        raise ValueError(
            "aggregation 'seq_mean_token_sum_norm' needs max_len = rollout.max_tokens (a constant > 0), "
            f"got {max_len!r}"
        )
    m = mask.to(per_token_loss.dtype)
    rows = (m.sum(-1) > 0).to(m.dtype).sum()
    return (per_token_loss * m).sum() / (_denominator(global_seqs, rows) * float(max_len))


AGGREGATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


def aggregate(
    per_token_loss: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    *,
    global_tokens: float | None = None,
    global_seqs: float | None = None,
    max_len: int | None = None,
) -> torch.Tensor:
    """This micro-batch's share of the mini-batch loss under ``mode`` (see module doc)."""
    if mode not in AGGREGATIONS:
        raise KeyError(f"algorithm.aggregation={mode!r} is not one of {sorted(AGGREGATIONS)}")
    if per_token_loss.shape != mask.shape or per_token_loss.dim() != 2:
        raise ValueError(
            f"aggregate: per_token_loss {tuple(per_token_loss.shape)} and mask {tuple(mask.shape)} "
            "must be the same [N, T] shape"
        )
    return AGGREGATIONS[mode](
        per_token_loss, mask, global_tokens=global_tokens, global_seqs=global_seqs, max_len=max_len
    )
