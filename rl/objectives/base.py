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
  forward ``out`` (``logp`` at ``temperature``, ``entropy`` when ``train_entropy``, ``hidden``).

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


class Objective:
    unit: str = "row"
    mask_key: str = "loss_mask"
    prefix: str = "train"  # metric namespace; the loss share is logged as f"{prefix}/loss"
    temperature: float = 1.0  # of the differentiable log-probs
    train_entropy: bool = False

    def norm_counts(self, batch: dict) -> list[float]:
        """Local counts the loss divides by (summed over ranks by the caller)."""
        raise NotImplementedError

    def loss(self, out: dict, mb: dict, norm: list[float]) -> tuple[torch.Tensor, dict, float]:
        """(this micro-batch's share of the loss, token-weighted metric values, their weight)."""
        raise NotImplementedError
