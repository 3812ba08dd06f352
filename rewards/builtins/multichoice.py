"""Built-in ``soft_multichoice``: TW-GRPO's soft multiple-choice accuracy (arXiv 2505.24718,
code ``src/open_r1/grpo.py::accuracy_reward``).

    r = 1.0            if math-verify finds the prediction equivalent to the reference
      = |P| / |G|      else if P ⊆ G
      = 0              otherwise
P and G are sets of options: the <answer> content (the whole text when there is no block),
spaces removed, split on ",". Example: G = {A, C}; "A" -> 0.5, "A,C" -> 1.0, "A,B" -> 0.

TW-GRPO's code tries math-verify first; as the subset score never exceeds 1, computing the
subset score first and calling math-verify only when it is below 1 gives the same reward.

kwargs:
- ``verify_scope``: answer (default: math-verify sees the extracted prediction, so numbers in
  the reasoning cannot earn credit) | completion (TW-GRPO's code: the whole completion).
- ``answer_column`` = "answer"; ``verify_timeout_s`` = 5.
Returns None where the sample has no reference answer.
"""

from __future__ import annotations

from typing import Any

from rewards.builtins.columns import has_reference, require_column
from rewards.extract import answer_tag
from rewards.mathverify import math_equal
from rewards.registry import register_reward

VERIFY_SCOPES = ("answer", "completion")


def options(text: str) -> set[str]:
    """The option set of an answer: <answer> content (or the whole text), spaces removed, split on ","."""
    inner = answer_tag(text)
    content = inner if inner is not None else text.strip()
    return set(content.replace(" ", "").split(","))


def score_one(completion: str, reference: str, verify_scope: str, verify_timeout_s: int) -> float:
    predicted, gold = options(completion), options(reference)
    subset_score = len(predicted) / len(gold) if predicted <= gold else 0.0
    if subset_score == 1.0:
        return 1.0
    tagged = answer_tag(completion)
    prediction_text = completion if verify_scope == "completion" or tagged is None else tagged
    gold_text = answer_tag(reference) or reference.strip()
    return 1.0 if math_equal(gold_text, prediction_text, timeout_s=verify_timeout_s) else subset_score


@register_reward("soft_multichoice", self_timed=True)
def soft_multichoice(
    prompts: list[str],
    completions: list[str],
    verify_scope: str = "answer",
    answer_column: str = "answer",
    verify_timeout_s: int = 5,
    **columns: Any,
) -> list[float | None]:
    if verify_scope not in VERIFY_SCOPES:
        raise ValueError(f"soft_multichoice: verify_scope={verify_scope!r} is not one of {VERIFY_SCOPES}")
    references = require_column(columns, answer_column, "soft_multichoice")
    return [
        score_one(text, str(ref), verify_scope, verify_timeout_s) if has_reference(ref) else None
        for text, ref in zip(completions, references)
    ]
