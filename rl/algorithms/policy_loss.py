"""Clipped policy-gradient losses: per-token loss ``[N, T]`` to MINIMISE (= -objective).

Every loss has the signature
``fn(logp, old_logp, advantages, mask, *, eps_low, eps_high, dual_clip=None, completion_mask=None)
-> (loss [N,T], metrics)``; all tensors are ``[N, T]`` over completion tokens, the loss is 0 where
``mask`` (the loss mask, ``Experience.loss_mask()``) is 0, and ``metrics`` holds detached masked
scalars. Reduction to a scalar is rl.algorithms.aggregation's job.

``completion_mask`` (``Experience.completion_mask``: every generated token, EOS included) is what
a sequence-level ratio averages over: |y_i| in GSPO is the response length, not the number of
tokens a credit module (D3S token top-K, THR ``below_tau=mask``) left in the loss. ``gspo`` and
``gspo_token`` take s_i over ``completion_mask`` (falling back to ``mask`` when it is None) and
the loss over ``mask``; ``clip`` accepts it and ignores it (its ratio is per token). The engine
must pass it: without it, a masked token silently changes s_i.

* ``clip`` - PPO/GRPO (arXiv 1707.06347, 2402.03300) with DAPO clip-higher (arXiv 2503.14476):
      rho_t = exp(logp_t - old_logp_t)
      l_t   = -min(rho_t A_t, clip(rho_t, 1 - eps_low, 1 + eps_high) A_t)
  Dual-clip (arXiv 1912.09729; verl ``clip_ratio_c``): for A_t < 0 the loss is capped,
      l_t   = min(l_t, -c A_t)    (c = ``dual_clip`` > 1, None = off),
  so a huge ratio on a negative-advantage token cannot blow the loss up.
* ``gspo`` - GSPO (arXiv 2507.18071), one ratio per sequence:
      s_i = exp( (1/|y_i|) sum_{t in y_i} (logp_t - old_logp_t) )     (t over ``completion_mask``)
      l_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i), on every loss token of row i
  (``mask``); s_i, and so its gradient, involves every completion token of the row.
  The per-token loss is constant along a row, so aggregate with ``seq_mean_token_mean`` (verl forces
  it); other modes weight sequences by length. ``PAPER_COMBINATIONS`` below holds this (and every
  other pairing a paper fixes); rl/config.py ``validate`` warns or refuses by
  ``algorithm.on_paper_mismatch``. A_i is the masked mean of row i of ``advantages``; the rows must
  be constant (a sequence estimator broadcast over t) - a per-token A (credit modules) raises, use
  ``gspo_token``.
* ``gspo_token`` - GSPO-token (arXiv 2507.18071 §4.3):
      s_{i,t} = sg[s_i] * pi(y_t) / sg[pi(y_t)]   (log: logp - sg[logp] + sg[log s_i], clamped at 10)
      l_t     = -min(s_{i,t} A_t, clip(s_{i,t}) A_t)   on the loss tokens t (``mask``)
  with s_i over the completion (``completion_mask``), so a dropped token changes neither s_i nor
  the other tokens' loss; it only receives no gradient.
  Its value equals s_i, its gradient flows through token t only; with a per-row constant A and
  ``seq_mean_token_mean`` it reproduces GSPO's gradient exactly (tested).

Numerical safety: token log-ratios are clamped to [-20, 20] before ``exp`` (verl does the same);
sequence log-ratios are clamped at max 10 (verl's GSPO). Clamps only bite on runaway ratios,
which the clip then ignores anyway.

Metrics (masked means over loss tokens; 0 if the mask is empty):
``clip_frac_low`` (A<0 and rho < 1-eps_low: the lower clip removed the gradient),
``clip_frac_high`` (A>0 and rho > 1+eps_high), ``dual_clip_frac`` (A<0 and rho > c),
``approx_kl`` (KL(old||new) by the k3 estimator (rho - 1) - log rho), ``ratio_mean``, ``ratio_max``.
Boundaries are strict: a ratio exactly at 1+eps_high is not counted as clipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from rl.algorithms.registry import register_policy_loss

LOG_RATIO_CLAMP = 20.0
SEQ_LOG_RATIO_MAX = 10.0

# Losses whose per-token value is one number per sequence; they expect seq_mean_token_mean.
SEQUENCE_LEVEL = frozenset({"gspo"})


@dataclass(frozen=True)
class PaperCombination:
    """Settings a paper fixes once a recipe picks its method.

    ``when`` identifies the method and ``expect`` holds what the paper uses; keys are relative to
    ``algorithm.`` (dotted for sub-sections). A list-valued key (``credit``) matches when it
    contains the value. Floats compare with a relative tolerance of 1e-9.
    """

    method: str
    arxiv: str
    when: tuple[tuple[str, Any], ...]
    expect: tuple[tuple[str, Any], ...]
    source: str  # where the expected values come from (specs/grpo_methods.md)


# The one table of paper combinations (specs/grpo_methods.md); rl/config.py ``validate`` reads it.
PAPER_COMBINATIONS: tuple[PaperCombination, ...] = (
    PaperCombination("GSPO", "2507.18071", (("policy_loss", "gspo"),),
                     (("aggregation", "seq_mean_token_mean"), ("eps_low", 3e-4), ("eps_high", 4e-4)),
                     "spec §1: sequence mean 1/G sum_i (verl forces it), eps 3e-4 / 4e-4 (GSPO v2 §5.1)"),
    PaperCombination("GSPO-token", "2507.18071", (("policy_loss", "gspo_token"),),
                     (("aggregation", "seq_mean_token_mean"), ("eps_low", 3e-4), ("eps_high", 4e-4)),
                     "spec §1: GSPO's objective with a per-token A; equal to GSPO only with the sequence mean"),
    PaperCombination("Dr. GRPO", "2503.20783", (("advantage", "dr_grpo"),),
                     (("aggregation", "seq_mean_token_sum_norm"),),
                     "spec §1: token sum over a constant max length x sequences"),
    PaperCombination("TW-GRPO", "2505.24718", (("credit", "tw"),),
                     (("aggregation", "token_mean"), ("eps_low", 0.2), ("eps_high", 0.28)),
                     "spec §4: sum(w l m) / sum m and eps 0.2 / 0.28 hard-coded in the official code"),
    PaperCombination("DAPO", "2503.14476", (("dynamic_sampling.enable", True),),
                     (("dynamic_sampling.criterion", "accuracy"),),
                     "spec §1: dynamic-sampling constraint 0 < #correct < G"),
)


def _lookup(algorithm_cfg: Any, key: str) -> Any:
    obj = algorithm_cfg
    for part in key.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj


def _matches(value: Any, want: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return want in value
    if isinstance(want, float) and not isinstance(value, bool) and isinstance(value, (int, float)):
        return math.isclose(value, want, rel_tol=1e-9)
    return value == want


def _show(key: str, value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"algorithm.{key}={list(value)}"
    return f"algorithm.{key}={value}"


def paper_mismatches(algorithm_cfg: Any) -> list[tuple[list[str], str]]:
    """(departing keys, one-line message) for every paper whose method the config picks but whose
    fixed settings it changes. ``algorithm_cfg`` is an ``AlgorithmConfig`` (or a nested dict)."""
    out = []
    for c in PAPER_COMBINATIONS:
        if not all(_matches(_lookup(algorithm_cfg, k), v) for k, v in c.when):
            continue
        bad = [(k, v) for k, v in c.expect if not _matches(_lookup(algorithm_cfg, k), v)]
        if not bad:
            continue
        picked = ", ".join(_show(k, _lookup(algorithm_cfg, k)) for k, _ in c.when)
        have = ", ".join(_show(k, _lookup(algorithm_cfg, k)) for k, _ in bad)
        want = ", ".join(_show(k, v) for k, v in bad)
        out.append(([f"algorithm.{k}" for k, _ in bad],
                     f"{picked} with {have} departs from {c.method} (arXiv {c.arxiv}), which uses {want} "
                     f"({c.source}); algorithm.on_paper_mismatch=ignore silences this, =error refuses it"))
    return out


def _check_shapes(name: str, **tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    first = next(iter(shapes.values()))
    if len(first) != 2 or any(s != first for s in shapes.values()):
        raise ValueError(f"policy loss {name!r}: all inputs must be the same [N, T] shape, got {shapes}")


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def _clipped_surrogate(
    ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float, dual_clip: float | None
) -> torch.Tensor:
    """-min(rho A, clip(rho) A), then the dual-clip cap for A < 0."""
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    loss = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"algorithm.dual_clip must be > 1, got {dual_clip}")
        capped = torch.minimum(loss, -adv * dual_clip)
        loss = torch.where(adv < 0, capped, loss)
    return loss


def _metrics(
    ratio: torch.Tensor,
    log_ratio: torch.Tensor,
    adv: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None,
) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        ratio, log_ratio, adv = ratio.detach(), log_ratio.detach(), adv.detach()
        m = mask.to(ratio.dtype)
        low = ((ratio < 1.0 - eps_low) & (adv < 0)).to(m.dtype)
        high = ((ratio > 1.0 + eps_high) & (adv > 0)).to(m.dtype)
        dual = ((ratio > dual_clip) & (adv < 0)).to(m.dtype) if dual_clip is not None else torch.zeros_like(m)
        active = m > 0
        ratio_max = ratio[active].max() if active.any() else ratio.new_zeros(())
        return {
            "clip_frac_low": _masked_mean(low, m),
            "clip_frac_high": _masked_mean(high, m),
            "dual_clip_frac": _masked_mean(dual, m),
            "approx_kl": _masked_mean((ratio - 1.0) - log_ratio, m),
            "ratio_mean": _masked_mean(ratio, m),
            "ratio_max": ratio_max,
        }


@register_policy_loss("clip")
def clip_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
    completion_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clip, asymmetric eps (DAPO clip-higher), optional dual-clip; see module doc.

    ``completion_mask`` is accepted for a uniform signature and ignored (the ratio is per token)."""
    _check_shapes("clip", logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    m = mask.to(logp.dtype)
    log_ratio = (logp - old_logp.detach()).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach()
    loss = _clipped_surrogate(ratio, adv, eps_low, eps_high, dual_clip) * m
    return loss, _metrics(ratio, log_ratio, adv, m, eps_low, eps_high, dual_clip)


def _sequence_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """[N] (1/|y_i|) sum_t (logp - old_logp) over the tokens in ``m`` (0 for rows without tokens).

    ``m`` is the completion mask (GSPO's |y_i|), never the loss mask; see the module doc."""
    return ((logp - old_logp.detach()) * m).sum(-1) / m.sum(-1).clamp_min(1)


def _ratio_mask(name: str, logp: torch.Tensor, mask: torch.Tensor, completion_mask: torch.Tensor | None
                ) -> torch.Tensor:
    """The mask s_i averages over: ``completion_mask``, or ``mask`` when the caller has none."""
    if completion_mask is None:
        return mask.to(logp.dtype)
    _check_shapes(name, logp=logp, completion_mask=completion_mask)
    return completion_mask.to(logp.dtype)


@register_policy_loss("gspo")
def gspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
    completion_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO sequence-ratio loss, constant along each row's loss tokens; see module doc.

    s_i averages over ``completion_mask`` (|y_i|; ``mask`` when None), the loss is on ``mask``."""
    _check_shapes("gspo", logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    m = mask.to(logp.dtype)
    adv_tok = advantages.detach()
    row_count = m.sum(-1).clamp_min(1)
    adv_seq = (adv_tok * m).sum(-1) / row_count
    spread = ((adv_tok - adv_seq[:, None]).abs() * m).amax(-1) if m.numel() else adv_seq
    bad = spread > 1e-6 * (1.0 + adv_seq.abs())
    if bad.any():
        rows = bad.nonzero(as_tuple=True)[0].tolist()
        raise ValueError(
            f"policy loss 'gspo' needs one advantage per sequence, but rows {rows[:10]} vary over tokens "
            "(a credit module made them per-token); use algorithm.policy_loss=gspo_token"
        )
    seq_log_ratio = _sequence_log_ratio(logp, old_logp, _ratio_mask("gspo", logp, m, completion_mask))
    seq_log_ratio = seq_log_ratio.clamp(max=SEQ_LOG_RATIO_MAX)
    seq_ratio = torch.exp(seq_log_ratio)
    seq_loss = _clipped_surrogate(seq_ratio, adv_seq, eps_low, eps_high, dual_clip)
    loss = seq_loss[:, None] * m
    # Metrics per token of each row (verl style): a sequence counts with its length.
    ratio_tok = seq_ratio[:, None].expand_as(m)
    log_ratio_tok = seq_log_ratio[:, None].expand_as(m)
    return loss, _metrics(ratio_tok, log_ratio_tok, adv_seq[:, None].expand_as(m), m, eps_low, eps_high, dual_clip)


@register_policy_loss("gspo_token")
def gspo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    eps_low: float,
    eps_high: float,
    dual_clip: float | None = None,
    completion_mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GSPO-token: sequence-valued ratio, per-token gradient and per-token A; see module doc.

    s_i averages over ``completion_mask`` (|y_i|; ``mask`` when None), the loss is on ``mask``."""
    _check_shapes("gspo_token", logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    m = mask.to(logp.dtype)
    ratio_mask = _ratio_mask("gspo_token", logp, m, completion_mask)
    seq_log_ratio = _sequence_log_ratio(logp, old_logp, ratio_mask).detach()
    log_ratio = (logp - logp.detach() + seq_log_ratio[:, None]).clamp(max=SEQ_LOG_RATIO_MAX)
    ratio = torch.exp(log_ratio)
    adv = advantages.detach()
    loss = _clipped_surrogate(ratio, adv, eps_low, eps_high, dual_clip) * m
    return loss, _metrics(ratio, log_ratio, adv, m, eps_low, eps_high, dual_clip)
