"""Clip / GSPO / GSPO-token losses on hand-worked ratios (rl/algorithms/policy_loss.py)."""

import math

import pytest
import torch

from rl.algorithms import policy_loss as pl
from rl.algorithms.aggregation import aggregate
from rl.algorithms.registry import POLICY_LOSSES

F64 = torch.float64


def _log(x):
    return torch.log(torch.tensor(x, dtype=F64))


def test_registry_names():
    assert {"clip", "gspo", "gspo_token"} <= set(POLICY_LOSSES)


# --- clip ----------------------------------------------------------------------------------------
# eps_low = 0.2 (ratio floor 0.8), eps_high = 0.28 (ceiling 1.28), dual_clip c = 3.
# Row 0, A = +1, ratios [1.1, 1.5, 0.5, pad]:
#   1.1: -min(1.1, 1.1)            = -1.1   grad d/dlogp = -A*rho = -1.1
#   1.5: -min(1.5, 1.28)           = -1.28  clipped high, grad 0
#   0.5: -min(0.5, 0.8)            = -0.5   (clip does not bind for A>0 below 1), grad -0.5
#   pad: log-ratio 100 (garbage)   ->  0, excluded from metrics
# Row 1, A = -1, ratios [0.5, 1.5, 4.0, pad]:
#   0.5: -min(-0.5, -0.8) = 0.8    clipped low, grad 0
#   1.5: -min(-1.5, -1.28) = 1.5   grad -A*rho = 1.5; below the dual cap 3
#   4.0: -min(-4, -1.28) = 4 -> dual cap min(4, -A*c = 3) = 3, grad 0  (without dual clip: 4, grad 4)
RATIOS = [[1.1, 1.5, 0.5, 1.0], [0.5, 1.5, 4.0, 1.0]]
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=F64)
ADV = torch.tensor([[1.0] * 4, [-1.0] * 4], dtype=F64)


def _clip_inputs():
    logp = _log(RATIOS)
    logp[0, 3] = 100.0
    logp.requires_grad_(True)
    return logp, torch.zeros(2, 4, dtype=F64)


def test_clip_hand_worked_with_dual_clip():
    logp, old = _clip_inputs()
    loss, m = POLICY_LOSSES["clip"](logp, old, ADV, MASK, eps_low=0.2, eps_high=0.28, dual_clip=3.0)
    expected = torch.tensor([[-1.1, -1.28, -0.5, 0.0], [0.8, 1.5, 3.0, 0.0]], dtype=F64)
    torch.testing.assert_close(loss, expected)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    torch.testing.assert_close(grad, torch.tensor([[-1.1, 0, -0.5, 0], [0, 1.5, 0, 0]], dtype=F64))
    # metrics over the 6 loss tokens
    assert m["clip_frac_high"].item() == pytest.approx(1 / 6)
    assert m["clip_frac_low"].item() == pytest.approx(1 / 6)
    assert m["dual_clip_frac"].item() == pytest.approx(1 / 6)
    assert m["ratio_mean"].item() == pytest.approx(9.1 / 6)
    assert m["ratio_max"].item() == pytest.approx(4.0)  # the e^20 padding ratio is excluded
    # approx KL = mean((r-1) - ln r) = (0.0046898+0.0945349+0.1931472+0.1931472+0.0945349+1.6137056)/6
    assert m["approx_kl"].item() == pytest.approx(2.1937596 / 6, abs=1e-7)
    assert all(not v.requires_grad and v.dim() == 0 for v in m.values())


def test_clip_without_dual_clip_lets_large_negative_ratio_through():
    logp, old = _clip_inputs()
    loss, m = POLICY_LOSSES["clip"](logp, old, ADV, MASK, eps_low=0.2, eps_high=0.28)
    assert loss[1, 2].item() == pytest.approx(4.0)
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    assert grad[1, 2].item() == pytest.approx(4.0)
    assert m["dual_clip_frac"].item() == 0.0


def test_clip_asymmetric_boundaries_are_not_clipped():
    # Choose eps so that 1+eps_high and 1-eps_low equal the float ratios exactly:
    # for r in [0.5, 2], (r - 1) + 1 == r and 1 - (1 - r) == r are exact (Sterbenz).
    lr = _log([[1.25, 0.75]])
    r = torch.exp(lr)
    eps_high = float(r[0, 0] - 1.0)
    eps_low = float(1.0 - r[0, 1])
    assert 1.0 + eps_high == r[0, 0].item() and 1.0 - eps_low == r[0, 1].item()
    logp = lr.clone().requires_grad_(True)
    adv = torch.tensor([[2.0, -2.0]], dtype=F64)
    mask = torch.ones(1, 2, dtype=F64)
    loss, m = POLICY_LOSSES["clip"](logp, torch.zeros(1, 2, dtype=F64), adv, mask, eps_low=eps_low, eps_high=eps_high)
    torch.testing.assert_close(loss, torch.tensor([[-2 * r[0, 0], 2 * r[0, 1]]], dtype=F64))
    assert m["clip_frac_high"].item() == 0.0 and m["clip_frac_low"].item() == 0.0
    (grad,) = torch.autograd.grad(loss.sum(), logp)
    # At the boundary the clipped and unclipped branches agree, so the gradient is -A*rho.
    torch.testing.assert_close(grad, torch.tensor([[-2 * r[0, 0], 2 * r[0, 1]]], dtype=F64))
    # Just past the boundary the gradient vanishes and the token counts as clipped.
    past = (lr + torch.tensor([[1e-9, -1e-9]], dtype=F64)).requires_grad_(True)
    loss2, m2 = POLICY_LOSSES["clip"](past, torch.zeros(1, 2, dtype=F64), adv, mask, eps_low=eps_low, eps_high=eps_high)
    (g2,) = torch.autograd.grad(loss2.sum(), past)
    assert torch.equal(g2, torch.zeros(1, 2, dtype=F64))
    assert m2["clip_frac_high"].item() == 0.5 and m2["clip_frac_low"].item() == 0.5


def test_clip_dual_clip_must_exceed_one():
    logp, old = _clip_inputs()
    with pytest.raises(ValueError, match="dual_clip"):
        POLICY_LOSSES["clip"](logp, old, ADV, MASK, eps_low=0.2, eps_high=0.2, dual_clip=0.5)


def test_clip_empty_mask_gives_zero_loss_and_zero_metrics():
    logp, old = _clip_inputs()
    loss, m = POLICY_LOSSES["clip"](logp, old, ADV, torch.zeros_like(MASK), eps_low=0.2, eps_high=0.2)
    assert torch.equal(loss, torch.zeros_like(loss))
    assert all(v.item() == 0.0 for v in m.values())


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        POLICY_LOSSES["clip"](torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3),
                              eps_low=0.2, eps_high=0.2)


# --- gspo ----------------------------------------------------------------------------------------
# eps 0.2 / 0.28.  logp - old_logp and masks:
#   row 0: [0.2, -0.1, (0.5 masked)]  mean 0.05, s = e^0.05 = 1.0512711, A = +1  -> -s (unclipped)
#   row 1: [0.3, 0.3, 0.3]            mean 0.3,  s = e^0.3  = 1.3498588, A = +2  -> -2*1.28 = -2.56 (clipped)
#   row 2: [-0.6, -0.2, (9 masked)]   mean -0.4, s = e^-0.4 = 0.6703200, A = -1  -> -min(-0.67, -0.8) = 0.8
GS_DELTA = torch.tensor([[0.2, -0.1, 0.5], [0.3, 0.3, 0.3], [-0.6, -0.2, 9.0]], dtype=F64)
GS_MASK = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 0]], dtype=F64)
GS_ADV = torch.tensor([[1.0] * 3, [2.0] * 3, [-1.0] * 3], dtype=F64)


def _gspo_inputs():
    old = torch.full((3, 3), -1.0, dtype=F64)
    return (old + GS_DELTA).requires_grad_(True), old


def test_gspo_hand_worked_sequence_ratio():
    logp, old = _gspo_inputs()
    loss, m = POLICY_LOSSES["gspo"](logp, old, GS_ADV, GS_MASK, eps_low=0.2, eps_high=0.28)
    s0 = math.exp(0.05)
    expected = torch.tensor([[-s0, -s0, 0.0], [-2.56] * 3, [0.8, 0.8, 0.0]], dtype=F64)
    torch.testing.assert_close(loss, expected)
    # d(loss[0, 0])/d logp[0, t] = -A * s0 / |y_0| on both loss tokens; clipped rows: no gradient.
    (grad,) = torch.autograd.grad(loss[:, 0].sum(), logp)
    torch.testing.assert_close(grad, torch.tensor([[-s0 / 2, -s0 / 2, 0], [0, 0, 0], [0, 0, 0]], dtype=F64))
    # metrics weight each row by its 2, 3, 2 loss tokens: high-clipped row 1 -> 3/7, low-clipped row 2 -> 2/7
    assert m["clip_frac_high"].item() == pytest.approx(3 / 7)
    assert m["clip_frac_low"].item() == pytest.approx(2 / 7)
    assert m["ratio_mean"].item() == pytest.approx((2 * s0 + 3 * math.exp(0.3) + 2 * math.exp(-0.4)) / 7)


def test_gspo_rejects_per_token_advantages():
    logp, old = _gspo_inputs()
    adv = GS_ADV.clone()
    adv[1, 2] = 5.0
    with pytest.raises(ValueError, match=r"rows \[1\].*gspo_token"):
        POLICY_LOSSES["gspo"](logp, old, adv, GS_MASK, eps_low=0.2, eps_high=0.28)
    # a different value under the mask (padding) is fine
    adv = GS_ADV.clone()
    adv[0, 2] = 5.0
    POLICY_LOSSES["gspo"](logp, old, adv, GS_MASK, eps_low=0.2, eps_high=0.28)


def test_gspo_token_matches_gspo_for_sequence_advantages():
    # Same forward values, and under seq_mean_token_mean the same gradient (arXiv 2507.18071 §4.3).
    logp, old = _gspo_inputs()
    adv = GS_ADV.clone()
    adv[1] = -0.5  # A<0 and s=1.35: loss max(0.675, 0.64) takes the unclipped branch, so row 1 has a gradient
    lg, _ = POLICY_LOSSES["gspo"](logp, old, adv, GS_MASK, eps_low=0.2, eps_high=0.28)
    lt, _ = POLICY_LOSSES["gspo_token"](logp, old, adv, GS_MASK, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close(lt, lg)
    (gg,) = torch.autograd.grad(aggregate(lg, GS_MASK, "seq_mean_token_mean"), logp)
    (gt,) = torch.autograd.grad(aggregate(lt, GS_MASK, "seq_mean_token_mean"), logp)
    torch.testing.assert_close(gt, gg)
    assert gg.abs().sum() > 0


def test_gspo_token_per_token_advantage_by_hand():
    # One row, loss tokens 0 and 1: mean delta 0.05, s = e^0.05; A = [+1, -1].
    #   token 0: -min(s, s) = -s,       d/dlogp_0 = -A_0 * s = -s, d/dlogp_1 = 0
    #   token 1: -min(-s, -s) = s,      d/dlogp_1 = -A_1 * s = +s
    s = math.exp(0.05)
    old = torch.zeros(1, 3, dtype=F64)
    logp = torch.tensor([[0.2, -0.1, 7.0]], dtype=F64, requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 3.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0]], dtype=F64)
    loss, _ = POLICY_LOSSES["gspo_token"](logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close(loss, torch.tensor([[-s, s, 0.0]], dtype=F64))
    (g0,) = torch.autograd.grad(loss[0, 0], logp, retain_graph=True)
    (g1,) = torch.autograd.grad(loss[0, 1], logp)
    torch.testing.assert_close(g0, torch.tensor([[-s, 0, 0]], dtype=F64))
    torch.testing.assert_close(g1, torch.tensor([[0, s, 0]], dtype=F64))


def test_gspo_token_ratio_is_clamped():
    # log s = 50 is clamped to 10: with A=-1 and no dual clip, loss = e^10 (finite), not e^50.
    logp = torch.full((1, 2), 50.0, dtype=F64)
    loss, _ = POLICY_LOSSES["gspo_token"](logp, torch.zeros(1, 2, dtype=F64), -torch.ones(1, 2, dtype=F64),
                                          torch.ones(1, 2, dtype=F64), eps_low=0.2, eps_high=0.2)
    torch.testing.assert_close(loss, torch.full((1, 2), math.exp(10.0), dtype=F64))


def _algo(**kw):
    base = {"advantage": "grpo", "policy_loss": "clip", "aggregation": "token_mean", "eps_low": 0.2,
            "eps_high": 0.2, "credit": [], "dynamic_sampling": {"enable": False, "criterion": "accuracy"}}
    return {**base, **kw}


def test_paper_mismatches_from_the_table():
    bad = pl.paper_mismatches(_algo(policy_loss="gspo", eps_low=3e-4, eps_high=4e-4))
    assert [keys for keys, _ in bad] == [["algorithm.aggregation"]] and "arXiv 2507.18071" in bad[0][1]
    assert pl.paper_mismatches(_algo(policy_loss="gspo_token", aggregation="seq_mean_token_mean",
                                     eps_low=0.0003, eps_high=0.0004)) == []
    assert pl.paper_mismatches(_algo()) == []  # clip + token_mean: no paper fixes the pair
    tw = pl.paper_mismatches(_algo(credit=["d3s", "tw"], eps_high=0.2))
    assert [keys for keys, _ in tw] == [["algorithm.eps_high"]] and "TW-GRPO" in tw[0][1]
    assert "gspo" in pl.SEQUENCE_LEVEL and "clip" not in pl.SEQUENCE_LEVEL


# --- sequence ratio over the completion, loss over the loss mask (issue 12) ------------------------
# One row of |y| = 3 completion tokens (+1 pad); a credit module (D3S token top-K / THR mask) dropped
# token 1 from the loss. logp - old_logp = [0.2, -0.5, 0.1, (9 pad)].
#   spec §1: s = exp((1/|y|) sum_t delta_t) = exp((0.2 - 0.5 + 0.1) / 3) = exp(-1/15) = 0.9355070
#   (over the kept tokens only it would be exp((0.2 + 0.1) / 2) = exp(0.15) = 1.1618342 - the bug).
# eps 0.2 / 0.28: 0.8 < s < 1.28, so no clip binds.
SR_DELTA = torch.tensor([[0.2, -0.5, 0.1, 9.0]], dtype=F64)
SR_COMPLETION = torch.tensor([[1, 1, 1, 0]], dtype=F64)
SR_LOSS_MASK = torch.tensor([[1, 0, 1, 0]], dtype=F64)
SR_S = math.exp(-1.0 / 15.0)


def _sr_inputs():
    old = torch.full((1, 4), -2.0, dtype=F64)
    return (old + SR_DELTA).requires_grad_(True), old


def test_every_policy_loss_takes_completion_mask_keyword():
    import inspect

    for name, fn in POLICY_LOSSES.items():
        p = inspect.signature(fn).parameters.get("completion_mask")
        assert p is not None and p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None, name


def test_gspo_sequence_ratio_over_completion_mask_loss_over_loss_mask():
    logp, old = _sr_inputs()
    adv = torch.ones(1, 4, dtype=F64)  # A = +1 -> l = -s on every loss token
    loss, m = POLICY_LOSSES["gspo"](logp, old, adv, SR_LOSS_MASK, eps_low=0.2, eps_high=0.28,
                                    completion_mask=SR_COMPLETION)
    torch.testing.assert_close(loss, torch.tensor([[-SR_S, 0.0, -SR_S, 0.0]], dtype=F64))
    # s depends on all |y| = 3 tokens: d(-s)/d logp_t = -s/3 for t = 0, 1, 2 (the dropped token too)
    (grad,) = torch.autograd.grad(loss[0, 0], logp)
    torch.testing.assert_close(grad, torch.tensor([[-SR_S / 3] * 3 + [0.0]], dtype=F64))
    assert m["ratio_mean"].item() == pytest.approx(SR_S)
    # without completion_mask the ratio falls back to the loss mask (the old reading)
    loss_fb, _ = POLICY_LOSSES["gspo"](logp, old, adv, SR_LOSS_MASK, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close(loss_fb[0, 0], torch.tensor(-math.exp(0.15), dtype=F64))


def test_gspo_token_sequence_ratio_over_completion_mask_loss_over_loss_mask():
    logp, old = _sr_inputs()
    adv = torch.tensor([[1.0, 5.0, -1.0, 3.0]], dtype=F64)  # per-token A; token 1 and pad are out of the loss
    loss, m = POLICY_LOSSES["gspo_token"](logp, old, adv, SR_LOSS_MASK, eps_low=0.2, eps_high=0.28,
                                          completion_mask=SR_COMPLETION)
    # token 0: -min(s*1, clip(s)*1) = -s; token 2: -min(-s, -clip(s)) = s
    torch.testing.assert_close(loss, torch.tensor([[-SR_S, 0.0, SR_S, 0.0]], dtype=F64))
    # the gradient flows through the kept token only: d/dlogp_t of s_t = sg[s] pi_t / sg[pi_t] is s at t
    (g0,) = torch.autograd.grad(loss[0, 0], logp, retain_graph=True)
    (g2,) = torch.autograd.grad(loss[0, 2], logp)
    torch.testing.assert_close(g0, torch.tensor([[-SR_S, 0.0, 0.0, 0.0]], dtype=F64))
    torch.testing.assert_close(g2, torch.tensor([[0.0, 0.0, SR_S, 0.0]], dtype=F64))
    assert m["ratio_mean"].item() == pytest.approx(SR_S)


def test_clip_accepts_and_ignores_completion_mask():
    logp, old = _clip_inputs()
    a, ma = POLICY_LOSSES["clip"](logp, old, ADV, MASK, eps_low=0.2, eps_high=0.28)
    b, mb = POLICY_LOSSES["clip"](logp, old, ADV, MASK, eps_low=0.2, eps_high=0.28,
                                  completion_mask=torch.ones_like(MASK))
    torch.testing.assert_close(a, b)
    assert {k: float(v) for k, v in ma.items()} == {k: float(v) for k, v in mb.items()}
