"""Chunked entropy/logsumexp from hidden states equals the unchunked torch computation."""

from __future__ import annotations

import torch

from rl.credit.base import PolicySnapshot
from rl.credit.entropy import chunked_entropy, streaming_lse_entropy


def make_policy(vocab: int, dim: int, temperature: float, bias: bool, seed: int = 0) -> PolicySnapshot:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(vocab, dim, generator=gen) * 2.0  # peaked distributions: exercises the running max
    b = torch.randn(vocab, generator=gen) if bias else None
    return PolicySnapshot(lm_head_weight=w, lm_head_bias=b, temperature=temperature)


def test_chunked_entropy_matches_categorical() -> None:
    policy = make_policy(vocab=37, dim=5, temperature=0.7, bias=True)
    hidden = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(1))
    logits = (hidden @ policy.lm_head_weight.T + policy.lm_head_bias) / 0.7
    expected = torch.distributions.Categorical(logits=logits).entropy()
    got = chunked_entropy(hidden, policy, vocab_chunk=8, token_chunk=5)  # 37 = 4 chunks of 8 + 5
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_masked_positions_are_zero_and_the_rest_unchanged() -> None:
    policy = make_policy(vocab=11, dim=3, temperature=1.0, bias=False)
    hidden = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    full = torch.distributions.Categorical(logits=hidden @ policy.lm_head_weight.T).entropy()
    got = chunked_entropy(hidden, policy, mask=mask, vocab_chunk=4, token_chunk=2)
    torch.testing.assert_close(got, full * mask, rtol=1e-5, atol=1e-6)


def test_streaming_logsumexp_matches_torch() -> None:
    policy = make_policy(vocab=23, dim=4, temperature=1.3, bias=True, seed=3)
    hidden = torch.randn(9, 4, generator=torch.Generator().manual_seed(4)) * 5.0
    logits = (hidden @ policy.lm_head_weight.T + policy.lm_head_bias) / 1.3
    lse, _ = streaming_lse_entropy(hidden, policy, vocab_chunk=6, token_chunk=4)
    torch.testing.assert_close(lse, torch.logsumexp(logits, -1), rtol=1e-5, atol=1e-4)
