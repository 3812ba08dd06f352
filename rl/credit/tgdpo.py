"""TGDPO token weights (arXiv 2506.14574; official ``tgdpo/trainer.py::dpo_loss``; specs/dpo_methods.md §4).

A guidance model pi_hat (any DPO/SimPO-trained policy) gives every response token an implicit reward
r_hat_t = beta_g (log pi_hat(y_t|s_t) - log pi_ref(y_t|s_t)) (arXiv 2404.12358), and the DPO log-ratio of
that token is weighted by

    chosen rows [0:B]:    f_w = 1 + alpha * r_hat_t
    rejected rows [B:2B]: f_l = 1 - alpha * r_hat_t

The official code uses the run's beta and the run's reference as beta_g and pi_ref (spec Q5), with no clamp:
a weight goes negative once |alpha beta_g (log pi_hat - log pi_ref)| > 1. ``clamp=True`` sets such weights
to 0 (a deviation, spec §6.8); the number of negative weights is returned either way so it can be logged.
Weights are constants (no grad) and 0 on padding.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def tgdpo_weights(
    guidance_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    alpha: float,
    clamp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights ``[2B, T]``, count of negative weights on masked tokens, before any clamp)."""
    m = mask.to(ref_logp.dtype)
    gap = torch.where(m > 0, guidance_logp.to(m.dtype) - ref_logp, torch.zeros_like(m))  # padding may be junk
    alpha_r = alpha * beta * gap
    b = m.shape[0] // 2
    sign = torch.ones(m.shape[0], 1, dtype=m.dtype, device=m.device)
    sign[b:] = -1.0
    w = (1.0 + sign * alpha_r) * m
    negative = (w < 0) & (m > 0)
    if clamp:
        w = w.clamp_min(0.0)
    return w, negative.sum()
