"""D3S (arXiv 2509.22115): max-variance subsets against brute force, zero rows, token top-K, schedule."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rl.config import load_config
from rl.credit.base import CreditContext
from rl.credit.config import D3SConfig
from rl.credit.d3s import D3S, keep_top_fraction, max_variance_subset
from rl.experience import Experience


def pop_var(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / len(values)


def brute_force_best_variance(adv: list[float], m: int) -> float:
    return max(pop_var([adv[i] for i in combo]) for combo in itertools.combinations(range(len(adv)), m))


def make_exp(adv_rows: list[float], group_id: list[int], lengths: list[int], width: int,
             entropy: torch.Tensor | None = None) -> Experience:
    n = len(adv_rows)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()
    return Experience(
        prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1),
        completion_ids=torch.ones(n, width, dtype=torch.long), completion_mask=mask,
        group_id=torch.tensor(group_id), rewards=torch.tensor(adv_rows),
        advantages=torch.tensor(adv_rows)[:, None].expand(n, width).clone(), entropy=entropy)


# values drawn from a small grid so that ties (equal advantages, equal variances) are common
advantage_lists = st.lists(st.sampled_from([-2.0, -1.5, -1.0, -0.25, 0.0, 0.5, 1.0, 1.25, 3.0]), min_size=1, max_size=8)


@settings(max_examples=200, deadline=None)
@given(adv=advantage_lists, data=st.data())
def test_max_variance_subset_matches_enumeration(adv: list[float], data) -> None:
    m = data.draw(st.integers(min_value=1, max_value=len(adv)))
    idx = max_variance_subset(torch.tensor(adv), m)
    assert idx.numel() == m and len(set(idx.tolist())) == m
    assert pop_var([adv[i] for i in idx.tolist()]) == pytest.approx(brute_force_best_variance(adv, m), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(adv=st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=2, max_size=7), data=st.data())
def test_max_variance_subset_matches_enumeration_continuous(adv: list[float], data) -> None:
    m = data.draw(st.integers(min_value=2, max_value=len(adv)))
    idx = max_variance_subset(torch.tensor(adv, dtype=torch.float64), m)
    assert pop_var([adv[i] for i in idx.tolist()]) == pytest.approx(brute_force_best_variance(adv, m), rel=1e-9, abs=1e-9)


def test_max_variance_subset_by_hand() -> None:
    adv = torch.tensor([2.0, 1.0, 0.5, -1.0, -3.0])
    assert max_variance_subset(adv, 2).tolist() == [0, 4]  # {2, -3}: variance 6.25
    assert max_variance_subset(adv, 3).tolist() == [0, 1, 4]  # {2, 1, -3}: 14/3 beats {2, -1, -3}: 38/9
    assert max_variance_subset(adv, 9).tolist() == [0, 1, 2, 3, 4]
    assert max_variance_subset(adv, 0).tolist() == []
    # m = 1: every single row has variance 0; the largest |A| carries the most signal
    assert max_variance_subset(adv, 1).tolist() == [4]


def test_zero_advantage_rows_never_kept_while_nonzero_remain() -> None:
    # group 0: the best 2-subset by variance would be {1, 0}; the zero row is excluded -> {1, 0.9}
    # group 1: all zero (unmixed) -> nothing kept
    # group 2: only one non-zero row -> only that row, no padding with zeros
    adv = [1.0, 0.0, 0.9, 0.95, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.0, 0.0]
    exp = make_exp(adv, [0] * 4 + [1] * 4 + [2] * 4, [3] * 12, 3)
    cfg = D3SConfig(n_init=0.5, n_final=0.5, k_init=1.0, k_final=1.0, cross_group=False)
    metrics = D3S(cfg).apply(exp, CreditContext(step=0, total_steps=10))
    kept = exp.active_rows().nonzero()[:, 0].tolist()
    assert kept == [0, 2, 9]
    assert metrics["d3s/kept_samples"] == 3
    assert torch.equal(exp.completion_mask, torch.ones(12, 3))  # rows leave the loss, not the batch


def test_sample_level_picks_extremes_then_cross_group() -> None:
    # two groups of 8; at p = 0 N_s = 8/4 = 2 per group: the max and the min of each group
    g0 = [1.5, 0.5, -0.5, 1.0, -1.2, 0.1, -0.3, 0.2]
    g1 = [0.4, -0.4, 0.3, -0.2, 0.2, -0.1, 0.1, -0.3]
    exp = make_exp(g0 + g1, [0] * 8 + [1] * 8, [2] * 16, 2)
    D3S(D3SConfig(k_init=1.0, cross_group=True)).apply(exp, CreditContext(step=0, total_steps=5))
    assert exp.active_rows().nonzero()[:, 0].tolist() == [0, 4, 8, 9]  # n_batch=None: sum N_s keeps all 4

    exp = make_exp(g0 + g1, [0] * 8 + [1] * 8, [2] * 16, 2)
    D3S(D3SConfig(k_init=1.0, cross_group=True, n_batch=0.5)).apply(exp, CreditContext(step=0, total_steps=5))
    # of {1.5, -1.2, 0.4, -0.4}, the 2-subset with the largest variance is {1.5, -1.2}
    assert exp.active_rows().nonzero()[:, 0].tolist() == [0, 4]


def test_keep_top_fraction_global_with_ties_by_hand() -> None:
    score = torch.tensor([[1.0, 2.0, 3.0, 0.5], [1.0, 2.0, 2.0, 9.0]])
    valid = torch.tensor([[True, True, True, True], [True, True, True, False]])
    # 7 valid, K = 0.4 -> ceil(2.8) = 3; sorted: 3, 2, 2, 2, 1, 1, 0.5 -> cut-off 2, and all three 2s stay
    expected = torch.tensor([[False, True, True, False], [False, True, True, False]])
    assert torch.equal(keep_top_fraction(score, valid, 0.4, per_row=False), expected)
    # per response, K = 0.5: row 0 keeps ceil(2) = 2 -> {3, 2}; row 1 keeps ceil(1.5) = 2 -> cut-off 2 -> both 2s
    assert torch.equal(keep_top_fraction(score, valid, 0.5, per_row=True), expected)
    # K = 0.2 of 10 tokens is 2 tokens, not 3 (float noise in 0.2 * 10)
    one_row = torch.arange(10.0)[None]
    assert int(keep_top_fraction(one_row, torch.ones_like(one_row, dtype=torch.bool), 0.2, False).sum()) == 2


def test_keep_top_fraction_against_sorted_reference() -> None:
    gen = torch.Generator().manual_seed(0)
    score = torch.randint(0, 5, (6, 7), generator=gen).float()  # many ties
    valid = torch.rand(6, 7, generator=gen) > 0.3
    for k in (0.1, 0.33, 0.5, 0.9):
        vals = sorted(score[valid].tolist(), reverse=True)
        n_keep = -(-round(k * len(vals) * 1e6) // 10**6)  # ceil
        cutoff = vals[n_keep - 1]
        expected = valid & (score >= cutoff)
        assert torch.equal(keep_top_fraction(score, valid, k, per_row=False), expected)


def test_token_level_uses_abs_advantage_times_entropy() -> None:
    # one group of 4, kept whole (n = 1.0); K = 0.25 of 8 tokens = 2 tokens
    # |A| * H: row 0 (A=2): 2*[1, 0.1]; row 1 (A=-1): [3, 0.2]; row 2 (A=0.5): 0.5*[1, 1]; row 3 (A=-1.5): 1.5*[0.1, 0.1]
    ent = torch.tensor([[1.0, 0.1], [3.0, 0.2], [1.0, 1.0], [0.1, 0.1]])
    exp = make_exp([2.0, -1.0, 0.5, -1.5], [0] * 4, [2] * 4, 2, entropy=ent)
    cfg = D3SConfig(n_init=1.0, n_final=1.0, k_init=0.25, k_final=0.25, cross_group=False)
    metrics = D3S(cfg).apply(exp, CreditContext(step=0, total_steps=2))
    # scores 2, 0.2, 3, 0.2, 0.5, 0.5, 0.15, 0.15 -> top 2: 3 (row 1, t0) and 2 (row 0, t0)
    expected = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    assert torch.equal(exp.loss_mask(), expected)
    assert metrics["d3s/kept_tokens"] == 2 and metrics["d3s/kept_token_frac"] == pytest.approx(0.25)


def test_schedule_endpoints() -> None:
    module = D3S(D3SConfig())
    assert module.schedule(0.0) == (0.25, 0.2)
    assert module.schedule(1.0) == (1.0, 1.0)
    assert module.schedule(0.5) == pytest.approx((0.625, 0.6))
    assert D3S(D3SConfig(schedule="constant")).schedule(1.0) == (0.25, 0.2)

    adv = [float(i) - 7.5 for i in range(16)]
    for step, n_s, k in ((0, 4, 0.2), (9, 16, 1.0)):
        exp = make_exp(adv, [0] * 16, [1] * 16, 1, entropy=torch.ones(16, 1))
        metrics = D3S(D3SConfig()).apply(exp, CreditContext(step=step, total_steps=10))
        assert metrics["d3s/n_s"] == n_s and metrics["d3s/k"] == pytest.approx(k)
        assert metrics["d3s/kept_samples"] == n_s


def test_needs_entropy_only_for_token_level_and_clear_error() -> None:
    assert D3S(D3SConfig(k_init=1.0, k_final=1.0)).needs == frozenset()
    assert D3S(D3SConfig()).needs == frozenset({"entropy"})
    exp = make_exp([1.0, -1.0], [0, 0], [1, 1], 1)
    with pytest.raises(ValueError, match="exp.entropy"):
        D3S(D3SConfig()).apply(exp, CreditContext(step=0, total_steps=10))


def test_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="algorithm.d3s.token_scope"):
        D3SConfig(token_scope="row")
    with pytest.raises(ValueError, match="algorithm.d3s.k_init"):
        D3SConfig(k_init=0.0)
    with pytest.raises(ValueError, match="algorithm.d3s.n_init"):
        D3SConfig(n_init=3.0)  # a fraction > 1 needs n_unit=count
    D3SConfig(n_init=4, n_final=16, n_unit="count")


def brute_force_subset(values: dict[int, float], m: int) -> set[int]:
    """The row ids of the size-m subset of largest population variance, by enumeration (no ties here)."""
    best = max(itertools.combinations(sorted(values), m), key=lambda c: pop_var([values[i] for i in c]))
    return set(best)


RECIPES = Path(__file__).resolve().parents[3] / "recipes"


@pytest.mark.parametrize("recipe", ["grpo_d3s.yaml", "gspo_d3s.yaml"])
@pytest.mark.parametrize("step, groups, n_s, n_batch", [(0, 4, 2, 4), (9, 2, 8, 8)])
def test_shipped_recipe_cross_group_step_selects(recipe: str, step: int, groups: int, n_s: int, n_batch: int) -> None:
    """The shipped D3S recipes run D1S-Cross. Groups of G = 8 (the recipes' rollout.n), every advantage
    non-zero and distinct. At p = 0, N_s = G/4 = 2 per group, 4 groups: sum N_s = 8 and the cross-group
    step keeps n_batch = 0.5 * 8 = 4 rows; at p = 1, N_s = 8, 2 groups: 16 -> 8. Both steps against
    enumeration (C(8, 2) per group, then C(8, 4) or C(16, 8) subsets of the union)."""
    cfg = load_config(RECIPES / recipe)
    assert cfg.rollout.n == 8 and "d3s" in cfg.algorithm.credit
    gen = torch.Generator().manual_seed(11)
    adv = (torch.rand(8 * groups, generator=gen, dtype=torch.float64) * 4 - 2).tolist()
    exp = make_exp(adv, [g for g in range(groups) for _ in range(8)], [3] * 8 * groups, 3)
    metrics = D3S(cfg.algorithm.d3s).select_rows(exp, CreditContext(step=step, total_steps=10))
    union: dict[int, float] = {}
    for g in range(groups):
        union.update({i: adv[i] for i in brute_force_subset({i: adv[i] for i in range(8 * g, 8 * g + 8)}, n_s)})
    assert len(union) == groups * n_s
    kept = set(exp.active_rows().nonzero()[:, 0].tolist())
    assert len(kept) == n_batch < len(union)  # the cross-group step dropped rows
    assert kept == brute_force_subset(union, n_batch)
    assert metrics["d3s/kept_samples"] == n_batch


def test_cross_group_no_op_is_a_switch() -> None:
    """n_batch = null (spec Q1's N_batch = sum N_s) keeps every row the intra-group step kept."""
    cfg = load_config(RECIPES / "grpo_d3s.yaml", ["algorithm.d3s.n_batch=null"])
    adv = (torch.rand(32, generator=torch.Generator().manual_seed(11), dtype=torch.float64) * 4 - 2).tolist()
    exp = make_exp(adv, [g for g in range(4) for _ in range(8)], [3] * 32, 3)
    D3S(cfg.algorithm.d3s).select_rows(exp, CreditContext(step=0, total_steps=10))
    assert int(exp.active_rows().sum()) == 8  # 2 per group, nothing dropped across groups
