"""The one tensor contract between rollout, rewards, credit modules and the loss.

Every token-level tensor is ``[N, T]`` over *completion* tokens only (no prompt),
right-padded. ``completion_mask`` is 1 on generated tokens, up to and including
EOS, and 0 on padding. Prompts are kept left-padded in ``prompt_ids`` so that
``cat(prompt_ids, completion_ids)`` is a contiguous sequence per row.

Masks have two roles that must not be mixed up:

* ``completion_mask`` says which completion positions *exist*. It drives the
  attention mask and never changes after generation.
* ``token_mask`` says which positions *enter the loss*. It starts equal to
  ``completion_mask`` and only ever shrinks (overlong filtering, D3S token
  top-K, dropped rows). ``token_weight`` multiplies the per-token loss.

The helpers below are the only place these rules are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


@dataclass
class Experience:
    prompt_ids: torch.Tensor  # [N, P] long, left-padded with pad_token_id
    prompt_mask: torch.Tensor  # [N, P] long/bool, 1 on real prompt tokens
    completion_ids: torch.Tensor  # [N, T] long, right-padded
    completion_mask: torch.Tensor  # [N, T] float, 1 up to and including EOS
    group_id: torch.Tensor  # [N] long, rows with the same id answer the same prompt
    rewards: torch.Tensor  # [N] float
    correct: torch.Tensor | None = None  # [N] bool, the accuracy label (Collected.correct)
    sampler_logp: torch.Tensor | None = None  # [N, T] vLLM's logprobs of the sampled tokens
    truncated: torch.Tensor | None = None  # [N] bool, finish_reason == "length"
    old_logp: torch.Tensor | None = None  # [N, T] trainer's logprobs under the rollout policy
    ref_logp: torch.Tensor | None = None  # [N, T] frozen reference policy
    entropy: torch.Tensor | None = None  # [N, T] old policy, full vocab, sampling temperature
    hidden: torch.Tensor | None = None  # [N, T, d] last hidden state that produces logits for token t
    advantages: torch.Tensor | None = None  # [N, T] float (sequence estimators broadcast)
    token_weight: torch.Tensor | None = None  # [N, T] float multiplier on the per-token loss
    token_mask: torch.Tensor | None = None  # [N, T] float, 1 where the token enters the loss
    extras: dict = field(default_factory=dict)  # anything a credit module wants to log or inspect

    def __post_init__(self) -> None:
        self.completion_mask = self.completion_mask.float()
        if self.token_mask is None:
            self.token_mask = self.completion_mask.clone()
        if self.token_weight is None:
            self.token_weight = torch.ones_like(self.completion_mask)

    @property
    def num_rows(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)

    def loss_mask(self) -> torch.Tensor:
        """Positions that enter the loss: existing tokens that no filter removed."""
        return self.token_mask * self.completion_mask

    def select(self, rows: torch.Tensor) -> Experience:
        """A new Experience holding only ``rows`` (an index or bool tensor over N)."""
        if rows.dtype == torch.bool:
            rows = rows.nonzero(as_tuple=True)[0]
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v[rows] if isinstance(v, torch.Tensor) else v
        return replace(self, **out)

    def drop_rows(self, keep: torch.Tensor) -> None:
        """Remove rows from the loss by zeroing their token mask (shapes stay)."""
        self.token_mask = self.token_mask * keep.to(self.token_mask.dtype)[:, None]

    def active_rows(self) -> torch.Tensor:
        """Rows with at least one token in the loss (the rest can skip backward)."""
        return self.loss_mask().sum(-1) > 0


def build_completion_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """[N] lengths (EOS included) -> [N, width] float mask, 1 on the first ``length`` positions."""
    pos = torch.arange(width, device=lengths.device)[None, :]
    return (pos < lengths[:, None]).float()


def right_pad(seqs: list[list[int]], pad: int | float, dtype=torch.long) -> torch.Tensor:
    """[N, max(longest, 1)] right-padded; an empty list gives [0, 1]."""
    width = max((len(s) for s in seqs), default=0)
    out = torch.full((len(seqs), max(width, 1)), pad, dtype=dtype)
    for i, s in enumerate(seqs):
        if s:
            out[i, : len(s)] = torch.tensor(s, dtype=dtype)
    return out


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) [N, longest] left-padded; an empty list gives two [0, 0] tensors."""
    width = max((len(s) for s in seqs), default=0)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s) :] = 1
    return ids, mask
