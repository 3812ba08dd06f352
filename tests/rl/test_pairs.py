"""Pair selection from scored samples (rl/pairs.py): the default rule and cDPO's rule (spec §3.1 step 2),
checked on hand-built sample lists against hand-worked expectations."""

from __future__ import annotations

import pytest

from rl.pairs import Pair, Sample, cdpo_sft_sets, select_pairs


def s(answer, correct, text=None):
    return Sample(text=text or f"... so the answer is {answer}", token_ids=[1, 2, 3], correct=correct, answer=answer)


SEEDS = range(40)


def test_default_rule_pairs_a_correct_with_an_incorrect_sample():
    group = [s("5", True), s("6", False), s("5", True), s(None, False)]
    seen = set()
    for seed in SEEDS:
        [pair] = select_pairs([group], "default", seed)
        assert isinstance(pair, Pair)
        assert group[pair.chosen].correct and not group[pair.rejected].correct
        seen.add(pair)
    # every correct/incorrect combination is reachable (uniform seeded choice); an empty answer is a fine rejected
    assert seen == {Pair(c, r) for c in (0, 2) for r in (1, 3)}


def test_default_rule_needs_both_kinds_and_is_seeded():
    assert select_pairs([[s("5", True)] * 3, [s("6", False)] * 2, []], "default", 0) == [None, None, None]
    groups = [[s(str(k), k % 2 == 0) for k in range(8)] for _ in range(5)]
    assert select_pairs(groups, "default", 7) == select_pairs(groups, "default", 7)
    assert any(select_pairs(groups, "default", 7) != select_pairs(groups, "default", x) for x in range(1, 5))


def test_cdpo_pair_is_most_frequent_correct_vs_most_frequent_incorrect():
    # answers: 5 x2 correct, 7 x1 correct, 6 x3 wrong, 8 x1 wrong, plus empty/None answers (skipped)
    group = [s("5", True), s("6", False), s("7", True), s("6", False), s("", False), s("5", True),
             s("6", False), s("8", False), s(None, False), s("  ", True)]
    for seed in SEEDS:
        [pair] = select_pairs([group], "cdpo", seed)
        assert pair.chosen in (0, 5)  # a response of "5", never "7" (less frequent) nor the empty-answer correct one
        assert pair.rejected in (1, 3, 6)  # a response of "6"


def test_cdpo_most_frequent_incorrect_beats_more_frequent_correct_ordering():
    # the most frequent answer overall is wrong; chosen is still the most frequent *correct* answer
    group = [s("6", False)] * 4 + [s("5", True), s("4", True), s("4", True)]
    for seed in range(10):
        [pair] = select_pairs([group], "cdpo", seed)
        assert pair.chosen in (5, 6) and pair.rejected in range(4)


def test_cdpo_frequency_ties_are_broken_at_random_but_seeded():
    # incorrect answers 6 and 7 tie at 2; 9 has 1 and must never be picked
    group = [s("5", True), s("6", False), s("7", False), s("6", False), s("7", False), s("9", False)]
    rejected_answers = {group[select_pairs([group], "cdpo", seed)[0].rejected].answer for seed in SEEDS}
    assert rejected_answers == {"6", "7"}
    assert select_pairs([group], "cdpo", 3) == select_pairs([group], "cdpo", 3)


def test_cdpo_skips_prompts_without_both_kinds_and_empty_answers():
    no_correct = [s("6", False), s("7", False)]
    only_empty_correct = [s(None, True), s("", True), s("6", False)]
    no_incorrect_with_answer = [s("5", True), s(None, False)]
    all_correct = [s("5", True)] * 3
    assert select_pairs([no_correct, only_empty_correct, no_incorrect_with_answer, all_correct, []], "cdpo", 0) \
        == [None] * 5


def test_cdpo_correctness_is_per_sample_within_an_answer():
    # the same answer string judged differently (e.g. a format reward): grouped by (answer, correct)
    group = [s("5", True), s("5", False), s("5", False), s("6", False)]
    for seed in range(10):
        [pair] = select_pairs([group], "cdpo", seed)
        assert pair.chosen == 0 and pair.rejected in (1, 2)


def test_unknown_rule():
    with pytest.raises(ValueError, match="rule 'best'.*default.*cdpo"):
        select_pairs([[s("5", True)]], "best", 0)


def test_cdpo_sft_sets_hand_worked():
    # 5 incorrect responses with an answer (6 x3, 7, 8) -> ceil(0.5 * 5) = 3 to cover; the first answer (6) covers 3
    g0 = [s("5", True), s("5", True), s("6", False), s("6", False), s("6", False), s("7", False), s(None, False),
          s("", False), s("8", False)]
    # 6 errors (6 x2, 7 x2, 8, 9) -> need 3: "6" or "7" first (covers 2), then the other (count 2 > 1) -> 2 responses
    g1 = [s("6", False), s("6", False), s("7", False), s("7", False), s("8", False), s("9", False), s("1", True)]
    # 3 single errors -> need 2: the first one (any count) covers 1, the next has count 1 and is not added
    g2 = [s("6", False), s("7", False), s("8", False)]
    # no answered incorrect responses: a positive only
    g3 = [s("5", True), s(None, False)]
    for seed in SEEDS:
        sets = cdpo_sft_sets([g0, g1, g2, g3], seed)
        pos = dict(sets.pos)
        assert set(pos) == {0, 1, 3}
        assert pos[0] in (0, 1) and pos[1] == 6 and pos[3] == 0
        neg = {}
        for p, i in sets.neg:
            neg.setdefault(p, []).append(i)
        assert set(neg) == {0, 1, 2}
        assert len(neg[0]) == 1 and neg[0][0] in (2, 3, 4)
        assert sorted(g1[i].answer for i in neg[1]) == ["6", "7"]
        assert len(neg[2]) == 1 and neg[2][0] in (0, 1, 2)


def test_cdpo_sft_sets_agree_with_the_pairs():
    # same seed, same per-prompt draws: the positive is the pair's chosen, the first negative its rejected
    groups = [[s(str(k % 3), k % 3 == 0) for k in range(i, i + 9)] for i in range(6)]
    for seed in range(10):
        pairs = select_pairs(groups, "cdpo", seed)
        sets = cdpo_sft_sets(groups, seed)
        first_neg = {}
        for p, i in sets.neg:
            first_neg.setdefault(p, i)
        for p, pair in enumerate(pairs):
            if pair is not None:
                assert dict(sets.pos)[p] == pair.chosen and first_neg[p] == pair.rejected


def test_cdpo_sft_neg_top_p_bounds():
    with pytest.raises(ValueError, match="neg_top_p"):
        cdpo_sft_sets([[s("5", True)]], 0, neg_top_p=0.0)
