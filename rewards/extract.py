"""Pull answers and reasoning out of completion text, and read plain numbers.

Shared by the built-in rewards. Conventions (tested in tests/rewards/test_rewards_extract.py):
- ``<answer>``: the LAST complete ``<answer>...</answer>`` block (a model that restates its
  answer is judged on its final word); ``<think>``: the FIRST complete block.
- ``\\boxed{...}``: the last one, with nested braces matched.
- last number: thousands separators ("1,234"), a leading minus when it is a sign ("= -3",
  "(-3)") but not when it is subtraction ("5-3" ends in 3), a decimal part only when digits
  follow the dot ("12." at a sentence end is 12), the Unicode minus "−".
"""

from __future__ import annotations

import re
from fractions import Fraction

EXTRACT_MODES = ("auto", "answer_tag", "boxed", "last_number")

_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_THINK_RE = re.compile(r"<think>(.*?)</think>", re.DOTALL)
# A minus is a sign only when not preceded by a word character or a closing bracket.
_NUMBER_RE = re.compile(r"(?<![\w)\]])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")
_PLAIN_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_THOUSANDS_RE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")


def answer_tag(text: str) -> str | None:
    """Content of the last <answer>...</answer> block, stripped; None when there is none."""
    found = _ANSWER_RE.findall(text)
    return found[-1].strip() if found else None


def think_content(text: str) -> str | None:
    """Content of the first <think>...</think> block; None when there is none."""
    match = _THINK_RE.search(text)
    return match.group(1) if match else None


def boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} whose braces close; None when there is none."""
    start = text.rfind("\\boxed")
    while start != -1:
        content = _braced_after(text, start + len("\\boxed"))
        if content is not None:
            return content.strip()
        start = text.rfind("\\boxed", 0, start)
    return None


def _braced_after(text: str, pos: int) -> str | None:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text) or text[pos] != "{":
        return None
    depth = 0
    for end in range(pos, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[pos + 1 : end]
    return None


def last_number(text: str) -> str | None:
    """The last number written in the text (see the module docstring), as written."""
    found = _NUMBER_RE.findall(text.replace("\u2212", "-"))
    return found[-1] if found else None


def extract_answer(text: str, mode: str = "auto") -> str | None:
    """The predicted answer string under ``mode`` (one of EXTRACT_MODES); None if absent.

    auto: <answer> content if a block exists, else \\boxed content, else the last number.
    """
    if mode == "answer_tag":
        return answer_tag(text)
    if mode == "boxed":
        return boxed(text)
    if mode == "last_number":
        return last_number(text)
    if mode == "auto":
        for found in (answer_tag(text), boxed(text)):
            if found is not None:
                return found
        return last_number(text)
    raise ValueError(f"extract={mode!r} is not one of {EXTRACT_MODES}")


def to_number(answer: str) -> Fraction | None:
    """Exact value of an answer that is just a number ("12", "-3", "1,234", "x = 12", "$12$.",
    "\\boxed{12}"); None when it is anything else (left to math-verify)."""
    text = answer.strip()
    inner = boxed(text)
    if inner is not None:
        text = inner
    text = text.replace("\u2212", "-").replace("$", "").replace("\\(", "").replace("\\)", "")
    # "3 + 9 = 12" states its result after the last "=".
    text = text.rsplit("=", 1)[-1].strip().rstrip(".").strip()
    if _THOUSANDS_RE.fullmatch(text):
        text = text.replace(",", "")
    if not _PLAIN_NUMBER_RE.fullmatch(text):
        return None
    return Fraction(text)
