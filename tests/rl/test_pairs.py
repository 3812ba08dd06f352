"""Pair selection from scored samples (rl/pairs.py): the default rule and cDPO's rule (spec §3.1 step 2),
checked on hand-built sample lists against hand-worked expectations."""

from __future__ import annotations

import json

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


# ----------------------------------------------------------------------------- build_pairs


class FakePool:
    """Stands in for RolloutPool: fixed completions per prompt text (read back from the prompt ids)."""

    def __init__(self, completions: dict[int, list[tuple[str, str]]]):
        self.completions = completions  # first prompt id -> [(text, finish_reason)]
        self.calls = []

    def generate(self, prompt_ids, sampling):
        from rollout.types import Completion

        self.calls.append(([p[0] for p in prompt_ids], sampling))
        return [[Completion(i, [100 + k, 2] if fin == "stop" else [100 + k], None, text, fin)
                 for k, (text, fin) in enumerate(self.completions[p[0]][: sampling.n])]
                for i, p in enumerate(prompt_ids)]


def exact_answer(prompts, completions, answer, **_):
    from rewards.extract import extract_answer, to_number

    return [1.0 if (x := extract_answer(c, "last_number")) is not None and to_number(x) == to_number(str(a))
            else 0.0 for c, a in zip(completions, answer)]


def prompt_set(n):
    from rl.data import PromptRow, PromptSet

    rows = [PromptRow(f"<|im_start|>user\nQ{i}<|im_end|>\n<|im_start|>assistant\n", [i, 50], str(5 + i), {"level": i},
                      index=10 + i) for i in range(n)]
    return PromptSet(rows, 0, "hand", "train", ["level"])


COMPLETIONS = {
    # prompt 0 (answer 5): 5 x2 correct, 6 x1, 1,000 and 1000 (one answer, x2), a blank and a truncated "5"
    0: [("It is 5", "stop"), ("so 6", "stop"), ("1,000", "stop"), ("=5", "stop"), ("1000", "stop"), ("  ", "stop"),
        ("It is 5 and", "length")],
    # prompt 1 (answer 6): no correct sample -> no pair
    1: [("7", "stop"), ("8", "stop"), ("9", "stop")],
    # prompt 2 (answer 7): one correct, two incorrect
    2: [("7", "stop"), ("it is 3", "stop"), ("no idea", "stop")],
}


def run_build(tmp_path, rule="default", batch_prompts=2, seed=0, name="pairs.jsonl", **kw):
    from rewards.scorer import RewardScorer
    from rl.build_pairs import build_pairs
    from rollout.types import SamplingSpec

    pool = FakePool(COMPLETIONS)
    out = tmp_path / name
    stats = build_pairs(pool, RewardScorer([{"name": exact_answer}]), prompt_set(3),
                        SamplingSpec(n=7, temperature=1.0, max_tokens=16), out, rule=rule, seed=seed,
                        batch_prompts=batch_prompts, **kw)
    return pool, out, stats, [json.loads(x) for x in out.read_text().splitlines()]


def test_build_pairs_default_rule_writes_readable_pairs(tmp_path):
    from transformers import AutoTokenizer

    from rl.models import resolve_model
    from rl.preference_data import PreferenceDataConfig, load_pairs

    pool, out, stats, rows = run_build(tmp_path)
    assert [c[0] for c in pool.calls] == [[0, 1], [2]]  # chunks of batch_prompts, each reseeded
    assert [c[1].seed for c in pool.calls] == [0, 1] and all(c[1].n == 7 for c in pool.calls)
    assert [r["prompt_index"] for r in rows] == [10, 12]
    first, last = rows
    assert first["chosen"] in ("It is 5", "=5") and first["rejected"] in ("so 6", "1,000", "1000")
    assert last["chosen"] == "7" and last["rejected"] in ("it is 3", "no idea")
    assert first["answer"] == "5" and first["level"] == 0 and first["rule"] == "default"
    assert first["num_samples"] == 5 and first["num_correct"] == 2  # the blank and the truncated ones are not candidates
    assert first["chosen_reward"] == 1.0 and first["rejected_reward"] == 0.0
    assert stats["pairs"] == 2 and stats["prompts"] == 3 and stats["prompts_without_pair"] == 1
    assert stats["samples"] == 13 and stats["skipped_truncated"] == 1 and stats["skipped_blank"] == 1
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    ps = load_pairs(PreferenceDataConfig(source=str(out), extra_columns=["answer"]), tok)
    assert len(ps) == 2 and ps.rows[0].prompt == first["prompt"] and ps.rows[0].columns == {"answer": "5"}
    assert ps.rows[0].prompt_ids == list(tok(first["prompt"], add_special_tokens=False)["input_ids"])
    assert ps.rows[0].chosen_ids[-1] == tok.eos_token_id


def test_build_pairs_is_seeded_and_independent_of_chunking(tmp_path):
    a = run_build(tmp_path, batch_prompts=1, name="a.jsonl")[3]
    b = run_build(tmp_path, batch_prompts=3, name="b.jsonl")[3]
    assert [(r["chosen"], r["rejected"]) for r in a] == [(r["chosen"], r["rejected"]) for r in b]
    picks = {tuple((r["chosen"], r["rejected"]) for r in run_build(tmp_path, seed=s, name=f"{s}.jsonl")[3])
             for s in range(12)}
    assert len(picks) > 1


def test_build_pairs_cdpo_rule_and_sft_sets(tmp_path):
    _, out, stats, rows = run_build(tmp_path, rule="cdpo", write_sft=True)
    first = rows[0]
    assert first["chosen"] in ("It is 5", "=5")
    assert first["rejected"] in ("1,000", "1000")  # "1,000" and "1000" are one answer, the most frequent wrong one
    assert first["rejected_answer"] == "1000" and first["chosen_answer"] == "5"
    assert rows[1]["chosen"] == "7" and rows[1]["rejected"] in ("it is 3",)  # "no idea" has no answer
    pos = [json.loads(x) for x in (tmp_path / "pairs.sft_pos.jsonl").read_text().splitlines()]
    neg = [json.loads(x) for x in (tmp_path / "pairs.sft_neg.jsonl").read_text().splitlines()]
    assert [p["completion"] for p in pos] == [first["chosen"], "7"]
    assert all(set(p) >= {"prompt", "completion", "answer", "prompt_index"} for p in pos + neg)
    # prompt 0: wrong answers 1000 x2, 6 x1 -> ceil(1.5) = 2: 1000 (covers 2); prompt 1: 7, 8, 9 -> 2: one of them;
    # prompt 2: "3" x1 -> 1
    assert [n["prompt_index"] for n in neg] == [10, 11, 12] and neg[0]["completion"] == first["rejected"]
    assert stats["sft_pos"] == 2 and stats["sft_neg"] == 3


def test_build_pairs_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="rule"):
        run_build(tmp_path, rule="best")
    with pytest.raises(ValueError, match="write_sft"):
        run_build(tmp_path, rule="default", write_sft=True)
    with pytest.raises(ValueError, match="accuracy_reward"):
        run_build(tmp_path, accuracy_reward="nope")


@pytest.mark.e2e
def test_build_pairs_with_vllm(tmp_path, tiny_model_dir, ray_local):
    """The real rollout engine on the tiny random model: sample, score, select, write, read back."""
    pytest.importorskip("vllm")
    from transformers import AutoTokenizer

    from rewards.scorer import RewardScorer
    from rl.build_pairs import build_pairs
    from rl.config import DataConfig
    from rl.data import load_prompts
    from rl.preference_data import PreferenceDataConfig, load_pairs
    from rollout import RolloutPool, SamplingSpec

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = load_prompts(DataConfig(source="builtin:arithmetic"), tok, "train", limit=4)

    def even_length(prompts, completions, **_):  # a random model is never right; any split of its samples will do
        return [float(len(c) % 2 == 0) for c in completions]

    pool = RolloutPool(tiny_model_dir, num_workers=1, dtype="float32", max_model_len=128, memory_fraction=0.05,
                       seed=0, generate_timeout_s=120, start_timeout_s=300, max_num_seqs=16)
    try:
        stats = build_pairs(pool, RewardScorer([{"name": even_length}]), prompts,
                            SamplingSpec(n=4, temperature=1.0, max_tokens=8), tmp_path / "p.jsonl",
                            keep_truncated=True, seed=3)
    finally:
        pool.shutdown()
    assert stats["prompts"] == 4 and stats["samples"] == 16 and stats["pairs"] >= 1
    ps = load_pairs(PreferenceDataConfig(source=str(tmp_path / "p.jsonl"), extra_columns=["prompt_index"],
                                         max_length=128, max_prompt_length=100), tok, allow_empty=True)
    assert len(ps) + sum(ps.dropped.values()) == stats["pairs"]
    sampled_from = {r.index: r.ids for r in prompts.rows}
    for r in ps.rows:  # the pair's prompt ids are the ids the engine sampled from
        assert r.prompt_ids == sampled_from[r.columns["prompt_index"]]
        assert r.chosen_ids[-1] == tok.eos_token_id and r.rejected_ids[-1] == tok.eos_token_id
