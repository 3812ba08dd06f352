"""RMT's next-token term as an objective: lambda * L_NTP on document tokens outside the RL set C.

RMT (arXiv 2509.24375; spec §5): L = L_RL(GRPO on C) + lambda * L_NTP, with
L_NTP = -sum_pos m_pos log p_theta(tau_pos | tau_<pos), m_pos = 1[tau_pos not in C], teacher-forced
at temperature 1 (a language-modelling loss, not a sampling distribution). The per-token sum is
``rl.credit.rmt.ntp_loss`` (the one implementation); ``algorithm.rmt.ntp_reduction`` picks the
literal sum or the mean over the NTP tokens (default), and the mean's denominator is the global
NTP token count of the optimizer step, so micro-batches and ranks add up exactly.

How often per rollout step (spec: unspecified; ``algorithm.rmt.ntp_schedule``):
* ``split`` (default): the step's documents are spread over the mini-batches of every epoch, so
  each optimizer step adds lambda * L_NTP over its share and each epoch covers every document once —
  as each mini-batch covers its share of the RL rows;
* ``every``: the whole document batch joins every optimizer step (each epoch then applies the NTP
  term ``algorithm.mini_batches`` times).
"""

from __future__ import annotations

import torch

from rl.credit.rmt import ntp_loss
from rl.objectives.base import Objective


class NTPObjective(Objective):
    unit = "row"
    mask_key = "ntp_mask"
    prefix = "ntp"
    temperature = 1.0

    def __init__(self, rmt_cfg) -> None:
        self.cfg = rmt_cfg

    def norm_counts(self, batch: dict) -> list[float]:
        return [float(batch[self.mask_key].sum())]

    def loss(self, out: dict, mb: dict, norm: list[float]) -> tuple[torch.Tensor, dict, float]:
        mask = mb[self.mask_key].to(out["logp"].device)
        nll_sum = ntp_loss(out["logp"], mask, "sum")
        total = self.cfg.ntp_coef * ntp_loss(out["logp"], mask, self.cfg.ntp_reduction,
                                            normaliser=norm[0] if self.cfg.ntp_reduction == "mean" else None)
        tokens = float(mask.sum())
        # the NLL mean over the step's NTP tokens: (sum over micro-batches and ranks) / tokens
        return total, {"train/ntp_nll": float(nll_sum.detach()) / max(tokens, 1.0)}, tokens
