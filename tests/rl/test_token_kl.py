"""TDPO's per-token KL(pi_ref || pi_theta) in chunks (rl/algorithms/token_kl.py) against full-vocab math."""

from __future__ import annotations

import math

import pytest
import torch

from rl.algorithms.token_kl import chunked_reference_kl

F64 = torch.float64
M, D, V = 11, 6, 13


def problem(dtype=F64, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=dtype)

    h_pol, w_pol, h_ref, w_ref = r(M, D), r(V, D), r(M, D), r(V, D)
    b_pol, b_ref = (r(V), r(V)) if bias else (None, None)
    for t in (h_pol, w_pol, b_pol):
        if t is not None:
            t.requires_grad_(True)
    return h_pol, w_pol, b_pol, h_ref, w_ref, b_ref


def direct_kl(h_pol, w_pol, b_pol, h_ref, w_ref, b_ref, temperature):
    """Full [M, V] logits, the way the official TDPO code writes it (fine at V = 13)."""
    z_pol = (h_pol @ w_pol.T + (b_pol if b_pol is not None else 0)) / temperature
    z_ref = (h_ref @ w_ref.T + (b_ref if b_ref is not None else 0)) / temperature
    p_ref = torch.softmax(z_ref, -1)
    return (p_ref * (torch.log_softmax(z_ref, -1) - torch.log_softmax(z_pol, -1))).sum(-1)


@pytest.mark.parametrize("chunk", [1, 3, 4, 11, 50])
@pytest.mark.parametrize("bias", [True, False])
def test_values_and_gradients_match_full_vocab(chunk, bias):
    h_pol, w_pol, b_pol, h_ref, w_ref, b_ref = problem(bias=bias)
    g = torch.randn(M, generator=torch.Generator().manual_seed(5), dtype=F64)
    kl = chunked_reference_kl(h_pol, w_pol, h_ref, w_ref, bias_policy=b_pol, bias_ref=b_ref, temperature=0.7,
                              chunk_tokens=chunk)
    (kl * g).sum().backward()
    got = [t.grad.clone() for t in (h_pol, w_pol, b_pol) if t is not None]
    for t in (h_pol, w_pol, b_pol):
        if t is not None:
            t.grad = None
    want = direct_kl(h_pol, w_pol, b_pol, h_ref, w_ref, b_ref, 0.7)
    (want * g).sum().backward()
    torch.testing.assert_close(kl, want.detach())
    for a, t in zip(got, [t for t in (h_pol, w_pol, b_pol) if t is not None]):
        torch.testing.assert_close(a, t.grad)


def test_float32_matches_float64_reference():
    h_pol, w_pol, b_pol, h_ref, w_ref, b_ref = problem()
    args32 = [t.detach().float().requires_grad_(t.requires_grad)
              for t in (h_pol, w_pol, b_pol, h_ref, w_ref, b_ref)]
    kl = chunked_reference_kl(args32[0], args32[1], args32[3], args32[4], bias_policy=args32[2],
                              bias_ref=args32[5], chunk_tokens=4)
    kl.sum().backward()
    want = direct_kl(h_pol, w_pol, b_pol, h_ref, w_ref, b_ref, 1.0)
    want.sum().backward()
    assert kl.dtype == torch.float32
    torch.testing.assert_close(kl.double(), want.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(args32[1].grad.double(), w_pol.grad, rtol=1e-4, atol=1e-5)


def test_hand_worked_two_token_vocab():
    # identity heads, logits ln p: p_ref = [1/2, 1/2], p_pol = [3/4, 1/4]
    # KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3); dKL/dz_pol = softmax(z_pol) - p_ref = [1/4, -1/4]
    eye = torch.eye(2, dtype=F64)
    h_pol = torch.tensor([[math.log(0.75), math.log(0.25)]], dtype=F64, requires_grad=True)
    h_ref = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=F64)
    kl = chunked_reference_kl(h_pol, eye, h_ref, eye)
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3))
    kl.sum().backward()
    torch.testing.assert_close(h_pol.grad, torch.tensor([[0.25, -0.25]], dtype=F64))


def test_zero_when_policy_equals_reference_and_reference_gets_no_gradient():
    h_pol, w_pol, b_pol, _, _, _ = problem()
    h_ref, w_ref = h_pol.detach().clone().requires_grad_(True), w_pol.detach().clone().requires_grad_(True)
    kl = chunked_reference_kl(h_pol, w_pol, h_ref, w_ref, bias_policy=b_pol, bias_ref=b_pol.detach(),
                              chunk_tokens=3)
    torch.testing.assert_close(kl, torch.zeros(M, dtype=F64), atol=1e-12, rtol=0)
    kl.sum().backward()
    assert h_ref.grad is None and w_ref.grad is None  # the reference is a constant


def test_graph_keeps_no_token_by_vocab_tensor():
    h_pol, w_pol, b_pol, h_ref, w_ref, b_ref = problem()
    kl = chunked_reference_kl(h_pol, w_pol, h_ref, w_ref, bias_policy=b_pol, bias_ref=b_ref, chunk_tokens=4)
    saved = kl.grad_fn.saved_tensors
    assert saved and all(t.numel() < M * V for t in saved), [tuple(t.shape) for t in saved]


def test_bad_shapes_raise():
    h_pol, w_pol, _, h_ref, w_ref, _ = problem(bias=False)
    with pytest.raises(ValueError, match="h_ref"):
        chunked_reference_kl(h_pol, w_pol, h_ref[:3], w_ref)
    with pytest.raises(ValueError, match="w_ref"):
        chunked_reference_kl(h_pol, w_pol, h_ref, w_ref[:4])
    with pytest.raises(ValueError, match="chunk_tokens"):
        chunked_reference_kl(h_pol, w_pol, h_ref, w_ref, chunk_tokens=0)
