"""TW-GRPO (arXiv 2505.24718): streamed weights vs a direct [B, G, T, V] computation of spec §4 steps 1-8."""

from __future__ import annotations

import math

import pytest
import torch

from rl.credit.base import CreditContext, PolicySnapshot
from rl.credit.config import TWConfig
from rl.credit.tw import TWGRPO, tw_weights
from rl.experience import Experience

B, G, T, V, DIM = 2, 3, 5, 7, 4


def direct_weights(logits: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spec §4 written out over the whole [B, G, T, V] tensor (the official code's shape)."""
    b, g, t, v = logits.shape
    lp = torch.log_softmax(logits.double(), -1)                              # 1
    lp = torch.where(mask[..., None] > 0, lp, torch.full_like(lp, -math.log(v)))  # 2
    mean_lp = lp.mean(1, keepdim=True)                                       # 3
    delta = (mean_lp - lp).clamp(-11, 11)                                    # 4
    d = (torch.exp(delta) - delta - 1).sum(-1).mean(1)                       # 4-5 -> [B, T]
    lo, hi = d.min(1, keepdim=True).values, d.max(1, keepdim=True).values    # 6
    w = 1 + (alpha - 1) * (d - lo) / (hi - lo + 1e-8)                        # 7
    return w.repeat_interleave(g, 0) * mask.reshape(b * g, t)                # 8


def direct_weights_live_rows_only(logits: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """include_padding=False: means over running responses; positions with < 2 of them get weight 1."""
    g, t, _ = logits.shape
    lp = torch.log_softmax(logits.double(), -1)
    w = torch.ones(t, dtype=torch.float64)
    d = {}
    for pos in range(t):
        rows = [r for r in range(g) if mask[r, pos] > 0]
        if len(rows) < 2:
            continue
        mean_lp = sum(lp[r, pos] for r in rows) / len(rows)
        d[pos] = sum(((mean_lp - lp[r, pos]).clamp(-11, 11).exp() - (mean_lp - lp[r, pos]).clamp(-11, 11) - 1).sum()
                     for r in rows) / len(rows)
    lo, hi = min(d.values()), max(d.values())
    for pos, val in d.items():
        w[pos] = 1 + (alpha - 1) * (val - lo) / (hi - lo + 1e-8)
    return w


def setup(seed: int = 0, lengths: list[list[int]] | None = None):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(V, DIM, generator=gen) * 1.5
    hidden = torch.randn(B * G, T, DIM, generator=gen)
    lengths = lengths or [[5, 3, 4], [2, 4, 1]]  # group 1 is shorter than the batch width
    lens = torch.tensor(lengths).flatten()
    mask = (torch.arange(T)[None, :] < lens[:, None]).float()
    logits = (hidden @ w.T).reshape(B, G, T, V)
    exp = Experience(
        prompt_ids=torch.zeros(B * G, 1, dtype=torch.long), prompt_mask=torch.ones(B * G, 1),
        completion_ids=torch.zeros(B * G, T, dtype=torch.long), completion_mask=mask,
        group_id=torch.arange(B).repeat_interleave(G), rewards=torch.zeros(B * G), hidden=hidden)
    policy = PolicySnapshot(w, None, temperature=0.6)  # raw logits are used by default, like the official code
    return exp, policy, logits, mask


def test_batch_span_with_padding_equals_the_official_computation() -> None:
    exp, policy, logits, mask = setup()
    cfg = TWConfig(alpha=1.7, positions="batch", vocab_chunk=3, token_chunk=2)
    TWGRPO(cfg).apply(exp, CreditContext(0, 10, policy=policy))
    expected = direct_weights(logits, mask.reshape(B, G, T), 1.7)
    torch.testing.assert_close(exp.token_weight.double(), expected, rtol=1e-5, atol=1e-5)


def test_group_span_equals_the_official_computation_on_the_groups_own_width() -> None:
    exp, policy, logits, mask = setup()
    TWGRPO(TWConfig(alpha=1.4, vocab_chunk=4, token_chunk=3)).apply(exp, CreditContext(0, 10, policy=policy))
    m = mask.reshape(B, G, T)
    for b, width in ((0, 5), (1, 4)):  # longest response of group 0: 5, of group 1: 4
        expected = direct_weights(logits[b : b + 1, :, :width], m[b : b + 1, :, :width], 1.4)
        got = exp.token_weight[b * G : (b + 1) * G, :width]
        torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)
    # the shorter group really differs from the batch-width version (min pulled to 0 there)
    batch = direct_weights(logits, m, 1.4)[G:]
    assert not torch.allclose(exp.token_weight[G:].double(), batch, atol=1e-3)


def test_live_rows_only_variant() -> None:
    exp, policy, logits, mask = setup(seed=1)
    TWGRPO(TWConfig(include_padding=False, vocab_chunk=2)).apply(exp, CreditContext(0, 10, policy=policy))
    m = mask.reshape(B, G, T)
    for b in range(B):
        expected = direct_weights_live_rows_only(logits[b], m[b], 1.7)[None, :] * m[b]
        torch.testing.assert_close(exp.token_weight[b * G : (b + 1) * G].double(), expected, rtol=1e-5, atol=1e-5)


def test_weights_lie_in_one_alpha_and_reach_both_ends() -> None:
    exp, policy, _, mask = setup(seed=2)
    TWGRPO(TWConfig(alpha=2.5)).apply(exp, CreditContext(0, 10, policy=policy))
    w = exp.token_weight[mask > 0]
    assert float(w.min()) >= 1.0 - 1e-6 and float(w.max()) <= 2.5 + 1e-6
    assert float(w.max()) == pytest.approx(2.5, abs=1e-5) and float(w.min()) == pytest.approx(1.0, abs=1e-5)
    assert torch.equal(exp.token_weight[mask == 0], torch.zeros(int((mask == 0).sum())))


def test_temperature_scaled_switch_uses_logits_over_temperature() -> None:
    exp, policy, logits, mask = setup(seed=3)
    TWGRPO(TWConfig(positions="batch", temperature_scaled=True)).apply(exp, CreditContext(0, 10, policy=policy))
    expected = direct_weights(logits / 0.6, mask.reshape(B, G, T), 1.7)
    torch.testing.assert_close(exp.token_weight.double(), expected, rtol=1e-5, atol=1e-5)


def test_function_is_differentiable_on_a_small_full_tensor() -> None:
    logits = torch.randn(G, T, V, generator=torch.Generator().manual_seed(4), requires_grad=True)
    mask = torch.ones(G, T)
    w = tw_weights(lambda ts, vs: logits[:, ts, vs], mask, V, alpha=1.7, vocab_chunk=3, token_chunk=2)
    torch.testing.assert_close(w.double(), direct_weights(logits.detach()[None], mask[None], 1.7)[0])
    w.sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_detach_false_is_a_clear_error_and_single_response_groups_get_ones() -> None:
    with pytest.raises(ValueError, match="algorithm.tw.detach"):
        TWGRPO(TWConfig(detach=False))
    one = torch.randn(1, 3, V)
    assert torch.equal(tw_weights(lambda ts, vs: one[:, ts, vs], torch.ones(1, 3), V), torch.ones(3))
