"""RMT: Reinforcement Mid-Training (arXiv 2509.24375). Spec §5 and Open question 7.

Pure functions; rl/midtrain.py wires them into the loop (``algorithm.rmt.enable``). RMT is not a credit module. Its RL "questions"
are positions of pre-training text: the curriculum picks *which prefixes become prompts*
(before rollout), and its NTP loss runs on the document, not on the completions the
credit chain sees. So nothing is registered with ``@register_credit``.

* Dynamic token budget: B_t = max(B_min, floor(B_0 * gamma^(t / T^k))), k = ``budget_k``
  (k = 1 in the paper note; the themoonlight review writes T^k - a source discrepancy).
* Curriculum sampling: token positions are bucketed by entropy into easy / medium / hard
  tiers; p_t = p_t1 before t_1, p_t2 after t_2, linear in between; draw a tier from p_t,
  then a position uniformly from that tier (without replacement), forming the RL set C.
* Dual loss: L = L_RL(GRPO on C) + lambda * L_NTP, L_NTP = -sum_pos m_pos log p(tau_pos | tau_<pos),
  m_pos = 1[pos not in C] (teacher-forced cross-entropy on the other positions).

Interpretations (config ``algorithm.rmt``; not published, spec Q7 recommendations):
* ``tier_bounds=None``: tiers are the batch's entropy terciles; two numbers give fixed thresholds.
* ``p_t1=(0.6, 0.3, 0.1)``, ``p_t2=(0.1, 0.3, 0.6)`` for (easy, medium, hard); ``t1=0.3``, ``t2=0.7``.
* ``entropy_model=reference``: which model's entropy ranks the tokens (use
  rl.credit.entropy.chunked_entropy on its hidden states).
* ``ntp_reduction=mean``: L_NTP averaged over the other tokens (usual CE); ``sum`` is the note's literal sum.
* w = 0.2, r_max = 1: RMT's reward (1-w) r_pos + w r_len is two reward functions in the recipe,
  ``next_token_match`` (weight 0.8) and ``length_budget`` (weight 0.2, kwarg r_max); the loop passes
  each prompt's B_t to them as the ``budget`` column (recipes/rmt.yaml).
"""

from __future__ import annotations

import math

import torch

from rewards.builtins.length_budget import budget_at
from rl.credit.config import RMTConfig

EASY, MEDIUM, HARD = 0, 1, 2


def budget(step: int, total_steps: int, cfg: RMTConfig) -> int:
    """Think-token budget B_t at optimizer step ``step`` of ``total_steps`` (the reward's formula, with T^k)."""
    if total_steps <= 0:
        raise ValueError(f"rmt.budget: total_steps={total_steps} must be > 0")
    return budget_at(step, total_steps ** cfg.budget_k, cfg.budget_init, cfg.budget_min, cfg.gamma)


def tier_probs(progress: float, cfg: RMTConfig) -> torch.Tensor:
    """(easy, medium, hard) probabilities p_t at training progress in [0, 1]."""
    p1 = torch.tensor(list(cfg.p_t1), dtype=torch.float64)
    p2 = torch.tensor(list(cfg.p_t2), dtype=torch.float64)
    if progress < cfg.t1:
        return p1
    if progress >= cfg.t2:
        return p2
    s = (progress - cfg.t1) / (cfg.t2 - cfg.t1)
    return (1.0 - s) * p1 + s * p2


def entropy_tiers(entropy: torch.Tensor, mask: torch.Tensor, cfg: RMTConfig) -> torch.Tensor:
    """Tier index (0 easy, 1 medium, 2 hard) per position; -1 where ``mask`` is 0.

    Terciles: with the n valid entropies sorted, a = the ceil(n/3)-th and b = the ceil(2n/3)-th
    value; easy is H <= a, medium a < H <= b, hard H > b (equal entropies share a tier).
    """
    valid = mask > 0
    if cfg.tier_bounds is not None:
        a, b = (torch.tensor(float(x), device=entropy.device) for x in cfg.tier_bounds)
    else:
        vals = entropy[valid].float().sort().values
        n = vals.numel()
        if n == 0:
            return torch.full(entropy.shape, -1, dtype=torch.long, device=entropy.device)
        a, b = vals[math.ceil(n / 3) - 1], vals[math.ceil(2 * n / 3) - 1]
    tiers = (entropy > a).long() + (entropy > b).long()
    return torch.where(valid, tiers, torch.full_like(tiers, -1))


def sample_positions(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    n: int,
    progress: float,
    generator: torch.Generator | None,
    cfg: RMTConfig,
) -> torch.Tensor:
    """The curriculum set C: ``n`` distinct (row, position) pairs [n, 2] of valid positions.

    Each draw picks a tier from p_t (tiers already used up get probability 0, the rest
    renormalised), then a position uniformly from what is left of that tier. With fewer
    than ``n`` valid positions, all of them are returned.
    """
    tiers = entropy_tiers(entropy, mask, cfg)
    pools = []
    for d in (EASY, MEDIUM, HARD):
        idx = (tiers == d).nonzero()
        pools.append(idx[torch.randperm(idx.shape[0], generator=generator)])  # uniform order within the tier
    taken = [0, 0, 0]
    probs = tier_probs(progress, cfg)
    chosen = []
    for _ in range(n):
        left = torch.tensor([pools[d].shape[0] - taken[d] for d in range(3)], dtype=torch.float64)
        p = probs * (left > 0)
        if p.sum() <= 0:
            p = (left > 0).double()  # the scheduled tiers are empty: fall back to any tier left
        if p.sum() <= 0:
            break
        d = int(torch.multinomial(p / p.sum(), 1, generator=generator))
        chosen.append(pools[d][taken[d]])
        taken[d] += 1
    if not chosen:
        return torch.zeros(0, 2, dtype=torch.long, device=entropy.device)
    return torch.stack(chosen)


def other_positions_mask(mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """m_pos = 1[pos not in C] on valid positions: where the NTP loss applies. [N, T] float."""
    out = (mask > 0).float()
    if positions.numel():
        out[positions[:, 0], positions[:, 1]] = 0.0
    return out


def ntp_loss(logp: torch.Tensor, mask_other: torch.Tensor, reduction: str = "mean",
             normaliser: float | None = None) -> torch.Tensor:
    """L_NTP = -sum m_pos log p(tau_pos | tau_<pos) ('sum') or that sum / the NTP token count ('mean').

    ``normaliser``: the count to divide by when this call sees only part of the tokens (one
    micro-batch of a step spread over micro-batches and ranks); None = this call's own count.
    """
    total = -(logp * mask_other).sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        count = mask_other.sum().clamp(min=1.0) if normaliser is None else max(float(normaliser), 1.0)
        return total / count
    raise ValueError(f"rmt.ntp_loss: reduction={reduction!r} is not one of ['mean', 'sum']")
