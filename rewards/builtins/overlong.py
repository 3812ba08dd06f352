"""Built-in ``overlong_penalty``: DAPO's soft overlong punishment (arXiv 2503.14476, "Overlong Reward Shaping").

With L = len(completion_ids[i]) (the generated tokens, EOS included when the rollout kept it):

    R = 0                                   if L <= max_len - cache_len
      = ((max_len - cache_len) - L) / cache_len   if max_len - cache_len < L <= max_len
      = -1                                  if L > max_len

so the penalty ramps linearly from 0 to -1 over the last ``cache_len`` tokens. Add it to the
correctness reward with weight 1 (DAPO) and set ``max_len`` to rollout.max_tokens. DAPO used
max_len = 20480, cache_len = 4096; there is no default here because both depend on the recipe.
"""

from __future__ import annotations

from typing import Any

from rewards.registry import register_reward


def soft_overlong(length: int, max_len: int, cache_len: int) -> float:
    expected = max_len - cache_len
    if length <= expected:
        return 0.0
    if length <= max_len:
        return (expected - length) / cache_len
    return -1.0


def _check(max_len: Any, cache_len: Any) -> None:
    if max_len is None or cache_len is None:
        raise ValueError("overlong_penalty needs kwargs max_len (e.g. rollout.max_tokens) and cache_len")
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0:
        raise ValueError(f"overlong_penalty: max_len must be a positive int, got {max_len!r}")
    if isinstance(cache_len, bool) or not isinstance(cache_len, int) or not 0 < cache_len <= max_len:
        raise ValueError(
            f"overlong_penalty: cache_len must be an int in [1, max_len={max_len}], got {cache_len!r}"
        )


@register_reward("overlong_penalty")
def overlong_penalty(
    prompts: list[str],
    completions: list[str],
    completion_ids: list[list[int]],
    max_len: int | None = None,
    cache_len: int | None = None,
    **kwargs: Any,
) -> list[float]:
    _check(max_len, cache_len)
    return [soft_overlong(len(ids), max_len, cache_len) for ids in completion_ids]
