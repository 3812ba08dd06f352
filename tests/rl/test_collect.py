"""DAPO dynamic sampling (arXiv 2503.14476) and the empty round, with the recipe's real reward functions.

The rollout pool is scripted: each ``generate`` call returns the next round's groups. Rewards come
from recipes/dapo.yaml's functions (math_answer + overlong_penalty with max_len 32, cache_len 8), so
a completion of 30 tokens gets (24 - 30) / 8 = -0.75 on top of its 0/1 accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rewards import RewardScorer
from rl.batch import build_experience
from rl.collect import collect
from rl.config import load_config
from rl.data import PromptRow, PromptSet
from rl.experience import left_pad, right_pad
from rollout.types import Completion

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ANSWER = 5


def comp(correct: bool, length: int) -> Completion:
    text = str(ANSWER) if correct else str(ANSWER + 2)
    return Completion(0, list(range(1, length + 1)), [-0.5] * length, text, "stop")


class ScriptedPool:
    """``generate`` returns rounds[k] on its k-th call (one list of completions per prompt)."""

    def __init__(self, rounds: list[list[list[Completion]]]):
        self.rounds = rounds
        self.calls: list[list[list[int]]] = []

    def generate(self, prompt_ids, spec):
        self.calls.append(prompt_ids)
        groups = self.rounds[len(self.calls) - 1]
        assert len(groups) == len(prompt_ids)
        return groups


def setup(overrides: list[str]):
    cfg = load_config(RECIPES / "dapo.yaml", ["rollout.n=4", "trainer.prompts_per_step=2", *overrides])
    scorer = RewardScorer([{"name": f.name, "weight": f.weight, "kwargs": dict(f.kwargs)}
                           for f in cfg.rewards.functions])
    rows = [PromptRow(text=f"prompt {i}", ids=[100 + i, 7], answer=ANSWER, index=i) for i in range(8)]
    prompts = PromptSet(rows=rows, dropped_long=0, source="test")
    sampler = iter([[0, 1], [2, 3], [4, 5], [6, 7]])
    return cfg, scorer, prompts, sampler


# total rewards in the comments
ALL_WRONG_MIXED_LENGTHS = [comp(False, 10), comp(False, 30)] * 2  # 0, -.75, 0, -.75
ALL_RIGHT_MIXED_LENGTHS = [comp(True, 30), comp(True, 10), comp(True, 10), comp(True, 10)]  # .25, 1, 1, 1
MIXED = [comp(True, 10), comp(False, 10), comp(True, 10), comp(False, 30)]  # 1, 0, 1, -.75
MIXED_2 = [comp(False, 12), comp(True, 12), comp(False, 12), comp(False, 12)]  # 0, 1, 0, 0
ALL_WRONG_SAME = [comp(False, 10)] * 4  # 0, 0, 0, 0


def test_accuracy_criterion_drops_all_wrong_group_despite_overlong_penalty():
    """DAPO keeps a group iff 0 < #correct < G. The overlong penalty makes an all-wrong group's rewards
    differ (0 vs -0.75), which must not let it through; the same for an all-correct one."""
    cfg, scorer, prompts, sampler = setup([])
    assert cfg.algorithm.dynamic_sampling.criterion == "accuracy"  # the default
    pool = ScriptedPool([[ALL_WRONG_MIXED_LENGTHS, MIXED], [ALL_RIGHT_MIXED_LENGTHS, MIXED_2]])
    got = collect(pool, prompts, sampler, scorer, cfg, step=0, total_steps=10)
    assert got.prompt_ids == [[101, 7], [103, 7]]  # prompt 1 (round 0) and prompt 3 (round 1)
    assert got.rewards == pytest.approx([1, 0, 1, -0.75, 0, 1, 0, 0])
    assert got.correct == [True, False, True, False, False, True, False, False]
    assert got.metrics["batch/dropped_groups"] == 2
    assert got.metrics["batch/generated_groups"] == 4
    assert got.metrics["batch/extra_rounds"] == 1
    assert got.metrics["batch/skipped"] == 0.0 and got.skip_reason == ""


def test_reward_variance_criterion_is_a_switch():
    """The other reading: drop a group only when its total reward is constant."""
    cfg, scorer, prompts, sampler = setup(["algorithm.dynamic_sampling.criterion=reward_variance"])
    pool = ScriptedPool([[ALL_WRONG_SAME, ALL_WRONG_MIXED_LENGTHS], [MIXED, MIXED_2]])
    got = collect(pool, prompts, sampler, scorer, cfg, step=0, total_steps=10)
    assert got.prompt_ids == [[101, 7], [102, 7]]  # the all-wrong group with the penalty survives
    assert got.metrics["batch/dropped_groups"] == 1


def test_bad_criterion_is_a_config_error(tmp_path):
    from rl.config import ConfigError

    with pytest.raises(ConfigError, match="algorithm.dynamic_sampling.criterion"):
        load_config(RECIPES / "dapo.yaml", ["algorithm.dynamic_sampling.criterion=variance"])


def test_empty_round_resamples_up_to_max_rounds_then_returns_an_empty_batch():
    """Every group of every round is all wrong: 1 + max_rounds generation calls, then an empty
    Collected that says why (the loop skips the step); nothing raises."""
    cfg, scorer, prompts, sampler = setup(["algorithm.dynamic_sampling.max_rounds=2"])
    pool = ScriptedPool([[ALL_WRONG_SAME, ALL_WRONG_MIXED_LENGTHS]] * 3)
    got = collect(pool, prompts, sampler, scorer, cfg, step=3, total_steps=10)
    assert len(pool.calls) == 3
    assert got.groups == [] and got.prompt_ids == [] and got.rewards == [] and got.correct == []
    assert got.metrics["batch/skipped"] == 1.0
    assert got.metrics["batch/groups"] == 0 and got.metrics["batch/generated_groups"] == 6
    assert got.metrics["batch/dropped_groups"] == 6 and got.metrics["batch/extra_rounds"] == 2
    assert "0 of 6 groups" in got.skip_reason and "max_rounds=2" in got.skip_reason
    assert "reward/total/mean" in got.metrics  # what was generated is still reported


def test_pad_helpers_and_build_experience_accept_an_empty_batch():
    ids, mask = left_pad([], pad=0)
    assert ids.shape == (0, 0) and mask.shape == (0, 0) and ids.dtype == torch.long
    assert right_pad([], pad=0).shape[0] == 0
    assert right_pad([], pad=0.0, dtype=torch.float32).dtype == torch.float32
    exp = build_experience([], [], [], pad_id=0)
    assert exp.num_rows == 0 and exp.rewards.shape == (0,) and exp.group_id.shape == (0,)
    assert exp.group_id.dtype == torch.long and exp.truncated.dtype == torch.bool
    # and a non-empty batch is unchanged: left padding to the longest prompt
    ids, mask = left_pad([[1, 2], [3]], pad=9)
    assert ids.tolist() == [[1, 2], [9, 3]] and mask.tolist() == [[1, 1], [0, 1]]


def test_build_experience_carries_the_accuracy_label():
    groups = [[comp(True, 3), comp(False, 2)], [comp(False, 1), comp(False, 4)]]
    exp = build_experience([[1], [2, 3]], groups, [1.5, 1.0, 0.0, 0.2], pad_id=0,
                           correct=[True, False, False, False])
    assert exp.correct.dtype == torch.bool and exp.correct.tolist() == [True, False, False, False]
    assert exp.select(torch.tensor([1, 0])).correct.tolist() == [False, True]  # rows travel together
    assert build_experience([[1]], groups[:1], [1.0, 0.0], pad_id=0).correct is None
    with pytest.raises(ValueError, match="correct"):
        build_experience([[1]], groups[:1], [1.0, 0.0], pad_id=0, correct=[True])
