"""One step's old-policy pass, advantages and credit chain: what happens between scoring and the update.

Shared by the controller and benchmarks/credit_overhead.py, so the benchmark times what a run does.

Order. When the advantages do not depend on the old-policy pass (no KL-as-reward penalty), they
are computed first and the chain's leading row selection (D3S's sample level, which reads only
advantages) runs *before* that pass. If no module in the chain reads statistics of rows out of
the loss (``CreditModule.reads_dropped_rows``; THR and TW use whole groups), the pass covers only
the rows still in the loss: early in D3S's schedule a quarter of the batch or less. Otherwise
the pass covers every row (then the KL penalty, then advantages, when KL is a reward).
Either way the chain then runs in order on the same Experience.
"""

from __future__ import annotations

import torch

from rl.algorithms.kl import kl_penalty_reward
from rl.algorithms.registry import ADVANTAGES
from rl.algorithms.tis import mismatch_metrics
from rl.batch import forward_inputs
from rl.credit.base import CreditContext, PolicySnapshot
from rl.credit.chain import chain_needs, run_chain, run_row_phase, stats_rows_can_shrink
from rl.experience import Experience


def needs_old_pass(cfg, needs: set[str]) -> bool:
    """A separate no-grad pass is needed unless one on-policy update needs nothing but log-probs."""
    a = cfg.algorithm
    return a.epochs > 1 or a.mini_batches > 1 or bool(needs) or a.kl.coef > 0


def compute_advantages(exp: Experience, cfg) -> None:
    a = cfg.algorithm
    adv = ADVANTAGES[a.advantage](exp.rewards, exp.group_id, std_normalize=a.std_normalize, std_eps=a.std_eps)
    exp.advantages = adv[:, None].expand_as(exp.completion_mask).contiguous()
    if a.overlong_filter:
        exp.drop_rows(~exp.truncated)


def old_policy_pass(trainers, exp: Experience, rows: torch.Tensor, needs: set[str], need_ref: bool) -> dict:
    """Old-policy log-probs (+ entropy / hidden / reference log-probs) for ``rows``, stored full-size
    on ``exp`` (zeros for the rows left out, which no longer enter the loss)."""
    sub = exp.select(rows)
    stats = trainers.forward_stats(forward_inputs(sub), "entropy" in needs, "hidden" in needs, need_ref)
    for key, value in stats.items():
        full = torch.zeros((exp.num_rows, *value.shape[1:]), dtype=value.dtype)
        full[rows] = value
        setattr(exp, key, full)  # old_logp / entropy / hidden / ref_logp: the Experience's field names
    mm = mismatch_metrics(stats["old_logp"], sub.sampler_logp, sub.completion_mask)
    out = {f"mismatch/{k}": float(v) for k, v in mm.items()}
    out["batch/old_pass_rows"] = float(rows.numel())
    return out


def assign_credit(trainers, exp: Experience, cfg, chain: list, step: int, total_steps: int, timer,
                  force_old_pass: bool = False) -> dict[str, float]:
    """Old-policy pass (when needed), advantages and the credit chain, in place on ``exp``.

    ``trainers`` is a TrainerGroup or a single PolicyEngine (same ``forward_stats`` / ``lm_head``);
    ``timer(name)`` is a context manager timing the phases "credit" and "old_logp";
    ``force_old_pass`` runs the pass even when the update would not need it (a benchmark baseline).
    """
    a = cfg.algorithm
    needs = chain_needs(chain)
    need_ref = a.kl.coef > 0
    kl_reward = need_ref and a.kl.mode != "loss"
    ctx = CreditContext(step, total_steps)
    metrics: dict[str, float] = {}
    rows_first = not kl_reward  # advantages do not depend on the old pass
    shrink = False
    if rows_first:
        with timer("credit"):
            compute_advantages(exp, cfg)
            selected = run_row_phase(chain, exp, ctx)
            if selected is not None:
                metrics.update(selected)
                shrink = stats_rows_can_shrink(chain)
    if force_old_pass or needs_old_pass(cfg, needs):
        rows = exp.active_rows().nonzero()[:, 0] if shrink else torch.arange(exp.num_rows)
        with timer("old_logp"):
            metrics.update(old_policy_pass(trainers, exp, rows, needs, need_ref))
    if kl_reward:  # KL as a reward penalty (InstructGPT style), before the advantages
        exp.rewards, row_kl = kl_penalty_reward(exp.rewards, exp.old_logp, exp.ref_logp,
                                                exp.completion_mask, a.kl.coef)
        metrics["train/kl_reward"] = float(row_kl.mean())
    with timer("credit"):
        if not rows_first:
            compute_advantages(exp, cfg)
        if "policy" in needs:
            w, b = trainers.lm_head()
            ctx.policy = PolicySnapshot(w, b, cfg.rollout.temperature)
        metrics.update(run_chain(chain, exp, ctx))
        ctx.policy = None
        metrics["batch/loss_tokens_frac"] = float(exp.loss_mask().sum() / exp.completion_mask.sum().clamp(min=1))
        metrics["batch/loss_tokens"] = float(exp.loss_mask().sum())
    return metrics
