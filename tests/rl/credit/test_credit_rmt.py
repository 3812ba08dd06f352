"""RMT (arXiv 2509.24375): budget schedule, tier curriculum, position sampling and the dual loss, by hand."""

from __future__ import annotations

import pytest
import torch

from rl.credit.config import RMTConfig
from rl.credit.rmt import (
    budget,
    dual_loss,
    entropy_tiers,
    ntp_loss,
    other_positions_mask,
    sample_positions,
    tier_probs,
)


def test_budget_schedule_by_hand() -> None:
    cfg = RMTConfig()  # B_0 = 800, gamma = 0.2, B_min = 1
    assert budget(0, 100, cfg) == 800
    assert budget(50, 100, cfg) == 357  # floor(800 * 0.2^0.5) = floor(357.77)
    assert budget(100, 100, cfg) == 160  # floor(800 * 0.2) = floor(160.0000...) even with float noise
    assert budget(100, 100, RMTConfig(budget_init=4, budget_min=2)) == 2  # floor(0.8) -> B_min
    assert budget(100, 100, RMTConfig(budget_k=0.5)) == 1  # t / T^0.5 = 10: 800 * 0.2^10 < 1


def test_tier_probs_interpolate_between_transitions() -> None:
    cfg = RMTConfig()  # t1 = 0.3, t2 = 0.7
    assert tier_probs(0.0, cfg).tolist() == pytest.approx([0.6, 0.3, 0.1])
    assert tier_probs(0.29, cfg).tolist() == pytest.approx([0.6, 0.3, 0.1])
    assert tier_probs(0.5, cfg).tolist() == pytest.approx([0.35, 0.3, 0.35])
    assert tier_probs(0.7, cfg).tolist() == pytest.approx([0.1, 0.3, 0.6])
    assert tier_probs(1.0, cfg).tolist() == pytest.approx([0.1, 0.3, 0.6])


def test_entropy_tiers_terciles_ties_and_fixed_bounds() -> None:
    ent = torch.tensor([[0.1, 0.5, 0.9, 0.2, 0.7, 0.3], [5.0, 5.0, 5.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]])
    # 6 values sorted 0.1 0.2 0.3 0.5 0.7 0.9: a = 2nd = 0.2, b = 4th = 0.5
    assert entropy_tiers(ent, mask, RMTConfig()).tolist() == [[0, 1, 2, 0, 2, 1], [-1] * 6]
    ties = torch.tensor([[1.0, 1.0, 1.0, 2.0]])
    assert entropy_tiers(ties, torch.ones(1, 4), RMTConfig()).tolist() == [[0, 0, 0, 2]]
    fixed = RMTConfig(tier_bounds=[0.25, 0.6])
    assert entropy_tiers(ent[:1], mask[:1], fixed).tolist() == [[0, 1, 2, 0, 2, 1]]


def test_sample_positions_follow_the_scheduled_tier_then_fall_back() -> None:
    ent = torch.tensor([[0.1, 0.5, 0.9, 0.2, 0.7, 0.3, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    cfg = RMTConfig(p_t1=[0.0, 0.0, 1.0], p_t2=[0.0, 0.0, 1.0])  # only "hard" is scheduled
    gen = torch.Generator().manual_seed(0)
    hard = sample_positions(ent, mask, 2, 0.0, gen, cfg)
    assert sorted(hard[:, 1].tolist()) == [2, 4]  # the hard tier is {0.9, 0.7}
    more = sample_positions(ent, mask, 4, 0.0, gen, cfg)  # hard exhausted -> the rest come from other tiers
    assert sorted(more[:, 1].tolist())[-2:] == [2, 4] and len(set(more[:, 1].tolist())) == 4
    everything = sample_positions(ent, mask, 50, 0.0, gen, cfg)  # more than exist: all valid, distinct
    assert sorted(everything[:, 1].tolist()) == [0, 1, 2, 3, 4, 5]


def test_sample_positions_frequencies_follow_p_t() -> None:
    gen = torch.Generator().manual_seed(1)
    ent = torch.arange(300.0)[None]  # 100 per tier
    cfg = RMTConfig()
    counts = torch.zeros(3)
    for _ in range(20):
        picks = sample_positions(ent, torch.ones(1, 300), 10, 1.0, gen, cfg)  # p_t2 = (0.1, 0.3, 0.6)
        counts += torch.bincount(picks[:, 1] // 100, minlength=3)
    assert counts[2] > counts[1] > counts[0]


def test_ntp_loss_on_the_other_positions_by_hand() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    other = other_positions_mask(mask, torch.tensor([[0, 1], [1, 0]]))  # C = {(0,1), (1,0)}
    assert other.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert float(ntp_loss(logp, other, "sum")) == pytest.approx(1 + 3 + 5)
    assert float(ntp_loss(logp, other, "mean")) == pytest.approx(9 / 3)
    assert float(dual_loss(torch.tensor(2.0), logp, other, RMTConfig())) == pytest.approx(2.0 + 0.1 * 3.0)
    with pytest.raises(ValueError, match="reduction"):
        ntp_loss(logp, other, "max")


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="algorithm.rmt.p_t1"):
        RMTConfig(p_t1=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="algorithm.rmt.t1/t2"):
        RMTConfig(t1=0.8, t2=0.2)
