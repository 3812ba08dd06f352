"""Built-in ``length_budget``: RMT's triangular reward on the chain-of-thought length
(Reinforcement Mid-Training, arXiv 2509.24375).

Budget: the per-sample column ``budget`` when the caller passes one (an RMT run does: B_t
from ``algorithm.rmt``, the same number its prompt states), else at training step t of T
(from ``trainer_state``: ``step``, ``total_steps``):

    B_t = max(B_min, floor(B_0 * gamma ** (t / T)))

(one review writes the exponent t/T^k; the paper note's t/T is used). Reward on the CoT length l:

    r = r_max * l / B_t              if 0 <= l <= B_t     (r(0) = 0 is our reading)
      = r_max * (2 B_t - l) / B_t    if B_t < l <= 2 B_t
      = 0                            if l > 2 B_t

RMT's total reward (1 - w) * r_match + w * r_len is two reward functions with weights 1 - w
and w (w = 0.2 suggested; not given by the paper).

The CoT is the content of the first <think>...</think> block; without one, the whole
completion. kwargs ``count`` chooses how l is measured:
- words (default): whitespace-separated words of the CoT; needs no tokenizer.
- tokens: tokens, as RMT's prompt states the budget in tokens. Without think tags
  l = len(completion_ids[i]) (exact). With think tags the CoT's own tokens are counted with
  ``tokenizer`` (a model folder or tokenizer.json, or a hub id; loaded once); without one, estimated as
  len(completion_ids[i]) * len(CoT chars) / len(completion chars).
Other kwargs: budget_init = 800 (B_0), budget_min = 1, gamma = 0.2, r_max = 1.0.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rewards.extract import think_content
from rewards.registry import register_reward

COUNT_MODES = ("words", "tokens")


def budget_at(step: int, total_steps: int, budget_init: int, budget_min: int, gamma: float) -> int:
    return max(budget_min, math.floor(budget_init * gamma ** (step / total_steps)))


def triangular(length: float, budget: int, r_max: float) -> float:
    if length <= budget:
        return r_max * length / budget
    if length <= 2 * budget:
        return r_max * (2 * budget - length) / budget
    return 0.0


@functools.lru_cache(maxsize=4)
def _load_tokenizer(name: str) -> Callable[[str], int]:
    """A token counter for ``name``: a folder or file holding tokenizer.json is read with the
    light ``tokenizers`` library; anything else (a hub id) goes through transformers."""
    path = Path(name)
    file = path / "tokenizer.json" if path.is_dir() else path
    if file.name == "tokenizer.json" and file.is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(file))
        return lambda text: len(fast.encode(text, add_special_tokens=False).ids)
    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(name)
    return lambda text: len(slow.encode(text, add_special_tokens=False))


def cot_length(text: str, ids: list[int], count: str, tokenizer: str | None) -> float:
    cot = think_content(text)
    if count == "words":
        return len((text if cot is None else cot).split())
    if cot is None:
        return len(ids)
    if tokenizer is not None:
        return _load_tokenizer(tokenizer)(cot)
    return round(len(ids) * len(cot) / len(text)) if text else 0


def _steps(trainer_state: Any) -> tuple[int, int]:
    if (
        not isinstance(trainer_state, dict)
        or "step" not in trainer_state
        or "total_steps" not in trainer_state
    ):
        raise ValueError(
            f"length_budget needs trainer_state with 'step' and 'total_steps', got {trainer_state!r}"
        )
    step, total = trainer_state["step"], trainer_state["total_steps"]
    if total <= 0:
        raise ValueError(f"length_budget: trainer_state total_steps must be > 0, got {total!r}")
    return step, total


@register_reward("length_budget")
def length_budget(
    prompts: list[str],
    completions: list[str],
    completion_ids: list[list[int]] | None = None,
    trainer_state: dict | None = None,
    count: str = "words",
    tokenizer: str | None = None,
    budget_init: int = 800,
    budget_min: int = 1,
    gamma: float = 0.2,
    r_max: float = 1.0,
    **kwargs: Any,
) -> list[float]:
    if count not in COUNT_MODES:
        raise ValueError(f"length_budget: count={count!r} is not one of {COUNT_MODES}")
    if count == "tokens" and completion_ids is None:
        raise ValueError("length_budget: count='tokens' needs completion_ids")
    if budget_min < 1:
        raise ValueError(f"length_budget: budget_min must be >= 1, got {budget_min!r}")
    if "budget" in kwargs:
        budgets = [int(b) for b in kwargs["budget"]]
        if min(budgets, default=1) < 1:
            raise ValueError(f"length_budget: column 'budget' must hold budgets >= 1, got {min(budgets)}")
    else:
        budgets = [budget_at(*_steps(trainer_state), budget_init, budget_min, gamma)] * len(completions)
    ids_per_sample = completion_ids if completion_ids is not None else [[]] * len(completions)
    return [
        triangular(cot_length(text, ids, count, tokenizer), b, r_max)
        for text, ids, b in zip(completions, ids_per_sample, budgets)
    ]
