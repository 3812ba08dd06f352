"""Reward functions of the DPO e2e tests (loaded by file path, like a user's plug-in)."""


def even_length(prompts, completions, **_):
    """A random model is never right: any split of its samples into 'correct' / 'incorrect' will do."""
    return [float(len(c) % 2 == 0) for c in completions]
