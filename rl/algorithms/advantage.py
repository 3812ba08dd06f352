"""Group-relative outcome advantage estimators: one scalar per completion, ``[N] -> [N]``.

Rows answering the same prompt share a ``group_id`` (any integers, in any order). Each
estimator compares a completion's reward with the other completions of its group:

* ``grpo``    (DeepSeekMath, arXiv 2402.03300):  A_i = (r_i - mean_g r) / (std_g r + eps)
* ``dr_grpo`` (Dr. GRPO, arXiv 2503.20783):      A_i = r_i - mean_g r   (never divides by std)
* ``rloo``    (REINFORCE Leave-One-Out, arXiv 2402.14740):
                                                 A_i = r_i - (1 / (n_g - 1)) sum_{j != i} r_j

Interpretations (specs/grpo_methods.md §0), each a recipe switch:

* ``algorithm.std_normalize`` (default True): grpo divides by the group std. False gives
  Dr. GRPO's numerator with grpo's name (TRL ``scale_rewards="none"``).
* ``algorithm.std_eps`` (default 1e-4, TRL; verl uses 1e-6): added to the std.
* The std is Bessel-corrected (unbiased, ``n - 1``), as in TRL's ``nanstd`` and verl's
  ``torch.std``.
* A group of size 1 has no baseline: its advantage is 0 (verl instead sets mean 0, std 1,
  which would pass the raw reward through; a lone sample carries no relative signal).
* A zero-variance group (all rewards equal) gets exactly 0, not a rounding residue
  ``(r - mean) / eps``, so such rows contribute nothing to the loss.

All estimators are vectorised over groups (``index_add`` / ``scatter_reduce``); no Python
loop over groups. Statistics are computed in float64 and cast back.
"""

from __future__ import annotations

import torch

from rl.algorithms.registry import register_advantage


def _check_inputs(name: str, rewards: torch.Tensor, group_id: torch.Tensor) -> None:
    if rewards.dim() != 1:
        raise ValueError(f"advantage {name!r}: rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if group_id.shape != rewards.shape:
        raise ValueError(
            f"advantage {name!r}: group_id shape {tuple(group_id.shape)} != rewards shape {tuple(rewards.shape)}"
        )
    if group_id.dtype.is_floating_point or group_id.dtype == torch.bool:
        raise ValueError(f"advantage {name!r}: group_id must be an integer tensor, got {group_id.dtype}")
    bad = ~torch.isfinite(rewards)
    if bad.any():
        idx = bad.nonzero(as_tuple=True)[0].tolist()
        raise ValueError(f"advantage {name!r}: rewards are not finite at rows {idx[:10]}")


class _GroupStats:
    """Per-row statistics of each row's group, float64."""

    def __init__(self, rewards: torch.Tensor, group_id: torch.Tensor) -> None:
        r = rewards.to(torch.float64)
        _, inv = torch.unique(group_id, return_inverse=True)  # arbitrary ids -> 0..G-1
        n_groups = int(inv.max()) + 1 if inv.numel() else 0
        zeros = torch.zeros(n_groups, dtype=torch.float64, device=r.device)
        count = zeros.index_add(0, inv, torch.ones_like(r))
        total = zeros.index_add(0, inv, r)
        mean = total / count
        sq_dev = zeros.index_add(0, inv, (r - mean[inv]) ** 2)
        # Bessel-corrected variance; groups of one get NaN here and are zeroed by `degenerate`.
        var = sq_dev / (count - 1)
        gmax = zeros.scatter_reduce(0, inv, r, reduce="amax", include_self=False)
        gmin = zeros.scatter_reduce(0, inv, r, reduce="amin", include_self=False)
        self.r = r
        self.count = count[inv]
        self.total = total[inv]
        self.mean = mean[inv]
        self.std = var.clamp_min(0).sqrt()[inv]
        # Size-1 and zero-variance groups have no relative signal: advantage exactly 0.
        self.degenerate = (count[inv] < 2) | (gmax[inv] == gmin[inv])

    def finish(self, adv: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        adv = torch.where(self.degenerate, torch.zeros_like(adv), adv)
        dtype = like.dtype if like.dtype.is_floating_point else torch.float32
        return adv.to(dtype)


@register_advantage("grpo")
def grpo_advantage(
    rewards: torch.Tensor, group_id: torch.Tensor, *, std_normalize: bool = True, std_eps: float = 1e-4
) -> torch.Tensor:
    """A_i = (r_i - mean_g r) / (std_g r + eps) (arXiv 2402.03300); std unbiased; see module doc."""
    _check_inputs("grpo", rewards, group_id)
    s = _GroupStats(rewards, group_id)
    adv = s.r - s.mean
    if std_normalize:
        adv = adv / (s.std.nan_to_num(0.0) + std_eps)
    return s.finish(adv, rewards)


@register_advantage("dr_grpo")
def dr_grpo_advantage(
    rewards: torch.Tensor, group_id: torch.Tensor, *, std_normalize: bool = True, std_eps: float = 1e-4
) -> torch.Tensor:
    """A_i = r_i - mean_g r (arXiv 2503.20783). ``std_normalize``/``std_eps`` are ignored on purpose:
    removing the std division is what Dr. GRPO is (TRL's ``loss_type="dr_grpo"`` gotcha)."""
    _check_inputs("dr_grpo", rewards, group_id)
    s = _GroupStats(rewards, group_id)
    return s.finish(s.r - s.mean, rewards)


@register_advantage("rloo")
def rloo_advantage(
    rewards: torch.Tensor, group_id: torch.Tensor, *, std_normalize: bool = True, std_eps: float = 1e-4
) -> torch.Tensor:
    """A_i = r_i - mean_{j != i} r_j (arXiv 2402.14740); equals n/(n-1) * (r_i - mean_g r).
    ``std_normalize``/``std_eps`` are ignored (RLOO uses no std scaling)."""
    _check_inputs("rloo", rewards, group_id)
    s = _GroupStats(rewards, group_id)
    # Size-1 groups divide by zero here; `finish` replaces them with 0.
    loo_mean = (s.total - s.r) / (s.count - 1).clamp_min(1)
    return s.finish(s.r - loo_mean, rewards)
