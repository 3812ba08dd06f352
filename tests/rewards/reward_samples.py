"""Reward functions used by the loader/scorer tests, loaded by file path (not a test module)."""

import asyncio


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


def only_tagged(prompts, completions, **kwargs):
    """None where the sample has no tag: the function does not apply there."""
    return [1.0 if "<x>" in c else None for c in completions]


def uses_column(prompts, completions, answer, **kwargs):
    return [float(c == a) for c, a in zip(completions, answer)]


def scaled(prompts, completions, scale=1.0, **kwargs):
    return [scale] * len(completions)


def echo_state(prompts, completions, trainer_state, completion_ids, **kwargs):
    return [float(trainer_state["step"] + len(ids)) for ids in completion_ids]


async def async_reward(prompts, completions, **kwargs):
    await asyncio.sleep(0)
    return [2.0] * len(completions)


def bools(prompts, completions, **kwargs):
    return [True, False][: len(completions)]


def returns_nan(prompts, completions, **kwargs):
    return [1.0, float("nan")]


def returns_inf(prompts, completions, **kwargs):
    return [float("inf"), 1.0]


def returns_string(prompts, completions, **kwargs):
    return [1.0, "0.5"]


def wrong_length(prompts, completions, **kwargs):
    return [1.0]


def not_a_list(prompts, completions, **kwargs):
    return 1.0


def raises(prompts, completions, **kwargs):
    raise ZeroDivisionError("boom in reward")


def no_var_kwargs(prompts, completions):
    return [0.0] * len(completions)


NOT_CALLABLE = 3
