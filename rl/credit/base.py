"""Interface of a credit-assignment module (DESIGN.md "Composable credit assignment").

A GRPO variant = advantage estimator + chain of credit modules + policy loss +
aggregation. The chain runs after advantages are computed and before the loss.
Each module reads the Experience (and the old policy's entropy / hidden states
when it declares it needs them) and edits it in place, only through:

* ``exp.drop_rows(keep)``       - rows that leave the loss entirely (D3S sample level)
* ``exp.token_mask``            - may only shrink (D3S token top-K, THR dominant tokens)
* ``exp.token_weight``          - multiplied (TW-GRPO weights)
* ``exp.advantages``            - replaced by a per-token [N, T] version (THR reweighting)

and returns a dict of scalar metrics for logging. Modules compose because each
one multiplies/ANDs into what the previous one left.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rl.experience import Experience


@dataclass
class PolicySnapshot:
    """What a credit module may read of the old (rollout) policy, all detached.

    ``logits(h)`` recomputes logits from stored last hidden states through the
    model's output head, so a module can stream over the vocabulary in chunks
    without the trainer ever holding an [N, T, V] tensor. ``vocab_slice`` may be a
    ``slice`` (a contiguous chunk) or a LongTensor of token ids (e.g. THR's group vocabulary).
    """

    lm_head_weight: torch.Tensor  # [V, d]
    lm_head_bias: torch.Tensor | None
    temperature: float

    @property
    def vocab_size(self) -> int:
        return self.lm_head_weight.shape[0]

    def logits(self, hidden: torch.Tensor, vocab_slice: slice | torch.Tensor | None = None) -> torch.Tensor:
        w = self.lm_head_weight if vocab_slice is None else self.lm_head_weight[vocab_slice]
        out = hidden.float() @ w.float().T  # fp32 (spec: accumulate scores in FP32); only this slice is cast
        if self.lm_head_bias is not None:
            b = self.lm_head_bias if vocab_slice is None else self.lm_head_bias[vocab_slice]
            out = out + b.float()
        return out / self.temperature


def _one_rank_gather(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    return local, 0


def _one_rank_reduce(values: list[float], op: str = "sum") -> list[float]:
    return list(values)


@dataclass
class CreditContext:
    step: int  # optimizer step about to be taken (0-based)
    total_steps: int
    policy: PolicySnapshot | None = None  # present when a module in the chain needs it
    # Whole-batch steps across trainer ranks (rl/dist.py), scalars only: ``gather(x [n]) -> (every
    # rank's x concatenated in rank order, this rank's offset)``; ``reduce([floats], "sum"|"max")``.
    # The defaults are the one-rank case (a module run on a batch held in one place).
    gather: Callable[[torch.Tensor], tuple[torch.Tensor, int]] = _one_rank_gather
    reduce: Callable[..., list[float]] = _one_rank_reduce

    @property
    def progress(self) -> float:
        """Training progress p in [0, 1] for schedules."""
        if self.total_steps <= 1:
            return 1.0
        return min(1.0, max(0.0, self.step / (self.total_steps - 1)))


class CreditModule:
    """Base class. Subclasses set ``needs`` and implement ``apply``."""

    name: str = "base"
    needs: frozenset[str] = frozenset()  # subset of {"entropy", "hidden", "policy"}
    # May the module read old-policy statistics of rows already out of the loss (THR's M+ and TW's
    # divergence use the whole group)? If no module does, the old-policy pass skips those rows.
    reads_dropped_rows: bool = True

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def select_rows(self, exp: Experience, ctx: CreditContext) -> dict[str, float] | None:
        """Optional first phase that drops rows using advantages only (no old-policy statistics).
        When the module leads the chain, the loop runs it before the old-policy pass; ``apply``
        must then skip it for that batch. None = the module has no such phase."""
        return None

    def apply(self, exp: Experience, ctx: CreditContext) -> dict[str, float]:
        raise NotImplementedError
