"""cDPO token weights (arXiv 2411.19943; official ``train_cdpo.py::CDPOTrainer.dpo_loss``; spec §3.2).

From the contrastive-estimation score p_CE,t in [0, 1] of each response token (rl/credit/critical.py;
low = critical):

    chosen rows [0:B]:    1 (``only_neg=True``, the official default, spec Q2)  |  p_CE,t (ablation)
    rejected rows [B:2B]: 1 - p_CE,t

so a rejected token the contrastive pair finds fine (p_CE ~ 1) is barely pushed down and a critical one
(p_CE ~ 0) gets the full DPO push. The official code gives EOS weight 1 on both sides (its score lists end
before the EOS TRL appends; it pads them with [1] / [0]); pass ``eos_mask`` (1 at each row's EOS, none on a
truncated row) to do the same, or None to weight EOS by its own p_CE. Weights are constants, 0 on padding.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def cdpo_weights(
    ce_prob: torch.Tensor,
    mask: torch.Tensor,
    only_neg: bool = True,
    eos_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token weights ``[2B, T]``; ``ce_prob`` must lie in [0, 1] on masked tokens (padding is ignored)."""
    m = mask.to(ce_prob.dtype)
    p = torch.where(m > 0, ce_prob, torch.zeros_like(ce_prob))
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or bool((p > 1).any()):
        raise ValueError("cdpo_weights: ce_prob must be a probability in [0, 1] on every response token "
                         f"(got range [{float(p.min())}, {float(p.max())}]); is it aligned to the response "
                         "tokens?")
    b = m.shape[0] // 2
    w = torch.empty_like(p)
    w[:b] = 1.0 if only_neg else p[:b]
    w[b:] = 1.0 - p[b:]
    if eos_mask is not None:
        w = torch.where(eos_mask.to(torch.bool), torch.ones_like(w), w)
    return w * m
