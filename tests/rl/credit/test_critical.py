"""cDPO critical-token math (rl/credit/critical.py, spec §3): p_CE, the critical index, Pass@k."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rl.credit.critical import contrastive_token_probs, critical_index, pass_at_k

F64 = torch.float64
M, D, V = 10, 5, 9


def problem(dtype=F64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)  # noqa: E731
    return r(M, D), r(V, D), r(V), r(M, D), r(V, D), r(V), torch.randint(0, V, (M,), generator=gen)


def direct(h_pos, w_pos, b_pos, h_neg, w_neg, b_neg, labels, beta):
    lp_pos = torch.log_softmax(h_pos @ w_pos.T + b_pos, -1)
    lp_neg = torch.log_softmax(h_neg @ w_neg.T + b_neg, -1)
    s = torch.softmax((1 + beta) * lp_pos - beta * lp_neg, -1)
    return s.gather(-1, labels[:, None]).squeeze(-1)


@pytest.mark.parametrize("chunk", [1, 3, 4, 10, 64])
@pytest.mark.parametrize("beta", [0.0, 1.0, 2.5])
def test_matches_full_vocab_softmax(chunk, beta):
    h_pos, w_pos, b_pos, h_neg, w_neg, b_neg, labels = problem()
    got = contrastive_token_probs(h_pos, w_pos, h_neg, w_neg, labels, beta_ce=beta, bias_pos=b_pos,
                                  bias_neg=b_neg, chunk_tokens=chunk)
    torch.testing.assert_close(got, direct(h_pos, w_pos, b_pos, h_neg, w_neg, b_neg, labels, beta))
    assert got.shape == (M,) and not got.requires_grad


def test_beta_zero_is_the_positive_model_and_probabilities_are_fp32():
    h_pos, w_pos, b_pos, h_neg, w_neg, b_neg, labels = problem(dtype=torch.float32)
    h_pos.requires_grad_(True)
    got = contrastive_token_probs(h_pos, w_pos, h_neg, w_neg, labels, beta_ce=0.0, bias_pos=b_pos,
                                  bias_neg=b_neg)
    p_pos = torch.softmax(h_pos @ w_pos.T + b_pos, -1).gather(-1, labels[:, None]).squeeze(-1)
    torch.testing.assert_close(got, p_pos.detach())
    bf = contrastive_token_probs(h_pos.detach().bfloat16(), w_pos.bfloat16(), h_neg.bfloat16(),
                                 w_neg.bfloat16(), labels)
    assert bf.dtype == torch.float32 and not got.requires_grad


def test_hand_worked_two_token_vocab():
    # p_pos = [3/4, 1/4], p_neg = [1/2, 1/2], beta 1: s = 2 log p_pos - log p_neg -> softmax ~ p_pos^2
    # -> [9/16, 1/16] / (10/16) = [0.9, 0.1]
    eye = torch.eye(2, dtype=F64)
    h_pos = torch.tensor([[math.log(0.75), math.log(0.25)]] * 2, dtype=F64)
    h_neg = torch.tensor([[0.0, 0.0]] * 2, dtype=F64)
    got = contrastive_token_probs(h_pos, eye, h_neg, eye, torch.tensor([0, 1]))
    torch.testing.assert_close(got, torch.tensor([0.9, 0.1], dtype=F64))


# critical_index: c_i = correct continuations (of 64) from the prefix ending at response token i.
@pytest.mark.parametrize("counts,want", [
    ([5, 9, 4, 12], None),                     # no prefix with 0 correct: no critical token
    ([], None),
    ([6, 2, 0, 0, 1, 0], 2),                   # first zero, never recovers past 3: it stays
    ([6, 0, 3, 2, 3], 1),                      # a later 3/64 is not a recovery (the rule is > 3)
    ([6, 0, 1, 4, 2, 1], 1),                   # recovery (4 > 3) discards it, no new zero: the last discarded
    ([6, 0, 1, 4, 2, 0, 0, 1], 5),             # recovery then a new zero: the new candidate survives
    ([0, 7, 0, 9, 3], 2),                      # two discarded candidates: the last one discarded
    ([0, 7, 0, 9, 0], 4),                      # ... unless a third candidate survives
    ([8, None, 0, None, 5, 1], 2),             # a prefix without rollouts (None) is skipped
])
def test_critical_index_rule(counts, want):
    assert critical_index(counts) == want


def test_critical_index_thresholds_are_parameters():
    assert critical_index([6, 1, 2, 9], zero=1) == 1
    assert critical_index([6, 0, 4, 1], recover=4) == 1
    assert critical_index([6, 0, 5, 1], recover=4) == 1  # discarded at 5, remembered


def brute_pass_at_k(n, c, k):
    """Fraction of the k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 7])
def test_pass_at_k_equals_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k)), (n, c, k)


def test_pass_at_k_k_above_n_is_clamped_like_the_official_code():
    assert pass_at_k(3, 1, 5) == pytest.approx(1.0)
    assert pass_at_k(3, 0, 5) == 0.0
    with pytest.raises(ValueError, match="c"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="k"):
        pass_at_k(3, 1, 0)
