"""The objective interface: everything the engine needs to know about a training method.

An objective declares

* ``unit``: what the driver keeps whole on one rank — ``row``, ``group`` (the rows answering one
  prompt: advantages, THR and TW need the whole group) or ``pair`` (chosen + rejected);
* ``stats(...)``: the no-grad statistics it needs before its loss (``Stat``: which model —
  policy, reference, guidance — and which output — logp, entropy, hidden — at every completion
  token), computed by the engine and kept on the rank;
* ``mask_key``: the [N, T] mask of its loss tokens (a rank short of rows backprops copies with
  this mask zeroed, so every rank takes the same number of micro-batches);
* ``norm_counts(mini_batch)``: its local normaliser counts, summed over ranks before the step, so
  the loss share of every micro-batch is exact (rl/algorithms/aggregation.py);
* ``loss(out, micro_batch, norm)``: the micro-batch's share of the loss from the differentiable
  forward ``out`` (``logp`` at ``temperature``, ``entropy`` when ``train_entropy``, ``hidden``, and
  ``heads``: {model: (weight, bias)} of the output heads named in ``loss_heads`` plus the policy's,
  gathered under ZeRO-3 for the loss and its backward — e.g. TDPO's full-vocabulary KL);
* ``rows_per_unit``: rows that must stay together in one micro-batch (2 for a pair: chosen and
  rejected are adjacent rows, rl/objectives/preference.py), so splits and padding copies are by unit.

A ``Stat`` may be taken under another prompt (``prompt``: the batch then holds
``{prompt}_ids`` / ``{prompt}_mask`` beside ``prompt_ids``), at the same completion tokens, so the
result is aligned with the batch's completions by response-token offset (T-REG's contrastive prompts).

The engine (rl/engine.py) runs forward, backward and the optimizer step for any objective; the
rank runner (rl/trainer_rank.py) and the family loops (rl/loops) never branch on the method.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNITS = ("row", "group", "pair")


@dataclass(frozen=True)
class Stat:
    """``model``'s ``output`` at every completion token, stored under ``key`` (no grad)."""

    key: str  # old_logp, ref_logp, entropy, hidden, guidance_logp, ...
    model: str  # policy | reference | guidance
    output: str  # logp | entropy | hidden
    temperature: float | None = None  # None = the rollout temperature
    prompt: str | None = None  # None = the batch's prompt_ids; else batch[f"{prompt}_ids"] / f"{prompt}_mask"


class Objective:
    unit: str = "row"
    mask_key: str = "loss_mask"
    prefix: str = "train"  # metric namespace; the loss share is logged as f"{prefix}/loss"
    temperature: float = 1.0  # of the differentiable log-probs
    train_entropy: bool = False
    rows_per_unit: int = 1  # rows kept together in one micro-batch (a pair: 2)
    loss_heads: tuple[str, ...] = ()  # models whose output head the loss reads (besides the policy's)

    def norm_counts(self, batch: dict) -> list[float]:
        """Local counts the loss divides by (summed over ranks by the caller)."""
        raise NotImplementedError

    def loss(self, out: dict, mb: dict, norm: list[float]) -> tuple[torch.Tensor, dict, float]:
        """(this micro-batch's share of the loss, token-weighted metric values, their weight)."""
        raise NotImplementedError
