"""Advantage estimators on hand-worked groups (rl/algorithms/advantage.py)."""

import math

import pytest
import torch

from rl.algorithms import advantage  # noqa: F401  (registers the estimators)
from rl.algorithms.registry import ADVANTAGES

F64 = torch.float64
S3 = math.sqrt(3.0)

# Two interleaved groups with non-contiguous ids 7 and 3:
#   group 7: r = [1, 0, 0]  mean 1/3, deviations [2/3, -1/3, -1/3], sum sq = 6/9,
#            unbiased var = (6/9)/2 = 1/3, std = 1/sqrt3
#            grpo = dev / std = [2/sqrt3, -1/sqrt3, -1/sqrt3]
#   group 3: r = [2, 4, 6]  mean 4, deviations [-2, 0, 2], sum sq = 8,
#            unbiased var = 8/2 = 4, std = 2  (population std sqrt(8/3) would give +-1.2247)
#            grpo = [-1, 0, 1]
GROUP_ID = torch.tensor([7, 3, 7, 3, 7, 3])
REWARDS = torch.tensor([1.0, 2.0, 0.0, 4.0, 0.0, 6.0], dtype=F64)


def test_registry_names():
    assert {"grpo", "dr_grpo", "rloo"} <= set(ADVANTAGES)


def test_grpo_hand_worked_bessel_std():
    adv = ADVANTAGES["grpo"](REWARDS, GROUP_ID, std_eps=0.0)
    expected = torch.tensor([2 / S3, -1.0, -1 / S3, 0.0, -1 / S3, 1.0], dtype=F64)
    torch.testing.assert_close(adv, expected)


def test_grpo_eps_is_added_to_std():
    adv = ADVANTAGES["grpo"](REWARDS, GROUP_ID, std_eps=0.5)
    # group 7: std 1/sqrt3 + 0.5; group 3: std 2.5
    s7 = 1 / S3 + 0.5
    expected = torch.tensor([(2 / 3) / s7, -2 / 2.5, (-1 / 3) / s7, 0.0, (-1 / 3) / s7, 2 / 2.5], dtype=F64)
    torch.testing.assert_close(adv, expected)


def test_grpo_without_std_and_dr_grpo_are_mean_centred():
    expected = torch.tensor([2 / 3, -2.0, -1 / 3, 0.0, -1 / 3, 2.0], dtype=F64)
    torch.testing.assert_close(ADVANTAGES["grpo"](REWARDS, GROUP_ID, std_normalize=False), expected)
    # Dr. GRPO never divides by std, whatever the switch says.
    torch.testing.assert_close(ADVANTAGES["dr_grpo"](REWARDS, GROUP_ID, std_normalize=True), expected)


def test_rloo_hand_worked():
    # group 7: 1 - (0+0)/2 = 1;  0 - (1+0)/2 = -0.5 (twice)
    # group 3: 2 - (4+6)/2 = -3;  4 - (2+6)/2 = 0;  6 - (2+4)/2 = 3
    adv = ADVANTAGES["rloo"](REWARDS, GROUP_ID)
    torch.testing.assert_close(adv, torch.tensor([1.0, -3.0, -0.5, 0.0, -0.5, 3.0], dtype=F64))


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_zero_variance_group_is_exactly_zero(name):
    # 0.1 * 3 / 3 != 0.1 in floating point; the residue divided by eps would be ~1e-13, not 0.
    r = torch.tensor([0.1, 0.1, 0.1, 1.0, 0.0], dtype=F64)
    g = torch.tensor([0, 0, 0, 1, 1])
    adv = ADVANTAGES[name](r, g)
    assert torch.equal(adv[:3], torch.zeros(3, dtype=F64))
    assert adv[3] > 0 and adv[4] < 0


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_group_of_one_gets_zero(name):
    r = torch.tensor([5.0, 1.0, 0.0], dtype=F64)
    g = torch.tensor([9, 2, 2])
    adv = ADVANTAGES[name](r, g)
    assert adv[0] == 0.0
    assert torch.isfinite(adv).all()


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_permuting_rows_permutes_advantages(name):
    torch.manual_seed(0)
    r = torch.randn(12, dtype=F64)
    g = torch.tensor([4, 4, 4, 1, 1, 1, 1, 8, 8, 8, 8, 8])
    perm = torch.randperm(12)
    a = ADVANTAGES[name](r, g)
    torch.testing.assert_close(ADVANTAGES[name](r[perm], g[perm] * 10 + 3), a[perm])


def test_grpo_matches_statistics_module_per_group():
    import statistics

    torch.manual_seed(1)
    r = torch.randn(10, dtype=F64)
    g = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    adv = ADVANTAGES["grpo"](r, g, std_eps=1e-4)
    for i in range(10):
        vals = [float(r[j]) for j in range(10) if g[j] == g[i]]
        want = (float(r[i]) - statistics.mean(vals)) / (statistics.stdev(vals) + 1e-4)
        assert adv[i].item() == pytest.approx(want, rel=1e-12)


def test_dtype_follows_rewards():
    r = torch.tensor([1.0, 0.0], dtype=torch.float32)
    assert ADVANTAGES["grpo"](r, torch.tensor([0, 0])).dtype == torch.float32


def test_bad_inputs_raise_clear_errors():
    g = torch.tensor([0, 0, 1])
    with pytest.raises(ValueError, match=r"not finite at rows \[1\]"):
        ADVANTAGES["grpo"](torch.tensor([1.0, float("nan"), 0.0]), g)
    with pytest.raises(ValueError, match="integer"):
        ADVANTAGES["rloo"](torch.tensor([1.0, 0.0, 0.0]), g.float())
    with pytest.raises(ValueError, match="shape"):
        ADVANTAGES["dr_grpo"](torch.tensor([1.0, 0.0]), g)
