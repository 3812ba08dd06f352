"""RMT (arXiv 2509.24375): budget schedule, tier curriculum, position sampling and the dual loss, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rl.credit.config import RMTConfig
from rl.credit.rmt import (
    budget,
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


Z = 4.5  # binomial tolerance in standard deviations: two-sided false alarm ~7e-6 per count (normal approx.)


def within_binomial(count: float, trials: int, p: float) -> bool:
    return abs(count - trials * p) <= Z * math.sqrt(trials * p * (1 - p))


@pytest.mark.parametrize("progress, p_t", [(0.0, (0.6, 0.3, 0.1)), (0.5, (0.35, 0.3, 0.35)), (1.0, (0.1, 0.3, 0.6))])
def test_sample_positions_frequencies_follow_p_t(progress: float, p_t: tuple[float, float, float]) -> None:
    """Tiers of 100 positions and 10 draws per call: no tier runs out, so every draw's tier is an
    independent Categorical(p_t) and each tier's count over 200 calls is Binomial(2000, p_d)."""
    gen = torch.Generator().manual_seed(1)
    ent = torch.arange(300.0)[None]  # terciles: positions 0-99 easy, 100-199 medium, 200-299 hard
    counts = torch.zeros(3)
    for _ in range(200):
        picks = sample_positions(ent, torch.ones(1, 300), 10, progress, gen, RMTConfig())
        counts += torch.bincount(picks[:, 1] // 100, minlength=3)
    assert counts.sum() == 2000
    for d in range(3):
        assert within_binomial(float(counts[d]), 2000, p_t[d]), (d, counts.tolist())


def exact_tier_counts(p: list[float], sizes: list[int], n: int) -> dict[tuple[int, ...], float]:
    """P(tier counts) of n draws: each picks a tier from p restricted to tiers with positions left,
    renormalised (any tier left when those have probability 0); enumerated over every draw sequence."""
    out: dict[tuple[int, ...], float] = {}

    def walk(taken: tuple[int, ...], prob: float, left: int) -> None:
        if left == 0:
            out[taken] = out.get(taken, 0.0) + prob
            return
        avail = [d for d in range(3) if taken[d] < sizes[d]]
        weights = [p[d] for d in avail]
        if sum(weights) == 0:
            weights = [1.0] * len(avail)
        for d, w in zip(avail, weights):
            if w > 0:
                walk(tuple(t + (i == d) for i, t in enumerate(taken)), prob * w / sum(weights), left - 1)

    walk((0, 0, 0), 1.0, n)
    return out


def test_sample_positions_renormalise_over_tiers_left_exact_probabilities() -> None:
    """2 positions per tier and 4 draws at p_t2 = (0.1, 0.3, 0.6): tiers run out, so the draws are not
    independent. The six outcomes' exact probabilities (by enumeration) against 4000 seeded calls."""
    ent = torch.tensor([[0.1, 0.2, 0.5, 0.6, 0.9, 1.0]])  # terciles: a = 0.2, b = 0.6 -> 2 per tier
    exact = exact_tier_counts([0.1, 0.3, 0.6], [2, 2, 2], 4)
    assert len(exact) == 6 and sum(exact.values()) == pytest.approx(1.0)
    # by hand, (0, 2, 2) = no easy draw, over its 6 orders (a tier that ran out leaves the weights):
    #   mmhh .3*.3*(.6/.7)*(.6/.7) = .066122   mhmh .3*.6*.3*(.6/.7) = .046286   mhhm .3*.6*.6*(.3/.4) = .081
    #   hmmh .6*.3*.3*(.6/.7)      = .046286   hmhm .6*.3*.6*(.3/.4) = .081      hhmm .6*.6*(.3/.4)^2 = .2025
    assert exact[(0, 2, 2)] == pytest.approx(0.523194, abs=1e-6)
    gen = torch.Generator().manual_seed(3)
    seen: dict[tuple[int, ...], int] = {}
    trials = 4000
    for _ in range(trials):
        picks = sample_positions(ent, torch.ones(1, 6), 4, 1.0, gen, RMTConfig())
        key = tuple(torch.bincount(picks[:, 1] // 2, minlength=3).tolist())
        seen[key] = seen.get(key, 0) + 1
    assert set(seen) <= set(exact)
    for outcome, prob in exact.items():
        assert within_binomial(seen.get(outcome, 0), trials, prob), (outcome, seen.get(outcome, 0), trials * prob)


def test_ntp_loss_on_the_other_positions_by_hand() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    other = other_positions_mask(mask, torch.tensor([[0, 1], [1, 0]]))  # C = {(0,1), (1,0)}
    assert other.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    assert float(ntp_loss(logp, other, "sum")) == pytest.approx(1 + 3 + 5)
    assert float(ntp_loss(logp, other, "mean")) == pytest.approx(9 / 3)
    # a micro-batch's share of a mean over 6 tokens of a step spread over micro-batches and ranks
    assert float(ntp_loss(logp, other, "mean", normaliser=6)) == pytest.approx(9 / 6)
    with pytest.raises(ValueError, match="reduction"):
        ntp_loss(logp, other, "max")


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="algorithm.rmt.p_t1"):
        RMTConfig(p_t1=[0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="algorithm.rmt.t1/t2"):
        RMTConfig(t1=0.8, t2=0.2)
