"""Vocabulary-streaming statistics of the old policy: logsumexp and entropy from hidden states.

H = logsumexp(z) - sum_v softmax(z)_v z_v over the full vocabulary of the
temperature-scaled logits z (spec §0; verl's ``entropy_from_logits``). The logits of a
[tokens, vocab] block are made one ``token_chunk x vocab_chunk`` tile at a time from the
stored last hidden states, with an online (running-max) logsumexp, so nothing of size
[N, T, V] ever exists.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rl.credit.base import PolicySnapshot


def vocab_chunks(vocab_size: int, chunk: int) -> Iterator[slice]:
    for start in range(0, vocab_size, chunk):
        yield slice(start, min(start + chunk, vocab_size))


def streaming_lse_entropy(
    hidden: torch.Tensor, policy: PolicySnapshot, vocab_chunk: int = 8192, token_chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """[M, d] hidden states -> (logsumexp [M], entropy [M]), float32, full vocabulary."""
    lse_out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    ent_out = torch.empty_like(lse_out)
    with torch.no_grad():
        for t0 in range(0, hidden.shape[0], token_chunk):
            h = hidden[t0 : t0 + token_chunk]
            run_max = torch.full((h.shape[0],), float("-inf"), device=h.device)
            run_sum = torch.zeros(h.shape[0], device=h.device)  # sum exp(z - run_max)
            run_zsum = torch.zeros(h.shape[0], device=h.device)  # sum exp(z - run_max) * z
            for vs in vocab_chunks(policy.vocab_size, vocab_chunk):
                z = policy.logits(h, vs)
                new_max = torch.maximum(run_max, z.max(-1).values)
                rescale = torch.exp(run_max - new_max)
                e = torch.exp(z - new_max[:, None])
                run_sum = run_sum * rescale + e.sum(-1)
                run_zsum = run_zsum * rescale + (e * z).sum(-1)
                run_max = new_max
            lse = run_max + torch.log(run_sum)
            lse_out[t0 : t0 + token_chunk] = lse
            ent_out[t0 : t0 + token_chunk] = lse - run_zsum / run_sum
    return lse_out, ent_out


def chunked_entropy(
    hidden: torch.Tensor,
    policy: PolicySnapshot,
    mask: torch.Tensor | None = None,
    vocab_chunk: int = 8192,
    token_chunk: int = 1024,
) -> torch.Tensor:
    """Entropy of the old policy at every position of ``hidden`` [..., d] -> [...] float32.

    With ``mask`` (same leading shape) only masked-in positions are computed (padding costs
    nothing) and the rest are 0.
    """
    lead = hidden.shape[:-1]
    flat = hidden.reshape(-1, hidden.shape[-1])
    out = torch.zeros(flat.shape[0], dtype=torch.float32, device=hidden.device)
    idx = torch.arange(flat.shape[0], device=hidden.device) if mask is None else mask.reshape(-1).nonzero()[:, 0]
    if idx.numel():
        out[idx] = streaming_lse_entropy(flat[idx], policy, vocab_chunk, token_chunk)[1]
    return out.reshape(lead)
