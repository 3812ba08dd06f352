"""The GRPO-family objective: advantages, old/reference passes, credit chain, clipped loss + aggregation.

Runs on every trainer rank over the rank's own whole groups (``unit = "group"``).

Before the update (``prepare``), on the rank's device:
1. advantages from rewards (``algorithm.advantage``; group-relative, so whole groups suffice);
2. when they do not depend on the old-policy pass (no KL-as-reward), the chain's leading row
   selection (D3S's sample level) runs first, and if no module reads rows out of the loss
   (``CreditModule.reads_dropped_rows``) the pass covers only the rows still in the loss;
3. the no-grad pass: old-policy log-probs (+ entropy / hidden states when a module asks,
   + reference log-probs for KL), kept on the rank;
4. KL as a reward penalty (then the advantages), when ``algorithm.kl.mode=reward``;
5. the credit chain (D3S / THR / TW ...), reading the live output head (gathered under ZeRO-3).
D3S's cross-group step and global token top-K exchange scalars between ranks (rl/dist.py).

The loss (``loss``) per micro-batch: policy loss (clip / gspo / gspo_token) on the ratio to the
old policy (the current log-probs, detached, for a single on-policy update without a pass),
times TIS weights and credit token weights, plus beta * KL as a loss, aggregated with the
global token / row counts of the mini-batch (exact across micro-batches and ranks).
"""

from __future__ import annotations

import torch

from rl import dist
from rl.algorithms.aggregation import aggregate, loss_counts
from rl.algorithms.kl import kl_loss, kl_penalty_reward
from rl.algorithms.registry import ADVANTAGES, POLICY_LOSSES
from rl.algorithms.tis import mismatch_metrics, tis_weights
from rl.credit.base import CreditContext, PolicySnapshot
from rl.credit.chain import build_chain, chain_needs, run_chain, run_row_phase, stats_rows_can_shrink
from rl.experience import Experience
from rl.objectives.base import Objective, Stat

# Tensors of a mini-batch row (everything else stays where it was made).
TRAIN_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "old_logp", "advantages",
              "token_weight", "ref_logp", "sampler_logp")


def forward_inputs(exp: Experience) -> dict:
    return {"prompt_ids": exp.prompt_ids, "prompt_mask": exp.prompt_mask,
            "completion_ids": exp.completion_ids, "completion_mask": exp.completion_mask}


class GRPOObjective(Objective):
    unit = "group"
    mask_key = "loss_mask"
    prefix = "train"

    def __init__(self, cfg) -> None:
        self.cfg, self.a = cfg, cfg.algorithm
        self.chain = build_chain(list(self.a.credit), self.a)
        self.needs = chain_needs(self.chain)
        self.temperature = cfg.rollout.temperature
        self.loss_fn = POLICY_LOSSES[self.a.policy_loss]

    # ------------------------------------------------------------------ before the update
    def needs_old_pass(self) -> bool:
        """A separate no-grad pass is needed unless one on-policy update needs nothing but log-probs."""
        a = self.a
        return a.epochs > 1 or a.mini_batches > 1 or bool(self.needs) or a.kl.coef > 0

    def stat_requests(self) -> list[Stat]:
        req = [Stat("old_logp", "policy", "logp")]
        if "entropy" in self.needs:
            req.append(Stat("entropy", "policy", "entropy"))
        if "hidden" in self.needs:
            req.append(Stat("hidden", "policy", "hidden"))
        if self.a.kl.coef > 0:
            req.append(Stat("ref_logp", "reference", "logp"))
        return req

    def compute_advantages(self, exp: Experience) -> None:
        a = self.a
        adv = ADVANTAGES[a.advantage](exp.rewards, exp.group_id, std_normalize=a.std_normalize, std_eps=a.std_eps)
        exp.advantages = adv[:, None].expand_as(exp.completion_mask).contiguous()
        if a.overlong_filter:
            exp.drop_rows(~exp.truncated)

    def old_policy_pass(self, engine, exp: Experience, rows: torch.Tensor) -> dict[str, float]:
        """The requested statistics for ``rows``, stored full-size on ``exp`` (zeros for rows left out)."""
        if rows.numel() == 0:  # nothing of this rank's is in the loss; the pass still takes part (ZeRO-3)
            rows = rows.new_zeros(1)
        sub = exp.select(rows)
        stats = engine.stats(forward_inputs(sub), self.stat_requests())
        for key, value in stats.items():
            full = torch.zeros((exp.num_rows, *value.shape[1:]), dtype=value.dtype, device=value.device)
            full[rows] = value
            setattr(exp, key, full)  # old_logp / entropy / hidden / ref_logp: the Experience's field names
        mm = mismatch_metrics(stats["old_logp"], sub.sampler_logp, sub.completion_mask)
        out = {f"mismatch/{k}": float(v) for k, v in mm.items()}
        out["batch/old_pass_rows"] = float(rows.numel())
        return out

    def prepare(self, engine, exp: Experience, step: int, total_steps: int, timer, force_old_pass: bool = False
                ) -> tuple[dict[str, float], dict[str, float]]:
        """Advantages, old/reference pass and credit chain, in place on ``exp`` (see module doc).

        Returns (token-weighted mean metrics, additive counts). ``force_old_pass`` runs the pass
        even when the update would not need it (a benchmark baseline)."""
        a = self.a
        kl_reward = a.kl.coef > 0 and a.kl.mode != "loss"
        ctx = CreditContext(step, total_steps, gather=dist.all_gather_1d, reduce=dist.all_reduce)
        means: dict[str, float] = {}
        shrink = False
        if not kl_reward:  # advantages do not depend on the pass: select rows first
            with timer("credit"):
                self.compute_advantages(exp)
                selected = run_row_phase(self.chain, exp, ctx)
                if selected is not None:
                    means.update(selected)
                    shrink = stats_rows_can_shrink(self.chain)
        if force_old_pass or self.needs_old_pass():
            rows = (exp.active_rows().nonzero()[:, 0] if shrink
                    else torch.arange(exp.num_rows, device=exp.completion_mask.device))
            with timer("old_logp"):
                means.update(self.old_policy_pass(engine, exp, rows))
        if kl_reward:  # KL as a reward penalty (InstructGPT style), before the advantages
            exp.rewards, row_kl = kl_penalty_reward(exp.rewards, exp.old_logp, exp.ref_logp, exp.completion_mask,
                                                    a.kl.coef)
            means["train/kl_reward"] = float(row_kl.mean())
        with timer("credit"):
            if kl_reward:
                self.compute_advantages(exp)
            if "policy" in self.needs:
                with engine.head_gathered("policy"):
                    w, b = engine.head("policy")
                    ctx.policy = PolicySnapshot(w.detach(), None if b is None else b.detach(), self.temperature)
                    means.update(run_chain(self.chain, exp, ctx))
                ctx.policy = None
            else:
                means.update(run_chain(self.chain, exp, ctx))
        exp.hidden = None  # [N, T, d]: the chain was its only reader; free it before the update
        counts = {"batch/loss_tokens": float(exp.loss_mask().sum()), "batch/tokens": float(exp.completion_mask.sum())}
        return means, counts

    # ------------------------------------------------------------------ the update
    def train_rows(self, exp: Experience, rows: torch.Tensor) -> dict:
        """The rows' tensors for the update, trimmed to their longest completion."""
        sub = exp.select(rows)
        width = max(int(sub.completion_mask.sum(-1).max().item()), 1) if rows.numel() else 1
        out = {"loss_mask": sub.loss_mask()[:, :width]}
        for k in TRAIN_KEYS:
            v = getattr(sub, k, None)
            if isinstance(v, torch.Tensor):  # None (e.g. old_logp without an old-policy pass) is left out
                out[k] = v[:, :width] if v.dim() >= 2 and k not in ("prompt_ids", "prompt_mask") else v
        return out

    def norm_counts(self, batch: dict) -> list[float]:
        return list(loss_counts(batch[self.mask_key]))

    def loss(self, out: dict, mb: dict, norm: list[float]) -> tuple[torch.Tensor, dict, float]:
        a = self.a
        logp = out["logp"]
        dev = logp.device
        mask = mb["loss_mask"].to(dev)
        cmask = mb["completion_mask"].to(dev)
        # On-policy single update: parameters only change after the last micro-batch, so the
        # current log-probs ARE the old policy's (ratio 1, as TRL/TW-GRPO with one iteration).
        old = mb["old_logp"].to(dev) if "old_logp" in mb else logp.detach()
        tok_loss, values = self.loss_fn(logp, old, mb["advantages"].to(dev), mask, eps_low=a.eps_low,
                                        eps_high=a.eps_high, dual_clip=a.dual_clip, completion_mask=cmask)
        values = {f"train/{k}": v for k, v in values.items()}
        sampler = mb["sampler_logp"].to(dev) if "sampler_logp" in mb else None
        if "old_logp" not in mb and sampler is not None:
            values.update({f"mismatch/{k}": v for k, v in mismatch_metrics(old, sampler, cmask).items()})
        if a.tis.enable and sampler is not None:
            tok_loss = tok_loss * tis_weights(old, sampler, mask, a.tis.cap)
        tok_loss = tok_loss * mb["token_weight"].to(dev)
        if a.kl.coef > 0 and a.kl.mode == "loss":
            kl = kl_loss(logp, mb["ref_logp"].to(dev), mask, a.kl.coef, a.kl.estimator)
            tok_loss = tok_loss + kl
            values["train/kl"] = (kl.detach() * mask).sum() / mask.sum().clamp(min=1) / a.kl.coef
        share = aggregate(tok_loss, mask, a.aggregation, global_tokens=norm[0], global_seqs=norm[1],
                          max_len=self.cfg.rollout.max_tokens)
        return share, {k: float(v) for k, v in values.items()}, float(mask.sum())
