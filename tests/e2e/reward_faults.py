"""Reward functions used by the e2e tests (loaded by file path, like a user's plug-in)."""


def number_reward(prompts, completions, answer, **_):
    """1 if the reference answer appears in the completion: noisy but mixed on a random model."""
    return [float(str(a) in c) + 0.1 * (len(c) % 3) for c, a in zip(completions, answer)]


def explode_at_step_3(prompts, completions, trainer_state, **kw):
    if trainer_state["step"] == 2:  # 0-based: the third step
        raise RuntimeError("reward backend unavailable")
    return number_reward(prompts, completions, **kw)


def zero_reward(prompts, completions, **_):
    return [0.0] * len(completions)


def explode_at_step_2(prompts, completions, trainer_state, **kw):
    if trainer_state["step"] == 1:  # 0-based: the second step
        raise RuntimeError("reward backend unavailable")
    return zero_reward(prompts, completions)
