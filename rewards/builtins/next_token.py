"""Built-in ``next_token_match``: RMT's matching reward r_pos = 1[y = tau_pos]
(Reinforcement Mid-Training, arXiv 2509.24375, spec §5).

The prediction y is the text after the last ``</think>`` (the whole completion when there is
none); its first whitespace-separated word is compared with the target token's text (column
``target``, whitespace stripped). kwargs ``match``:

- ``token`` (default, the paper's exact match): the word equals the target.
- ``prefix``: the word starts with the target and is itself a prefix of the document's
  continuation (column ``continuation``), so "15" counts for the target "1" when the text goes
  on "15 ..." (tokenizers that split numbers into digits make ``token`` very strict).

A blank target has no word to match: the reward is None there (no reference).
"""

from __future__ import annotations

from typing import Any

from rewards.builtins.columns import has_reference, require_column
from rewards.registry import register_reward

MATCH_MODES = ("token", "prefix")


def prediction(text: str) -> str:
    """First word after the last </think> (or of the whole text); '' when there is none."""
    tail = text.rsplit("</think>", 1)[-1]
    words = tail.split()
    return words[0] if words else ""


def matches(pred: str, target: str, continuation: str | None, match: str) -> bool:
    if match == "token":
        return pred == target
    return pred.startswith(target) and continuation is not None and continuation.lstrip().startswith(pred)


@register_reward("next_token_match")
def next_token_match(prompts: list[str], completions: list[str], match: str = "token", **columns: Any) -> list[float | None]:
    if match not in MATCH_MODES:
        raise ValueError(f"next_token_match: match={match!r} is not one of {MATCH_MODES}")
    targets = require_column(columns, "target", "next_token_match")
    conts = require_column(columns, "continuation", "next_token_match") if match == "prefix" else [None] * len(targets)
    out: list[float | None] = []
    for text, target, cont in zip(completions, targets, conts):
        t = target.strip() if isinstance(target, str) else target
        out.append(float(matches(prediction(text), t, cont, match)) if has_reference(t) else None)
    return out
