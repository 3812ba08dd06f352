"""D3S: Dynamic Dual-Level Down-Sampling (arXiv 2509.22115). Spec §2, Open questions 1-3.

Sample level. Within each group keep the N_s rows whose advantages have the largest
population variance,

    S_query = argmax_{S subset of group, |S| = N_s} Var(A_S),

then (``cross_group``) keep N_batch rows of the union the same way. The advantages are
the ones the estimator computed over the FULL group and are never re-normalised. The
optimum is found exactly: an optimal m-subset is always the top-k plus the bottom-(m-k)
values for some k (swapping an interior chosen value for a more extreme unchosen one
never lowers the variance), so sorting and scanning k with prefix sums costs O(n log n).

Token level. Among kept rows keep the top-K% of tokens by |A_{i,t}| * H_{i,t}, with H the
old policy's full-vocabulary entropy at the sampling temperature (``exp.entropy``).
Ties with the K-th score are kept (``>=``, TRL's entropy-mask convention).

Schedule. [N_s, K] = (1-p) [N_init, K_init] + p [N_final, K_final], p = ``ctx.progress``
(step / (trainer.steps - 1)), or with ``schedule_steps=S`` p = min(1, step / (S - 1)): the
schedule relaxes over S steps and a longer run continues at the final values.

Interpretations flagged by the spec (config ``algorithm.d3s``):
* N_init/N_final/K_init/K_final were not published: ``n_init=0.25``, ``n_final=1.0`` (of G,
  ``n_unit=fraction``; N_s is rounded half up and at least 2), ``k_init=0.2``, ``k_final=1.0``, ``schedule=linear`` (Q1).
* N_batch was not published. ``n_batch=None`` (the config default, spec Q1's N_batch = sum N_s)
  keeps every row the intra-group step kept: the cross-group step is then a documented no-op
  (as is ``cross_group=False``). The shipped recipes (recipes/grpo_d3s.yaml, gspo_d3s.yaml) run
  the paper's D1S-Cross configuration with ``n_batch=0.5`` (half of sum N_s), our choice: the
  ablation credits the cross-group step with part of the gain (D1S 31.3 -> D1S-Cross 34.1 avg
  Pass@1), and with the linear schedule of Q1 the share of tokens in the update averages
  int_0^1 (0.25 + 0.75p)(0.2 + 0.8p) dp = 42.5% without it and about 21% with it, which matches
  the paper notes' "fewer than 20% of tokens" (zero-advantage rows lower both further).
* Top-K scope: ``token_scope=global`` over the batch (Q2); ``response`` ranks within each row.
* Entropy source: old policy, no grad, sampling temperature (Q3) - the trainer's ``exp.entropy``.
* The N_pos/N_neg split: the exact max-variance scan above (Q3).
* Zero-advantage rows (|A| <= ``zero_tol``) are never kept while non-zero rows remain; with
  fewer than N non-zero rows only those are kept (no padding with zeros).
* Loss normaliser: the number of kept tokens (token-mean over ``loss_mask``) - the
  aggregation does this, since dropped rows and tokens leave ``token_mask``.

The row advantage used at the sample level is the mean of ``exp.advantages`` over the
row's completion tokens (the sequence advantage when the estimator broadcast it).
Distributed use: each trainer rank runs the module on its own whole groups; the cross-group
step and the global top-K span the whole batch by exchanging scalars between ranks
(``ctx.gather``: the kept rows' advantages, the valid tokens' scores), so every rank cuts at
the same place and the result equals a one-place run. The logged counts are whole-batch.
Cost: the sample level reads only advantages (``select_rows``); when D3S leads the chain the
loop runs it before the old-policy pass, which then computes entropy for the kept rows only
(rl/credit_step.py).
"""

from __future__ import annotations

import math

import torch

from rl.algorithms.registry import register_credit
from rl.credit.base import CreditContext, CreditModule
from rl.credit.config import D3SConfig
from rl.experience import Experience


def max_variance_subset(adv: torch.Tensor, m: int) -> torch.Tensor:
    """Indices (ascending) of the size-``m`` subset of ``adv`` [n] with the largest population variance.

    Among subsets of equal variance the one with the larger sum of squares wins (more
    gradient signal, e.g. for m = 1 the largest |A|).
    """
    n = adv.numel()
    if m >= n:
        return torch.arange(n, device=adv.device)
    if m <= 0:
        return torch.zeros(0, dtype=torch.long, device=adv.device)
    order = torch.argsort(adv, descending=True, stable=True)
    s = adv[order].double()
    zero = s.new_zeros(1)
    p1 = torch.cat([zero, s.cumsum(0)])
    p2 = torch.cat([zero, (s * s).cumsum(0)])
    k = torch.arange(m + 1, device=adv.device)  # k largest + (m-k) smallest
    tail = n - (m - k)
    total = p1[k] + p1[n] - p1[tail]
    sq = p2[k] + p2[n] - p2[tail]
    var = sq / m - (total / m) ** 2
    tol = 1e-12 * max(1.0, float(s.abs().max()) ** 2)
    best_k = int(torch.where(var >= var.max() - tol, sq, torch.full_like(sq, -1.0)).argmax())
    chosen = torch.cat([order[:best_k], order[n - (m - best_k) :]])
    return chosen.sort().values


def keep_top_fraction(score: torch.Tensor, valid: torch.Tensor, k: float, per_row: bool,
                      gather=None) -> torch.Tensor:
    """Bool mask of the top ceil(k * n) valid scores (ties with the cut-off kept), globally or per row.

    ``gather(x) -> (x of every rank concatenated, offset)`` makes "globally" span every trainer
    rank's rows (the ranks exchange their valid scores, one float per token); None = this batch only.
    """
    if k >= 1.0:
        return valid.clone()
    if per_row:
        masked = torch.where(valid, score, torch.full_like(score, float("-inf")))
        counts = valid.sum(-1)
        n_keep = _ceil_count(counts.double() * k).clamp(min=1)
        ordered = masked.sort(-1, descending=True).values
        cutoff = ordered.gather(1, (n_keep - 1).clamp(min=0)[:, None])
        return valid & (score >= cutoff) & (counts[:, None] > 0)
    every = score[valid].float()
    if gather is not None:
        every, _ = gather(every)
    n_valid = every.numel()
    if n_valid == 0:
        return valid.clone()
    n_keep = max(1, int(_ceil_count(torch.tensor(n_valid * k, dtype=torch.float64))))
    cutoff = every.topk(n_keep).values[-1]
    return valid & (score.float() >= cutoff)


def _ceil_count(x: torch.Tensor) -> torch.Tensor:
    # round first so that 0.2 * 10 = 2.0000000000000004 keeps 2 tokens, not 3
    return torch.ceil(torch.round(x, decimals=6)).long()


def _interp(init: float, final: float, progress: float, schedule: str) -> float:
    return init if schedule == "constant" else (1.0 - progress) * init + progress * final


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def row_advantages(exp: Experience) -> torch.Tensor:
    """[N] sequence advantage: the mean of ``exp.advantages`` over each row's completion tokens."""
    adv = exp.advantages
    if adv.dim() == 1:
        return adv.float()
    mask = exp.completion_mask
    return (adv.float() * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


@register_credit("d3s")
class D3S(CreditModule):
    name = "d3s"
    reads_dropped_rows = False  # the token level ranks only the rows it kept

    def __init__(self, cfg: D3SConfig) -> None:
        super().__init__(cfg)
        cfg.check()
        self._selected: Experience | None = None  # the batch select_rows already ran on
        self._tokens_before = 0.0
        token_level = cfg.k_init < 1.0 or (cfg.schedule == "linear" and cfg.k_final < 1.0)
        self.needs = frozenset({"entropy"}) if token_level else frozenset()

    def progress(self, ctx: CreditContext) -> float:
        """p of the schedule: ``ctx.progress`` (over trainer.steps), or over ``schedule_steps`` when set."""
        n = self.cfg.schedule_steps
        if n is None:
            return ctx.progress
        return 1.0 if n <= 1 else min(1.0, max(0.0, ctx.step / (n - 1)))

    def schedule(self, progress: float) -> tuple[float, float]:
        """(N_s as configured - fraction or count -, K) at training progress p."""
        c = self.cfg
        return _interp(c.n_init, c.n_final, progress, c.schedule), _interp(c.k_init, c.k_final, progress, c.schedule)

    def _group_size_kept(self, n_sched: float, group_size: int) -> int:
        # at least 2: a single row has no variance to maximise (e.g. G/4 of a group of 4)
        raw = n_sched * group_size if self.cfg.n_unit == "fraction" else n_sched
        return min(group_size, max(2, _round_half_up(raw)))

    def select_rows(self, exp: Experience, ctx: CreditContext) -> dict[str, float]:
        """Sample level: the max-variance subsets (reads only advantages, so it can run before the
        old-policy pass, which then skips the dropped rows)."""
        if exp.advantages is None:
            raise ValueError("credit module d3s: exp.advantages is None; run the advantage estimator first")
        cfg = self.cfg
        cfg.check()
        n_sched, _ = self.schedule(self.progress(ctx))
        adv = row_advantages(exp)
        eligible = exp.active_rows() & (adv.abs() > cfg.zero_tol)

        kept_rows: list[torch.Tensor] = []
        n_s_values: list[int] = []
        for gid in torch.unique(exp.group_id):
            rows = (exp.group_id == gid).nonzero()[:, 0]
            n_s = self._group_size_kept(n_sched, rows.numel())
            n_s_values.append(n_s)
            cand = rows[eligible[rows]]
            kept_rows.append(cand[max_variance_subset(adv[cand], min(n_s, cand.numel()))])
        keep_idx = torch.cat(kept_rows) if kept_rows else torch.zeros(0, dtype=torch.long, device=adv.device)

        if cfg.cross_group:  # over the whole batch: every rank's kept rows (their advantages) take part
            total = int(round(ctx.reduce([float(sum(n_s_values))])[0]))
            if cfg.n_batch is None:
                n_batch = total
            elif cfg.n_unit == "fraction":
                n_batch = max(1, _round_half_up(cfg.n_batch * total))
            else:
                n_batch = int(cfg.n_batch)
            every, offset = ctx.gather(adv[keep_idx].float())
            chosen = max_variance_subset(every, min(n_batch, every.numel()))
            mine = chosen[(chosen >= offset) & (chosen < offset + keep_idx.numel())] - offset
            keep_idx = keep_idx[mine.to(keep_idx.device)]

        keep = torch.zeros(exp.num_rows, dtype=torch.bool, device=adv.device)
        keep[keep_idx] = True
        self._tokens_before = ctx.reduce([float(exp.loss_mask().sum())])[0]
        exp.drop_rows(keep)
        self._selected = exp
        kept, rows = ctx.reduce([float(keep.sum()), float(exp.num_rows)])  # whole-batch counts
        return {
            "d3s/n_s": sum(n_s_values) / max(1, len(n_s_values)),
            "d3s/kept_samples": kept,
            "d3s/kept_sample_frac": kept / max(1.0, rows),
            "d3s/adv_var_all": float(adv[exp.completion_mask.sum(-1) > 0].var(unbiased=False)) if exp.num_rows else 0.0,
            "d3s/adv_var_kept": float(adv[keep].var(unbiased=False)) if keep.any() else 0.0,
        }

    def apply(self, exp: Experience, ctx: CreditContext) -> dict[str, float]:
        """Sample level (unless ``select_rows`` already ran on this batch), then token level."""
        metrics = {} if self._selected is exp else self.select_rows(exp, ctx)
        self._selected = None
        _, k = self.schedule(self.progress(ctx))
        metrics["d3s/k"] = k
        valid = exp.loss_mask() > 0
        if k < 1.0:
            if exp.entropy is None:
                raise ValueError("credit module d3s: exp.entropy is None but token-level selection "
                                 f"(K={k:.3f} < 1) needs the old policy's entropy; the trainer must provide it")
            tok_adv = exp.advantages if exp.advantages.dim() == 2 else exp.advantages[:, None]
            score = tok_adv.float().abs() * exp.entropy.float()
            token_keep = keep_top_fraction(score, valid, k, per_row=self.cfg.token_scope == "response",
                                           gather=ctx.gather)
            exp.token_mask = exp.token_mask * token_keep.to(exp.token_mask.dtype)
            exp.extras["d3s_score"] = score * valid
        kept_tokens = ctx.reduce([float(exp.loss_mask().sum())])[0]
        metrics["d3s/kept_tokens"] = kept_tokens
        metrics["d3s/kept_token_frac"] = kept_tokens / self._tokens_before if self._tokens_before else 0.0
        return metrics
