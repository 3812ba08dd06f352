"""KL estimators and their two uses (rl/algorithms/kl.py)."""

import math

import pytest
import torch

from rl.algorithms.kl import kl_estimate, kl_loss, kl_penalty_reward

F64 = torch.float64
LN2 = math.log(2.0)


def test_hand_worked_k1_k3():
    # pi = 0.5, ref = 0.25: d = ln(ref/pi) = -ln2;  k1 = ln2;  k3 = 0.5 + ln2 - 1 = 0.1931472
    # pi = 0.25, ref = 0.5: d = ln2;               k1 = -ln2; k3 = 2 - ln2 - 1 = 0.3068528
    # equal: both 0
    logp = torch.log(torch.tensor([0.5, 0.25, 0.3], dtype=F64))
    ref = torch.log(torch.tensor([0.25, 0.5, 0.3], dtype=F64))
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([LN2, -LN2, 0.0], dtype=F64))
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.tensor([0.5 + LN2 - 1, 1 - LN2, 0.0], dtype=F64))


def test_estimators_are_unbiased_by_enumeration():
    # E_{y~pi}[k] summed over the whole 3-token vocabulary equals KL(pi || ref) exactly.
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=F64)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=F64)
    exact = sum(p * math.log(p / q) for p, q in zip(pi.tolist(), ref.tolist()))
    for est in ("k1", "k3"):
        expect = (pi * kl_estimate(pi.log(), ref.log(), est)).sum().item()
        assert expect == pytest.approx(exact, rel=1e-12), est


def test_k3_gradient_and_ref_is_detached():
    # d k3 / d logp = 1 - exp(ref - logp) = 1 - 0.25/0.5 = 0.5
    logp = torch.tensor([math.log(0.5)], dtype=F64, requires_grad=True)
    ref = torch.tensor([math.log(0.25)], dtype=F64, requires_grad=True)
    kl_estimate(logp, ref, "k3").sum().backward()
    assert logp.grad.item() == pytest.approx(0.5)
    assert ref.grad is None


def test_k3_is_clamped_for_far_apart_policies():
    # d = -50 -> clamped to -20 -> e^-20 + 20 - 1 ~= 19 -> clamped to 10
    out = kl_estimate(torch.tensor([0.0], dtype=F64), torch.tensor([-50.0], dtype=F64), "k3")
    assert out.item() == 10.0
    out = kl_estimate(torch.tensor([-50.0], dtype=F64), torch.tensor([0.0], dtype=F64), "k3")
    assert math.isfinite(out.item()) and out.item() == 10.0


def test_kl_loss_is_masked_and_scaled():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.9]], dtype=F64))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.1]], dtype=F64))
    mask = torch.tensor([[1, 1, 0]], dtype=F64)
    out = kl_loss(logp, ref, mask, coef=0.1, estimator="k1")
    torch.testing.assert_close(out, torch.tensor([[0.1 * LN2, -0.1 * LN2, 0.0]], dtype=F64))


def test_kl_penalty_reward():
    # row 0: k1 over loss tokens = ln2 + ln2 = 2 ln2 -> reward 1 - 0.5 * 2 ln2 = 1 - ln2
    # row 1: k1 = -ln2 (the masked token is ignored) -> reward 0 + 0.5 ln2
    old = torch.log(torch.tensor([[0.5, 0.5], [0.25, 0.9]], dtype=F64)).requires_grad_(True)
    ref = torch.log(torch.tensor([[0.25, 0.25], [0.5, 0.1]], dtype=F64))
    mask = torch.tensor([[1, 1], [1, 0]], dtype=F64)
    rewards = torch.tensor([1.0, 0.0], dtype=F64)
    shaped, per_row = kl_penalty_reward(rewards, old, ref, mask, coef=0.5, estimator="k1")
    torch.testing.assert_close(per_row, torch.tensor([2 * LN2, -LN2], dtype=F64))
    torch.testing.assert_close(shaped, torch.tensor([1 - LN2, 0.5 * LN2], dtype=F64))
    assert not shaped.requires_grad


def test_bad_estimator_and_shapes():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="algorithm.kl.estimator"):
        kl_estimate(x, x, "k2")
    with pytest.raises(ValueError, match="differ"):
        kl_estimate(x, x[:, :2], "k1")
    with pytest.raises(ValueError, match="rewards"):
        kl_penalty_reward(torch.zeros(3), x, x, x, coef=0.1)
