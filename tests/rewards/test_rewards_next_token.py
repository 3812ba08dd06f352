"""Built-in next_token_match (RMT's r_pos = 1[y = tau_pos]), cases worked out by hand."""

from __future__ import annotations

import pytest

from rewards.builtins.next_token import next_token_match, prediction


def test_prediction_is_the_first_word_after_the_last_think_block():
    assert prediction("<think>maybe 3</think> 4 is next") == "4"
    assert prediction("<think>a</think><think>b</think>\n+ then") == "+"
    assert prediction("  56 because") == "56"  # no think block: the whole completion
    assert prediction("<think>only thoughts</think>") == ""


def test_token_mode_is_exact_match_on_the_stripped_target():
    completions = ["<think>x</think> 1", "<think>x</think> 15", "1", "<think>x</think>", "<think>x</think> +"]
    targets = ["1", " 1", "2", "1", " +"]
    got = next_token_match(["p"] * 5, completions, target=targets)
    assert got == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_prefix_mode_accepts_a_longer_prediction_that_agrees_with_the_text():
    completions = ["15", "16", "the", "then"]
    targets = ["1", "1", " the", " the"]
    conts = ["15 = 3 * 5", "15 = 3 * 5", " the cat", " the cat"]
    got = next_token_match(["p"] * 4, completions, match="prefix", target=targets, continuation=conts)
    assert got == [1.0, 0.0, 1.0, 0.0]


def test_blank_target_has_no_reference_and_bad_calls_name_the_function():
    assert next_token_match(["p"], ["x"], target=["\n"]) == [None]
    with pytest.raises(KeyError, match="next_token_match.*'target'"):
        next_token_match(["p"], ["x"], answer=["1"])
    with pytest.raises(ValueError, match="match='fuzzy'"):
        next_token_match(["p"], ["x"], match="fuzzy", target=["1"])
