"""Truncated importance sampling weights and mismatch metrics (rl/algorithms/tis.py)."""

import math

import pytest
import torch

from rl.algorithms.tis import mismatch_metrics, tis_weights

F64 = torch.float64

# Three loss tokens and one padding position holding garbage (-inf sampler logprob, huge old_logp):
#   pi_old / pi_sampler = 0.5/0.25 = 2 -> capped at 1.5;  0.5/0.5 = 1;  0.1/0.4 = 0.25 (not raised)
OLD = torch.log(torch.tensor([[0.5, 0.5, 0.1, 1.0]], dtype=F64))
SAMPLER = torch.log(torch.tensor([[0.25, 0.5, 0.4, 0.0]], dtype=F64))  # last: -inf
MASK = torch.tensor([[1, 1, 1, 0]], dtype=F64)


def test_weights_hand_worked():
    old = OLD.clone().requires_grad_(True)
    w = tis_weights(old, SAMPLER, MASK, cap=1.5)
    torch.testing.assert_close(w, torch.tensor([[1.5, 1.0, 0.25, 0.0]], dtype=F64))
    assert not w.requires_grad


def test_mismatch_metrics_hand_worked():
    # |old - sampler| = [ln2, 0, ln4]: mean ln2, max ln4
    # k3 with d = old - sampler: d=ln2 -> 2-1-ln2 = 0.3068528; d=0 -> 0; d=-ln4 -> 0.25-1+ln4 = 0.6362944
    m = mismatch_metrics(OLD, SAMPLER, MASK, cap=1.5)
    assert m["mismatch_abs_mean"].item() == pytest.approx(math.log(2))
    assert m["mismatch_abs_max"].item() == pytest.approx(math.log(4))
    assert m["mismatch_kl"].item() == pytest.approx((1 - math.log(2) + math.log(4) - 0.75) / 3)
    assert m["tis_cap_frac"].item() == pytest.approx(1 / 3)
    assert m["tis_weight_mean"].item() == pytest.approx(2.75 / 3)
    assert all(math.isfinite(v.item()) for v in m.values())


def test_identical_policies_have_no_mismatch():
    m = mismatch_metrics(OLD, OLD, MASK)
    assert all(v.item() == 0.0 for v in m.values())
    assert "tis_cap_frac" not in m
    torch.testing.assert_close(tis_weights(OLD, OLD, MASK, cap=2.0), MASK)


def test_bad_inputs():
    with pytest.raises(ValueError, match="algorithm.tis.cap"):
        tis_weights(OLD, SAMPLER, MASK, cap=0.0)
    with pytest.raises(ValueError, match="same"):
        tis_weights(OLD, SAMPLER[:, :2], MASK, cap=2.0)
