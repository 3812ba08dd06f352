"""Built-in ``format``: 1.0 when the completion has the think/answer layout, else 0.0.

TW-GRPO's rule (arXiv 2505.24718, code ``src/open_r1/grpo.py::format_reward``): the stripped
completion matches ``<think>.*?</think>\\s*<answer>.*?</answer>[\\s!]*$`` (DOTALL, searched,
so text before <think> is tolerated as in that code) and each tag appears exactly once. The
code only counts the opening tags; counting all four is stricter and changes nothing for
completions that also match the pattern, except ones with a stray closing tag.

kwargs:
- ``mode``: think_answer (default, the rule above) | answer_only (one <answer>...</answer>
  block followed only by whitespace/"!"; think tags are not required).
- ``strict_start``: False (default, as TW-GRPO) | True: nothing may come before the first tag.
"""

from __future__ import annotations

import re
from typing import Any

from rewards.registry import register_reward

FORMAT_MODES = ("think_answer", "answer_only")

_PATTERNS = {
    "think_answer": (
        re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>[\s!]*$", re.DOTALL),
        ("<think>", "</think>", "<answer>", "</answer>"),
    ),
    "answer_only": (re.compile(r"<answer>.*?</answer>[\s!]*$", re.DOTALL), ("<answer>", "</answer>")),
}


def has_format(text: str, mode: str = "think_answer", strict_start: bool = False) -> bool:
    pattern, tags = _PATTERNS[mode]
    text = text.strip()
    if any(text.count(tag) != 1 for tag in tags):
        return False
    match = pattern.search(text)
    return match is not None and (not strict_start or match.start() == 0)


@register_reward("format")
def format_reward(
    prompts: list[str],
    completions: list[str],
    mode: str = "think_answer",
    strict_start: bool = False,
    **kwargs: Any,
) -> list[float]:
    if mode not in FORMAT_MODES:
        raise ValueError(f"format: mode={mode!r} is not one of {FORMAT_MODES}")
    return [float(has_format(text, mode, strict_start)) for text in completions]
