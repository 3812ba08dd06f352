"""Built-in ``math_answer``: 1.0 when the extracted answer equals the reference, else 0.0.

Checking order (math-verify is slow and is skipped when it cannot change the verdict):
1. Fast path, when the reference is an integer (the built-in arithmetic/countdown tasks) and
   the extracted answer is a plain number ("12", "-3", "1,234", "x = 12", "12.0"): exact
   comparison of values.
2. Otherwise math-verify equivalence (``rewards.mathverify.math_equal``).

kwargs: ``extract`` = auto (default: <answer> content, else \\boxed{}, else the last number)
| answer_tag | boxed | last_number; ``answer_column`` = "answer"; ``verify_timeout_s`` = 5
(math-verify's per-call timeout, main thread only). Returns None where the sample has no
reference answer (TRL's convention for "does not apply").
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from rewards.builtins.columns import has_reference, require_column
from rewards.extract import EXTRACT_MODES, extract_answer, to_number
from rewards.mathverify import math_equal
from rewards.registry import register_reward


def integer_reference(reference: Any) -> int | None:
    """The reference as an int when it is one (7, "7", "-1,234", 7.0); None otherwise."""
    if isinstance(reference, bool):
        return None
    if isinstance(reference, int):
        return reference
    if isinstance(reference, float):
        return int(reference) if reference.is_integer() else None
    value = to_number(str(reference))
    return int(value) if value is not None and value.denominator == 1 else None


def score_one(completion: str, reference: Any, extract: str, verify_timeout_s: int) -> float:
    predicted = extract_answer(completion, extract)
    if predicted is None:
        return 0.0
    ref_int = integer_reference(reference)
    if ref_int is not None:
        value = to_number(predicted)
        if value is not None:
            return float(value == Fraction(ref_int))
    return float(math_equal(str(reference), predicted, timeout_s=verify_timeout_s))


@register_reward("math_answer", self_timed=True)
def math_answer(
    prompts: list[str],
    completions: list[str],
    extract: str = "auto",
    answer_column: str = "answer",
    verify_timeout_s: int = 5,
    **columns: Any,
) -> list[float | None]:
    if extract not in EXTRACT_MODES:
        raise ValueError(f"math_answer: extract={extract!r} is not one of {EXTRACT_MODES}")
    references = require_column(columns, answer_column, "math_answer")
    return [
        score_one(text, ref, extract, verify_timeout_s) if has_reference(ref) else None
        for text, ref in zip(completions, references)
    ]
