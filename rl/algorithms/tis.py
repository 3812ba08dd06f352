"""Truncated importance sampling (TIS) for the sampler/trainer log-prob mismatch.

vLLM samples from pi_sampler, which differs numerically from the trainer's pi_old even with
identical weights (kernels, dtypes, batch invariance; anchors.md §6 item 6, verl PR #2953).
The PPO ratio is taken against pi_old, so each token is re-weighted by

    w_t = min( pi_old(y_t) / pi_sampler(y_t), C ) = min( exp(old_logp_t - sampler_logp_t), C ),

detached, multiplying the per-token loss (Yao et al., "Your efficient RL framework secretly brings
you off-policy RL training", 2025; ``algorithm.tis.cap`` = C, default 2). The truncation keeps
the variance bounded; tokens where the sampler was *more* confident get w < 1 and are not raised.

``mismatch_metrics`` logs how far apart the two are over loss tokens:
``mismatch_abs_mean`` / ``mismatch_abs_max`` = |old_logp - sampler_logp|, and ``mismatch_kl``,
KL(sampler || trainer) by the k3 estimator with r = pi_old / pi_sampler: (r - 1) - log r, which is
>= 0 and exact in expectation over sampler tokens. Log these even with TIS off.
"""

from __future__ import annotations

import math

import torch


def _log_ratio(old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if old_logp.shape != sampler_logp.shape or old_logp.shape != mask.shape:
        raise ValueError(
            f"TIS: old_logp {tuple(old_logp.shape)}, sampler_logp {tuple(sampler_logp.shape)} and "
            f"mask {tuple(mask.shape)} must have the same [N, T] shape"
        )
    # Padding positions may hold anything (vLLM gives no logprob there): zero them first.
    return torch.where(mask > 0, old_logp.detach() - sampler_logp.detach(), torch.zeros_like(old_logp))


def tis_weights(
    old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float
) -> torch.Tensor:
    """[N, T] detached w_t = min(exp(old - sampler), cap) on loss tokens, 0 on padding."""
    if cap <= 0:
        raise ValueError(f"algorithm.tis.cap must be > 0, got {cap}")
    with torch.no_grad():
        lr = _log_ratio(old_logp, sampler_logp, mask).clamp(max=math.log(cap))  # no overflow
        return torch.exp(lr) * (mask > 0).to(old_logp.dtype)


def mismatch_metrics(
    old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float | None = None
) -> dict[str, torch.Tensor]:
    """Scalar metrics of the sampler/trainer gap over loss tokens (0 when the mask is empty)."""
    with torch.no_grad():
        lr = _log_ratio(old_logp, sampler_logp, mask).float()
        m = (mask > 0).float()
        n = m.sum().clamp_min(1)
        diff = lr.abs() * m
        # k3 with d = old - sampler; clamped so one -inf sampler logprob cannot make it inf.
        d = lr.clamp(-20.0, 20.0)
        out = {
            "mismatch_abs_mean": diff.sum() / n,
            "mismatch_abs_max": diff.max() if diff.numel() else diff.new_zeros(()),
            "mismatch_kl": ((torch.exp(d) - 1.0 - d) * m).sum() / n,
        }
        if cap is not None:
            out["tis_cap_frac"] = ((lr > math.log(cap)).float() * m).sum() / n
            out["tis_weight_mean"] = (tis_weights(old_logp, sampler_logp, mask, cap).float()).sum() / n
        return out
