"""KL(pi_theta || pi_ref) per token, estimated from the sampled tokens (Schulman, "Approximating KL").

With d_t = ref_logp_t - logp_t (log pi_ref / pi_theta at the sampled token):

* ``k1``: -d_t = logp_t - ref_logp_t                 (unbiased, high variance, can be negative)
* ``k3``: exp(d_t) - d_t - 1                         (unbiased, >= 0, low variance; the
          DeepSeekMath estimator, arXiv 2402.03300 eq. 4; verl ``low_var_kl``)

Two ways to use it (``algorithm.kl.mode``, coefficient ``algorithm.kl.coef`` = beta):

* ``loss`` (GRPO, recommended): ``kl_loss`` gives beta * k(logp, ref_logp) per token, added to the
  per-token policy loss before aggregation; gradients flow through ``logp``.
* ``reward`` (PPO-RLHF style): ``kl_penalty_reward`` subtracts beta * sum_t k(old_logp, ref_logp)
  from each completion's reward before advantages; use the rollout policy's ``old_logp`` (no grad).

Numerical safety: for k3, d is clamped to [-20, 20] before ``exp`` and the estimate is clamped at
10 (verl's ``low_var_kl`` bounds). The clamps only act where pi_theta and pi_ref disagree by
e^10 or more, where the penalty gradient would otherwise explode.
"""

from __future__ import annotations

import torch

KL_LOG_CLAMP = 20.0
KL_MAX = 10.0
ESTIMATORS = ("k1", "k3")


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token KL estimate (same shape as ``logp``); see module doc. ``ref_logp`` is detached."""
    if logp.shape != ref_logp.shape:
        raise ValueError(f"kl_estimate: logp {tuple(logp.shape)} and ref_logp {tuple(ref_logp.shape)} differ")
    ref = ref_logp.detach()
    if estimator == "k1":
        return logp - ref
    if estimator == "k3":
        d = (ref - logp).clamp(-KL_LOG_CLAMP, KL_LOG_CLAMP)
        return (torch.exp(d) - d - 1.0).clamp(max=KL_MAX)
    raise ValueError(f"algorithm.kl.estimator={estimator!r} is not one of {list(ESTIMATORS)}")


def kl_loss(
    logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, coef: float, estimator: str = "k3"
) -> torch.Tensor:
    """beta * KL per token, 0 where ``mask`` is 0: add it to the per-token policy loss."""
    return coef * kl_estimate(logp, ref_logp, estimator) * mask.to(logp.dtype)


def kl_penalty_reward(
    rewards: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rewards - beta * sum_t KL_t, per-row KL sum [N]), computed without gradient."""
    if rewards.dim() != 1 or rewards.shape[0] != old_logp.shape[0]:
        raise ValueError(
            f"kl_penalty_reward: rewards {tuple(rewards.shape)} must be [N] for logp {tuple(old_logp.shape)}"
        )
    with torch.no_grad():
        per_row = (kl_estimate(old_logp.detach(), ref_logp, estimator) * mask.to(old_logp.dtype)).sum(-1)
        return rewards - coef * per_row.to(rewards.dtype), per_row
