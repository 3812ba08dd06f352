"""Built-ins overlong_penalty (DAPO) and length_budget (RMT), values worked out by hand."""

import pytest

from rewards.builtins.length_budget import budget_at, length_budget, triangular
from rewards.builtins.overlong import overlong_penalty


def test_overlong_penalty_table():
    # max_len 10, cache_len 4: free up to 6 tokens, then (6 - L) / 4, then -1 past 10.
    lengths = [0, 6, 7, 8, 10, 11]
    ids = [[1] * n for n in lengths]
    got = overlong_penalty(["p"] * 6, ["c"] * 6, completion_ids=ids, max_len=10, cache_len=4)
    assert got == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]


@pytest.mark.parametrize(
    "kwargs, match",
    [({}, "needs kwargs max_len"), ({"max_len": 10, "cache_len": 0}, "cache_len"),
     ({"max_len": 10, "cache_len": 11}, "cache_len"), ({"max_len": 0, "cache_len": 1}, "max_len")],
)
def test_overlong_penalty_bad_kwargs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        overlong_penalty(["p"], ["c"], completion_ids=[[1]], **kwargs)


def test_budget_schedule():
    assert budget_at(0, 100, 800, 1, 0.2) == 800
    assert budget_at(50, 100, 800, 1, 0.2) == 357  # 800 * 0.2 ** 0.5 = 357.77
    assert budget_at(100, 100, 800, 1, 0.2) == 160
    assert budget_at(100, 100, 3, 2, 0.2) == 2  # floor(0.6) = 0 is lifted to B_min


def test_triangle():
    assert [triangular(x, 10, 1.0) for x in (0, 5, 10, 15, 20, 25)] == [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    assert triangular(5, 10, 2.0) == 1.0


def test_length_budget_words():
    state = {"step": 0, "total_steps": 10}
    texts = [
        "<think>" + " ".join(["w"] * 4) + "</think><answer>x</answer>",  # l = 4 -> 4/8
        "<think>" + " ".join(["w"] * 12) + "</think>",  # l = 12 -> (16 - 12)/8
        "one two",  # no think tags: the whole completion, l = 2
        "<think></think>",  # l = 0
    ]
    got = length_budget(["p"] * 4, texts, trainer_state=state, budget_init=8)
    assert got == [0.5, 0.5, 0.25, 0.0]


def test_length_budget_uses_step_for_budget():
    text = ["<think>" + "w " * 4 + "</think>"]
    # B_t = floor(8 * 0.5 ** (1/1)) = 4 at the last step: l = 4 hits the peak.
    assert length_budget(["p"], text, trainer_state={"step": 1, "total_steps": 1}, budget_init=8, gamma=0.5) == [1.0]


def test_length_budget_tokens_mode():
    state = {"step": 0, "total_steps": 1}
    # no think tags: l = len(completion_ids)
    assert length_budget(["p"], ["abc"], completion_ids=[[1] * 6], trainer_state=state,
                         count="tokens", budget_init=8) == [0.75]
    # think tags, no tokenizer: l = 10 ids * 20 CoT chars / 40 chars = 5
    text = "<think>" + "a" * 20 + "</think>" + "b" * 5  # 7 + 20 + 8 + 5 = 40 chars
    assert length_budget(["p"], [text], completion_ids=[[1] * 10], trainer_state=state,
                         count="tokens", budget_init=10) == [0.5]


def test_length_budget_tokens_with_tokenizer():
    from rewards.builtins.length_budget import _load_tokenizer
    from rl.models import resolve_model  # tests may import rl; the rewards package does not

    path = str(resolve_model("smollm2-135m"))
    cot = " the cat sat on the mat"
    n_tokens = _load_tokenizer(path)(cot)
    assert n_tokens == 6  # " the| cat| sat| on| the| mat" in SmolLM2's BPE
    text = f"<think>{cot}</think><answer>1</answer>"
    got = length_budget(["p"], [text], completion_ids=[[0] * 50], trainer_state={"step": 0, "total_steps": 1},
                        count="tokens", tokenizer=path, budget_init=2 * n_tokens)
    assert got == [0.5]


@pytest.mark.parametrize(
    "kwargs, match",
    [({"trainer_state": None}, "trainer_state"), ({"trainer_state": {"step": 0}}, "total_steps"),
     ({"trainer_state": {"step": 0, "total_steps": 0}}, "total_steps"),
     ({"count": "chars"}, "count='chars'"), ({"count": "tokens", "completion_ids": None}, "completion_ids")],
)
def test_length_budget_errors(kwargs, match):
    base = {"trainer_state": {"step": 0, "total_steps": 1}, "completion_ids": [[1]]}
    with pytest.raises(ValueError, match=match):
        length_budget(["p"], ["x"], **{**base, **kwargs})


def test_length_budget_budget_column_overrides_the_schedule():
    # RMT passes each prompt's B_t: 4 words against budgets 4 (peak), 8 (half way up), 2 (at 2B: zero)
    texts = ["<think>a b c d</think> 7"] * 3
    got = length_budget(["p"] * 3, texts, trainer_state=None, budget=[4, 8, 2])
    assert got == [1.0, 0.5, 0.0]
    with pytest.raises(ValueError, match="column 'budget'"):
        length_budget(["p"], texts[:1], budget=[0])
