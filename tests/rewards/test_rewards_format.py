"""Built-in format: TW-GRPO's think/answer rule and the answer_only mode."""

import pytest

from rewards.builtins.format import format_reward


def fmt(*texts, **kwargs):
    return format_reward(["p"] * len(texts), list(texts), **kwargs)


def test_think_answer_rule_hand_checked():
    assert fmt(
        "<think>reason</think><answer>4</answer>",
        "  <think>a\nb</think>\n\n<answer>4</answer> !! \n",  # whitespace and "!" may follow
        "<think>a</think><answer>4</answer> done",  # text after </answer>
        "<answer>4</answer><think>a</think>",  # wrong order
        "<think>a</think><think>b</think><answer>4</answer>",  # think twice
        "<think>a</think><answer>4</answer><answer>5</answer>",  # answer twice
        "<think>a</think></think><answer>4</answer>",  # stray closing tag
        "<think>a</think>",  # no answer
        "intro <think>a</think><answer>4</answer>",  # text before: tolerated, as in TW-GRPO's re.search
    ) == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_strict_start_rejects_leading_text():
    assert fmt("intro <think>a</think><answer>4</answer>", " <think>a</think><answer>4</answer>",
               strict_start=True) == [0.0, 1.0]


def test_answer_only_mode():
    assert fmt(
        "<answer>4</answer>",
        "Some reasoning. <answer>4</answer>\n",
        "<answer>4</answer> trailing",
        "<answer>4</answer><answer>4</answer>",
        "4",
        mode="answer_only",
    ) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_unknown_mode_and_extra_kwargs():
    with pytest.raises(ValueError, match="mode='tags'"):
        fmt("x", mode="tags")
    assert format_reward(["p"], ["<answer>1</answer>"], mode="answer_only", answer=["1"], trainer_state={}) == [1.0]
