"""THR / NTHR (arXiv 2510.03669, 2505.18830): factorised scores vs the pairwise definition, reweighting by hand."""

from __future__ import annotations

import pytest
import torch

from rl.credit.base import CreditContext, PolicySnapshot
from rl.credit.config import THRConfig
from rl.credit.thr import THR, nthr_factor, score_threshold, thr_factor, token_hidden_scores
from rl.experience import Experience

VOCAB, DIM = 11, 4


def make_policy(seed: int = 0, temperature: float = 0.8) -> PolicySnapshot:
    gen = torch.Generator().manual_seed(seed)
    return PolicySnapshot(torch.randn(VOCAB, DIM, generator=gen), torch.randn(VOCAB, generator=gen), temperature)


def pairwise_scores(hidden, ids, positive, policy, vocab_ids) -> torch.Tensor:
    """s_j = sum_{i in P} <g_i, g_j> <h_i, h_j>, g = e_y - softmax, restricted to vocab_ids; double loop."""
    logits = (hidden @ policy.lm_head_weight.T + policy.lm_head_bias) / policy.temperature
    q = torch.softmax(logits.double(), -1)
    g = torch.nn.functional.one_hot(ids, VOCAB).double() - q
    g = g[:, vocab_ids]
    h = hidden.double()
    out = torch.zeros(len(ids), dtype=torch.float64)
    for j in range(len(ids)):
        for i in range(len(ids)):
            if positive[i]:
                out[j] += torch.dot(g[i], g[j]) * torch.dot(h[i], h[j])
    return out


@pytest.mark.parametrize("method", ["factorised", "gram"])
@pytest.mark.parametrize("vocab", ["group", "full"])
def test_factorised_scores_equal_pairwise_double_sum(vocab: str, method: str) -> None:
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, DIM, generator=gen)
    ids = torch.tensor([3, 3, 7, 1, 7, 9, 0, 3, 5])  # 6 distinct ids out of 11
    positive = torch.tensor([True, True, True, True, False, False, False, False, False])
    policy = make_policy()
    vocab_ids = torch.unique(ids) if vocab == "group" else torch.arange(VOCAB)
    expected = pairwise_scores(hidden, ids, positive, policy, vocab_ids)
    got = token_hidden_scores(hidden, ids, positive, policy, vocab, vocab_chunk=4, token_chunk=2, method=method)
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)
    # chunk sizes do not matter
    torch.testing.assert_close(token_hidden_scores(hidden, ids, positive, policy, vocab, 100, 100, method=method), got,
                               rtol=1e-5, atol=1e-5)


def test_auto_method_picks_the_cheaper_exact_form() -> None:
    """auto gives the pairwise sum on both sides of its switch: P = 2 (cost 2M+P+PM/d = 102 < 3M+2P = 124:
    gram) and P = M = 40 with d = 4 (520 > 200: factorised)."""
    gen = torch.Generator().manual_seed(4)
    policy = make_policy()
    few = torch.zeros(40, dtype=torch.bool)
    few[:2] = True  # P = 2 < 2d: gram
    many = torch.ones(40, dtype=torch.bool)  # P = M = 40 >> d = DIM: factorised
    hidden, ids = torch.randn(40, DIM, generator=gen), torch.randint(0, VOCAB, (40,), generator=gen)
    for positive in (few, many):
        auto = token_hidden_scores(hidden, ids, positive, policy, "full")
        expected = pairwise_scores(hidden, ids, positive, policy, torch.arange(VOCAB))
        torch.testing.assert_close(auto.double(), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="method='fast'"):
        token_hidden_scores(hidden, ids, few, policy, "full", method="fast")


def test_group_vocab_differs_from_full_by_the_out_of_group_probability_mass() -> None:
    """vocab=group drops the entries v outside V* (the group's ids) from <g_i, g_j>. There e_y[v] = 0,
    so g_i[v] g_j[v] = q_i[v] q_j[v] and, exactly,
        s_full(j) - s_group(j) = sum_{i in P} <h_i, h_j> sum_{v not in V*} q_i[v] q_j[v]."""
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(6, DIM, generator=gen)
    ids = torch.tensor([2, 2, 4, 4, 2, 4])  # V* = {2, 4}: 9 of the 11 ids are outside
    positive = torch.tensor([True, True, True, False, False, False])
    policy = make_policy(seed=3)
    group = token_hidden_scores(hidden, ids, positive, policy, "group").double()
    full = token_hidden_scores(hidden, ids, positive, policy, "full").double()
    logits = (hidden.double() @ policy.lm_head_weight.double().T + policy.lm_head_bias.double()) / policy.temperature
    q = torch.softmax(logits, -1)
    outside = [v for v in range(VOCAB) if v not in (2, 4)]
    h = hidden.double()
    gap = torch.zeros(6, dtype=torch.float64)
    for j in range(6):
        for i in range(3):  # the positive tokens
            gap[j] += torch.dot(h[i], h[j]) * sum(q[i, v] * q[j, v] for v in outside)
    torch.testing.assert_close(full - group, gap, rtol=1e-4, atol=1e-5)
    assert gap.abs().min() > 1e-3  # the approximation is not exact on this batch
    torch.testing.assert_close(group, pairwise_scores(hidden, ids, positive, policy, torch.tensor([2, 4])),
                               rtol=1e-4, atol=1e-5)


def test_threshold_by_hand() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    row_of_token = torch.tensor([0, 0, 1, 1, 2])
    assert float(score_threshold(scores, row_of_token, torch.tensor([0, 1]), 1.0)) == pytest.approx(1.5)
    assert float(score_threshold(scores, row_of_token, torch.tensor([1, 2]), 0.5)) == pytest.approx(1.75)


def test_sign_reweighting_by_hand() -> None:
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.5])
    s = torch.tensor([3.0, 0.5, 2.0, -4.0, 1.0])
    tau = torch.tensor(1.0)
    # gate |s| > 1: T F T T F; THR = A*s: 3, ., -2, 4, . -> factors 1.5, 1, 0.5, 1.5, 1
    f, gate = thr_factor(adv, s, tau, THRConfig(p=0.5))
    assert f.tolist() == [1.5, 1.0, 0.5, 1.5, 1.0] and gate.tolist() == [True, False, True, True, False]
    f, _ = thr_factor(adv, s, tau, THRConfig(p=0.5, below_tau="zero"))
    assert f.tolist() == [1.5, 0.0, 0.5, 1.5, 0.0]
    f, _ = thr_factor(adv, s, tau, THRConfig(p=-0.2))  # exploration: the other way round
    assert f.tolist() == pytest.approx([0.8, 1.0, 1.2, 0.8, 1.0])
    f, _ = thr_factor(adv, s, tau, THRConfig(p=0.5, sign="score"))  # THR = s: 3, ., 2, -4, .
    assert f.tolist() == [1.5, 1.0, 1.5, 0.5, 1.0]
    f, _ = thr_factor(adv, s, tau, THRConfig(p=0.5, gate=False))  # every token: THR 3, .5, -2, 4, .5
    assert f.tolist() == [1.5, 1.5, 0.5, 1.5, 1.5]


def test_nthr_flags_negative_tokens_above_tau_by_hand() -> None:
    s = torch.tensor([5.0, 0.1, 2.0, 0.5, -3.0])
    positive = torch.tensor([True, True, False, False, False])
    f, flagged = nthr_factor(s, positive, torch.tensor(1.0), eta=0.0)
    assert flagged.tolist() == [False, False, True, False, False] and f.tolist() == [1.0, 1.0, 0.0, 1.0, 1.0]


def make_exp(rewards: list[float], group_id: list[int], lengths: list[int], width: int, seed: int = 0,
             correct: list[bool] | None = None) -> Experience:
    """Binary rewards unless ``correct`` (the accuracy label) is given: then correct = reward > 0.5."""
    gen = torch.Generator().manual_seed(seed)
    n = len(rewards)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).float()
    r = torch.tensor(rewards, dtype=torch.float32)
    gid = torch.tensor(group_id)
    adv = torch.zeros(n)
    for g in gid.unique():
        rows = gid == g
        adv[rows] = (r[rows] - r[rows].mean()) / (r[rows].std() + 1e-4)
    return Experience(
        prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1),
        completion_ids=torch.randint(0, VOCAB, (n, width), generator=gen), completion_mask=mask,
        group_id=gid, rewards=r, advantages=adv[:, None].expand(n, width).clone(),
        hidden=torch.randn(n, width, DIM, generator=gen),
        correct=torch.tensor(correct) if correct is not None else r > 0.5)


def test_unmixed_groups_fall_back_to_plain_grpo() -> None:
    # group 0 all correct, group 1 all wrong, group 2 mixed
    exp = make_exp([1, 1, 1, 0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 1, 2, 2, 2], [4, 3, 2, 4, 1, 3, 4, 4, 2], 4)
    before = exp.advantages.clone()
    metrics = THR(THRConfig(p=1.0, gate=False)).apply(exp, CreditContext(0, 10, policy=make_policy()))
    assert torch.equal(exp.advantages[:6], before[:6])
    assert metrics["thr/groups_mixed"] == 1.0
    # gate off, p = 1: every token of the mixed group is doubled or zeroed (A*s is never exactly 0 here);
    # 10 of the batch's 27 tokens are in the mixed group
    live = exp.completion_mask[6:] > 0
    ratio = exp.advantages[6:][live] / before[6:][live]
    assert set(ratio.tolist()) <= {0.0, 2.0} and metrics["thr/frac_up"] + metrics["thr/frac_down"] == pytest.approx(10 / 27)


def test_module_applies_the_factor_to_scores_of_the_group() -> None:
    exp = make_exp([1, 0, 1, 0], [0, 0, 0, 0], [3, 4, 2, 3], 4, seed=5)
    policy = make_policy(seed=6)
    r_idx, t_idx = (exp.completion_mask > 0).nonzero(as_tuple=True)
    positive = exp.rewards[r_idx] > 0.5
    s = token_hidden_scores(exp.hidden[r_idx, t_idx], exp.completion_ids[r_idx, t_idx], positive, policy, "group")
    tau = score_threshold(s, r_idx, torch.tensor([0, 2]), 1.0)
    before = exp.advantages.clone()
    THR(THRConfig(p=0.5)).apply(exp, CreditContext(0, 10, policy=policy))
    a = before[r_idx, t_idx]
    gate = s.abs() > tau.abs()
    expected = torch.where(gate, a * (1 + 0.5 * torch.sign(a * s)), a)
    torch.testing.assert_close(exp.advantages[r_idx, t_idx], expected)
    torch.testing.assert_close(exp.extras["thr_score"][r_idx, t_idx], s)


def test_nthr_balance_eta_and_mask_mode() -> None:
    # 1 correct of 4: eta = 2 |0.5 - 0.25| = 0.5; tau_beta huge negative -> every negative token flagged
    exp = make_exp([1, 0, 0, 0], [0, 0, 0, 0], [2, 2, 2, 2], 2)
    before = exp.advantages.clone()
    cfg = THRConfig(mode="nthr", eta_mode="balance", tau_beta=-1e9)
    metrics = THR(cfg).apply(exp, CreditContext(0, 10, policy=make_policy()))
    torch.testing.assert_close(exp.advantages[1:], 0.5 * before[1:])
    torch.testing.assert_close(exp.advantages[0], before[0])
    assert metrics["thr/frac_flagged"] == pytest.approx(0.75)

    # below_tau=mask with an unreachable gate: every token of the mixed group leaves the loss
    exp = make_exp([1, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1], [2] * 6, 2)
    THR(THRConfig(tau_beta=1e9, below_tau="mask")).apply(exp, CreditContext(0, 10, policy=make_policy()))
    assert exp.loss_mask()[:4].sum() == 0 and exp.loss_mask()[4:].sum() == 4


def test_positive_set_is_the_accuracy_label_not_reward_above_half() -> None:
    """Shaped reward = accuracy + format bonus: row 0 is wrong but well formatted (reward 1.0 > 0.5),
    row 1 correct (2.0), rows 2, 3 wrong (0.0, 0.2). The correct set is {row 1}, so M+ holds row 1's
    tokens only and tau is row 1's mean score; reward > 0.5 would wrongly add row 0."""
    rewards, correct = [1.0, 2.0, 0.0, 0.2], [False, True, False, False]
    exp = make_exp(rewards, [0, 0, 0, 0], [3, 2, 3, 2], 3, seed=8, correct=correct)
    policy = make_policy(seed=9)
    r_idx, t_idx = (exp.completion_mask > 0).nonzero(as_tuple=True)
    ids, hidden = exp.completion_ids[r_idx, t_idx], exp.hidden[r_idx, t_idx]
    a = exp.advantages[r_idx, t_idx].clone()

    def expected_advantages(positive_rows: list[int]) -> torch.Tensor:
        positive = torch.tensor([int(r) in positive_rows for r in r_idx])
        s = pairwise_scores(hidden, ids, positive, policy, torch.unique(ids)).float()
        tau = min(float(s[r_idx == r].mean()) for r in positive_rows)
        return torch.where(s.abs() > abs(tau), a * (1 + 0.5 * torch.sign(a * s)), a)

    by_label, by_reward = expected_advantages([1]), expected_advantages([0, 1])
    assert not torch.allclose(by_label, by_reward, atol=1e-3)  # the two readings differ on this batch
    assert THRConfig().positive_set == "accuracy"
    THR(THRConfig(p=0.5)).apply(exp, CreditContext(0, 10, policy=policy))
    torch.testing.assert_close(exp.advantages[r_idx, t_idx], by_label, rtol=1e-4, atol=1e-5)

    exp = make_exp(rewards, [0, 0, 0, 0], [3, 2, 3, 2], 3, seed=8, correct=correct)
    THR(THRConfig(p=0.5, positive_set="reward")).apply(exp, CreditContext(0, 10, policy=policy))
    torch.testing.assert_close(exp.advantages[r_idx, t_idx], by_reward, rtol=1e-4, atol=1e-5)


def test_missing_inputs_and_bad_config_are_clear_errors() -> None:
    exp = make_exp([1, 0], [0, 0], [2, 2], 2)
    exp.correct = None
    with pytest.raises(ValueError, match=r"exp.correct is None.*positive_set"):
        THR(THRConfig()).apply(exp, CreditContext(0, 10, policy=make_policy()))
    THR(THRConfig(positive_set="reward")).apply(exp, CreditContext(0, 10, policy=make_policy()))  # needs no label
    exp = make_exp([1, 0], [0, 0], [2, 2], 2)
    exp.hidden = None
    with pytest.raises(ValueError, match="exp.hidden"):
        THR(THRConfig()).apply(exp, CreditContext(0, 10, policy=make_policy()))
    with pytest.raises(ValueError, match="algorithm.thr.positive_set"):
        THRConfig(positive_set="label")
    with pytest.raises(ValueError, match="algorithm.thr.vocab"):
        THRConfig(vocab="all")
