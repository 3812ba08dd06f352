"""TW-GRPO token weights from intra-group divergence (arXiv 2505.24718; code longmalongma/TW-GRPO).

Spec §4, following the official ``compute_token_importance_kl_logs_uniform``. Per prompt b,
with its G responses aligned by position t:

    LP_{g,t,:}  = log_softmax(logits_{g,t,:})            (over the full vocabulary V)
    LP_{g,t,:}  = -log V                                  where response g has ended (mask 0)
    Lbar_{t,:}  = (1/G) sum_g LP_{g,t,:}
    D_{g,t}     = sum_v exp(Delta) - Delta - 1,  Delta = clamp(Lbar_{t,v} - LP_{g,t,v}, -11, 11)
    D_t         = (1/G) sum_g D_{g,t}
    w_t         = 1 + (alpha - 1) (D_t - min_t D) / (max_t D - min_t D + 1e-8)   in [1, alpha]

w is copied to the G responses and multiplied into ``exp.token_weight`` (times
``completion_mask``). The official code keeps a [B, G, T, V] tensor; here two streamed passes
over the vocabulary (logsumexp, then the divergence sum), tiled over positions, give the
same numbers without one.

Interpretations and deviations (config ``algorithm.tw``; spec Open question 6):
* ``detach=True`` (deviation, reported): the official code backpropagates through w
  (``per_logps`` is not detached). Our weights come from the old policy's stored hidden
  states, which carry no graph, so that gradient cannot be reproduced from the credit
  chain; ``detach=False`` is rejected with an error. The *values* match the official code
  (there old = current policy: one on-policy update, rho = 1). ``tw_weights`` itself is
  differentiable, for a loss that wants to call it on the current policy's logits.
* ``include_padding=True`` (official): ended responses enter Lbar and D_t as uniform rows.
  ``False``: Lbar and D_t average only the responses still running at t; positions with
  fewer than two running responses carry no divergence and get w = 1 outside the min-max.
* ``positions=group``: t spans the longest response of the group. The official code spans
  the padded width of its local batch (``batch``); positions past every response of the
  group then have D = 0 and pull the minimum to 0, so the result depends on what else
  shares the batch.
* ``temperature_scaled=False``: log-probs from the raw logits, as the official code (it
  never divides by the sampling temperature); True uses logits / temperature.

The divergence uses every response of the group (``completion_mask``), including rows an
earlier module (D3S) took out of the loss: the weights describe the group's distributions.
The rest of the official recipe lives elsewhere: ``aggregation=token_mean`` (sum w*l*m / sum m),
``eps_low=0.2``, ``eps_high=0.28``, ``std_eps=1e-4``, KL beta = 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

import torch

from rl.algorithms.registry import register_credit
from rl.credit.base import CreditContext, CreditModule
from rl.credit.config import TWConfig
from rl.credit.entropy import vocab_chunks
from rl.experience import Experience

# logits_fn(position_slice, vocab_slice) -> [G, positions, vocab] logits of one group's responses.
# For a small full tensor: ``lambda ts, vs: logits[:, ts, vs]``.
LogitsFn = Callable[[slice, slice], torch.Tensor]


def _chunked_lse(logits_fn: LogitsFn, ts: slice, vocab_size: int, vocab_chunk: int) -> torch.Tensor:
    parts = [torch.logsumexp(logits_fn(ts, vs).float(), -1) for vs in vocab_chunks(vocab_size, vocab_chunk)]
    return torch.logsumexp(torch.stack(parts, -1), -1)


def tw_divergence(
    logits_fn: LogitsFn,
    mask: torch.Tensor,
    vocab_size: int,
    include_padding: bool = True,
    clamp: float = 11.0,
    vocab_chunk: int = 8192,
    token_chunk: int = 64,
) -> torch.Tensor:
    """D_t [T] for one group whose running responses are ``mask`` [G, T] (steps 1-5).

    Pass 1 (per position tile): logsumexp over vocabulary chunks. Pass 2: the group mean of
    the log-probs and the clamped k3 sum, one vocabulary chunk at a time.
    """
    g, t = mask.shape
    live = mask > 0
    uniform = -math.log(vocab_size)
    out = torch.zeros(t, dtype=torch.float32, device=mask.device)
    for t0 in range(0, t, token_chunk):
        ts = slice(t0, min(t0 + token_chunk, t))
        lv = live[:, ts]
        lse = _chunked_lse(logits_fn, ts, vocab_size, vocab_chunk)  # [G, tile]
        if include_padding:  # every response counts; ended ones as the uniform distribution
            row_w = torch.full(lv.shape, 1.0 / g, dtype=torch.float32, device=mask.device)
        else:  # only responses still running at t
            row_w = lv.float() / lv.sum(0, keepdim=True).clamp(min=1)
        d_rows = torch.zeros(lv.shape, dtype=torch.float32, device=mask.device)
        for vs in vocab_chunks(vocab_size, vocab_chunk):
            lp = logits_fn(ts, vs).float() - lse[..., None]
            lp = torch.where(lv[..., None], lp, torch.full_like(lp, uniform))
            mean_lp = (lp * row_w[..., None]).sum(0, keepdim=True)
            delta = (mean_lp - lp).clamp(-clamp, clamp)
            d_rows = d_rows + (torch.exp(delta) - delta - 1.0).sum(-1)
        out = torch.cat([out[:t0], (d_rows * row_w).sum(0), out[ts.stop :]])  # out-of-place: differentiable
    return out


def tw_weights(
    logits_fn: LogitsFn,
    mask: torch.Tensor,
    vocab_size: int,
    alpha: float = 1.7,
    include_padding: bool = True,
    positions: str = "group",
    clamp: float = 11.0,
    eps: float = 1e-8,
    vocab_chunk: int = 8192,
    token_chunk: int = 64,
) -> torch.Tensor:
    """Token weights w [T] in [1, alpha] of one group (steps 1-7), shared by its G responses."""
    t = mask.shape[1]
    live_any = (mask > 0).any(0)
    span = int(live_any.nonzero().max()) + 1 if live_any.any() else 0
    d = torch.zeros(t, dtype=torch.float32, device=mask.device)
    if span:
        # past the group's longest response every row is uniform: D = 0 exactly, no need to compute
        d = torch.cat([tw_divergence(logits_fn, mask[:, :span], vocab_size, include_padding, clamp,
                                     vocab_chunk, token_chunk), d[span:]])
    pos = torch.arange(t, device=mask.device)
    in_minmax = pos < span if positions == "group" else torch.ones(t, dtype=torch.bool, device=mask.device)
    if not include_padding:
        in_minmax = in_minmax & ((mask > 0).sum(0) >= 2)  # one running response has no divergence
    if not in_minmax.any():
        return torch.ones(t, dtype=torch.float32, device=mask.device)
    d_in = d[in_minmax]
    lo, hi = d_in.min(), d_in.max()
    w = 1.0 + (alpha - 1.0) * (d - lo) / (hi - lo + eps)
    return torch.where(in_minmax, w, torch.ones_like(w))


@register_credit("tw")
class TWGRPO(CreditModule):
    name = "tw"
    needs = frozenset({"hidden", "policy"})

    def __init__(self, cfg: TWConfig) -> None:
        super().__init__(cfg)
        cfg.check()
        if not cfg.detach:
            raise ValueError(
                "algorithm.tw.detach=false (the official code's gradient through the weights) cannot be "
                "reproduced by the credit chain: the weights are computed from the old policy's stored hidden "
                "states, which carry no graph. Use detach=true (same weight values; a documented deviation), "
                "or call rl.credit.tw.tw_weights on the current policy's logits inside the loss.")

    def apply(self, exp: Experience, ctx: CreditContext) -> dict[str, float]:
        cfg = self.cfg
        cfg.check()
        if exp.hidden is None or ctx.policy is None:
            raise ValueError("credit module tw: needs exp.hidden and ctx.policy (old-policy hidden states and "
                             "output head); the trainer must provide them")
        policy = ctx.policy if cfg.temperature_scaled else replace(ctx.policy, temperature=1.0)
        weight = torch.ones_like(exp.completion_mask)
        with torch.no_grad():
            for gid in torch.unique(exp.group_id):
                rows = (exp.group_id == gid).nonzero()[:, 0]
                hidden = exp.hidden[rows]

                def logits_fn(ts: slice, vs: slice, hidden=hidden) -> torch.Tensor:
                    return policy.logits(hidden[:, ts], vs)

                w = tw_weights(logits_fn, exp.completion_mask[rows], policy.vocab_size, cfg.alpha,
                               cfg.include_padding, cfg.positions, cfg.clamp, cfg.eps, cfg.vocab_chunk,
                               cfg.token_chunk)
                weight[rows] = w[None, :].to(weight.dtype)
        weight = weight * exp.completion_mask
        exp.token_weight = exp.token_weight * weight
        exp.extras["tw_weight"] = weight
        live = exp.loss_mask() > 0
        w_live = weight[live]
        return {
            "tw/weight_mean": float(w_live.mean()) if w_live.numel() else 1.0,
            "tw/weight_max": float(w_live.max()) if w_live.numel() else 1.0,
            "tw/frac_above_mid": float((w_live > 1.0 + (cfg.alpha - 1.0) / 2).float().mean()) if w_live.numel() else 0.0,
        }
