"""RewardScorer: weighted sums, None handling, metrics, bad output, skip mode, timeouts."""

import math
import threading
from pathlib import Path

import pytest

from rewards import RewardError, RewardLoadError, RewardScorer
from rewards.builtins.math_answer import math_answer

HERE = Path(__file__).parent
SAMPLES = "reward_samples.py:"


def make(*entries, **kwargs):
    functions = [e if isinstance(e, dict) else {"name": e} for e in entries]
    for f in functions:
        if isinstance(f["name"], str) and f["name"].startswith(":"):
            f["name"] = SAMPLES + f["name"][1:]
    return RewardScorer(functions, base_dir=HERE, **kwargs)


def run(scorer, completions, columns=None, ids=None, step=0):
    n = len(completions)
    return scorer.score(["p"] * n, completions, columns or {}, ids or [[1]] * n, {"step": step, "total_steps": 10})


def test_weighted_sum_and_none_handling():
    scorer = make({"name": ":length_reward", "weight": 0.5}, {"name": ":only_tagged", "weight": 2.0})
    result = run(scorer, ["<x>ab", "abcd"])
    # sample 0: 0.5 * 5 + 2 * 1 = 4.5; sample 1: only_tagged does not apply -> 0.5 * 4
    assert result.total == [4.5, 2.0]
    assert result.per_function == {"length_reward": [5.0, 4.0], "only_tagged": [1.0, None]}
    assert result.metrics["reward/only_tagged/applied_frac"] == 0.5
    assert result.metrics["reward/only_tagged/mean"] == 1.0
    assert result.metrics["reward/length_reward/mean"] == 4.5
    assert result.metrics["reward/total/mean"] == 3.25
    assert result.metrics["reward/no_function_applied"] == 0.0
    assert result.errors == 0 and result.metrics["reward/skipped_errors"] == 0.0


def test_sample_no_function_applies_gets_zero_and_is_counted():
    result = run(make(":only_tagged"), ["a", "<x>", "b"])
    assert result.total == [0.0, 1.0, 0.0]
    assert result.metrics["reward/no_function_applied"] == 2.0
    assert "reward/only_tagged/mean" in result.metrics


def test_columns_state_ids_and_bound_kwargs_reach_the_function():
    scorer = make(":uses_column", ":echo_state", {"name": ":scaled", "kwargs": {"scale": 3.0}})
    result = run(scorer, ["4", "5"], columns={"answer": ["4", "6"]}, ids=[[1, 2], [1]], step=2)
    assert result.per_function == {"uses_column": [1.0, 0.0], "echo_state": [4.0, 3.0], "scaled": [3.0, 3.0]}
    assert result.total == [8.0, 6.0]


def test_builtins_with_real_columns():
    scorer = make("math_answer", {"name": "format", "weight": 0.5}, {"name": "overlong_penalty",
                  "kwargs": {"max_len": 4, "cache_len": 2}})
    completions = ["<think>t</think><answer>3</answer>", "<answer>4</answer>"]
    result = run(scorer, completions, columns={"answer": ["3", "5"]}, ids=[[1, 2, 3], [1]])
    # sample 0: 1 + 0.5 * 1 + (2 - 3) / 2 = 1.0; sample 1: 0 + 0 + 0
    assert result.total == [1.0, 0.0]


def test_async_function_and_bools():
    result = run(make(":async_reward", ":bools"), ["a", "b"])
    assert result.per_function == {"async_reward": [2.0, 2.0], "bools": [1.0, 0.0]}  # bool -> 0/1


def test_callable_entry_and_duplicate_labels():
    scorer = make({"name": math_answer}, {"name": "format"}, {"name": "format", "kwargs": {"mode": "answer_only"}})
    assert scorer.labels == ["math_answer", "format", "format_2"]


@pytest.mark.parametrize(
    "name, fragments",
    [
        (":returns_nan", ["reward_samples.py:returns_nan", "non-finite value nan", "sample 1 of 2", "'b'"]),
        (":returns_inf", ["non-finite value inf", "sample 0 of 2"]),
        (":returns_string", ["a non-number: str '0.5'", "sample 1"]),
        (":wrong_length", ["returned 1 values for 2 samples"]),
        (":not_a_list", ["returned a float (1.0) instead of a list"]),
        (":raises", ["raised ZeroDivisionError: boom in reward"]),
        (":no_var_kwargs", ["unexpected keyword argument", "add **kwargs"]),
    ],
)
def test_bad_output_raises_naming_function_and_sample(name, fragments):
    with pytest.raises(RewardError) as info:
        run(make(name), ["a", "b"])
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    "name, errors, values",
    [
        (":returns_nan", 1, [1.0, 0.0]),
        (":returns_string", 1, [1.0, 0.0]),
        (":wrong_length", 2, [0.0, 0.0]),  # the whole call is spoiled
        (":raises", 2, [0.0, 0.0]),
    ],
)
def test_skip_mode_scores_zero_and_counts(name, errors, values):
    scorer = make(name, {"name": ":scaled", "kwargs": {"scale": 1.0}}, on_error="skip")
    result = run(scorer, ["a", "b"])
    label = scorer.labels[0]
    assert result.per_function[label] == values
    assert result.total == [v + 1.0 for v in values]
    assert result.errors == errors
    assert result.metrics[f"reward/{label}/errors"] == errors
    assert result.metrics["reward/skipped_errors"] == errors
    assert result.metrics["reward/scaled/errors"] == 0.0


def test_timeout_sync_and_async():
    release = threading.Event()

    def slow(prompts, completions, **kwargs):
        release.wait(5)
        return [1.0] * len(completions)

    async def slow_async(prompts, completions, **kwargs):
        import asyncio

        await asyncio.sleep(5)

    try:
        for fn in (slow, slow_async):
            with pytest.raises(RewardError, match=r"slow.*did not finish within rewards.timeout_s=0.5 s"):
                run(RewardScorer([{"name": fn}], timeout_s=0.5), ["a"])
        skipped = run(RewardScorer([{"name": slow}], timeout_s=0.5, on_error="skip"), ["a"])
        assert skipped.total == [0.0] and skipped.errors == 1
    finally:
        release.set()  # let the abandoned worker threads finish


@pytest.mark.parametrize(
    "entry, kwargs, fragment",
    [
        ({"name": "length_budget", "kwargs": {"budget_int": 5}}, {}, "unknown kwargs ['budget_int']"),
        ({"name": ":no_var_kwargs", "kwargs": {"x": 1}}, {}, "unknown kwargs ['x']"),
        ({"name": "format", "kwargs": {"completion_ids": 1}}, {}, "passed by the scorer itself"),
        ({"name": "format", "weight": math.nan}, {}, "rewards.functions[0].weight"),
        ({"name": ""}, {}, "rewards.functions[0].name"),
        ({"name": "format"}, {"on_error": "ignore"}, "rewards.on_error='ignore'"),
    ],
)
def test_config_errors(entry, kwargs, fragment):
    with pytest.raises(RewardLoadError) as info:
        make(entry, **kwargs)
    assert fragment in str(info.value)


def test_empty_function_list():
    with pytest.raises(RewardLoadError, match="rewards.functions is empty"):
        RewardScorer([])


def test_batch_shape_errors_and_kwarg_column_collision():
    scorer = make({"name": ":scaled", "kwargs": {"scale": 2.0}})
    with pytest.raises(RewardError, match="column 'answer' has 1 values for 2"):
        run(scorer, ["a", "b"], columns={"answer": ["1"]})
    with pytest.raises(RewardError, match="3 prompts for 2 completions"):
        scorer.score(["p"] * 3, ["a", "b"], {}, [[1], [1]], {})
    with pytest.raises(RewardError, match=r"'reward_samples.py:scaled'.*\['scale'\] collide with dataset columns"):
        run(scorer, ["a"], columns={"scale": [1.0]})


def test_accepts_config_objects():
    from dataclasses import dataclass, field

    @dataclass
    class FnConfig:  # the shape of rl.config.RewardFnConfig
        name: str
        weight: float = 1.0
        kwargs: dict = field(default_factory=dict)

    scorer = RewardScorer([FnConfig("format", 2.0, {"mode": "answer_only"})])
    assert run(scorer, ["<answer>1</answer>"]).total == [2.0]
