"""Countdown answer checking: reach ``target`` with ``numbers`` using + - * / (each number at most once).

Used by the built-in ``builtin:countdown`` task (rl/tasks/countdown.py generates the problems).
Expressions are parsed with ``ast`` and evaluated with exact fractions; nothing is ever
``eval``-ed. The reward reads the ``<answer>`` block if present, else every arithmetic run
in the completion, and is 1.0 when one of them is a valid solution.
"""

from __future__ import annotations

import ast
import re
from collections import Counter
from fractions import Fraction

from rewards.registry import register_reward

MAX_EXPRESSION_CHARS = 300  # a real answer is short; this bounds parsing work on junk


class _Rejected(Exception):
    pass

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def _value(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _value(node.left, used), _value(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _Rejected("division by zero")
        return _BINOPS[type(node.op)](left, right)
    raise _Rejected(f"{type(node).__name__} is not allowed")  # names, calls, unary minus, **, floats ...


def check_countdown(expression: str, numbers: list[int], target: int) -> bool:
    """True iff ``expression`` uses only + - * / ( ) and integer literals, each literal one of
    ``numbers`` (each number at most as often as it is given), and equals ``target`` exactly."""
    if not isinstance(expression, str) or len(expression) > MAX_EXPRESSION_CHARS:
        return False
    text = expression.replace("×", "*").replace("÷", "/").strip()
    try:
        tree = ast.parse(text, mode="eval")
        used: list[int] = []
        value = _value(tree.body, used)
    except (SyntaxError, ValueError, RecursionError, MemoryError, _Rejected):
        return False
    if Counter(used) - Counter(int(n) for n in numbers):  # a number used more often than given
        return False
    return value == int(target)


_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract_expression(completion: str) -> str:
    """The last ``<answer>...</answer>`` body, else the last non-empty line; markdown stripped."""
    tagged = _ANSWER_TAG.findall(completion)
    if tagged:
        text = tagged[-1]
    else:
        lines = [ln for ln in completion.strip().splitlines() if ln.strip()]
        text = lines[-1] if lines else ""
    return text.strip().strip("`$*. ")


_MATH_RUN = re.compile(r"[0-9+\-*/×÷() ]*[0-9)][0-9+\-*/×÷() ]*")


def candidate_expressions(completion: str) -> list[str]:
    """What to try: each side of an ``=`` in the extracted answer, and the last run of
    arithmetic characters in it ("The expression is 9 + 4 * 2" -> "9 + 4 * 2")."""
    out = []
    for part in extract_expression(completion).split("="):
        runs = _MATH_RUN.findall(part)
        for c in (part.strip(), runs[-1].strip() if runs else ""):
            if c and c not in out:
                out.append(c)
    return out


@register_reward("countdown")
def countdown_reward(prompts: list[str], completions: list[str], numbers: list[list[int]],
                     target: list[int], **_) -> list[float]:
    """1.0 when the completion's expression reaches the target, else 0.0 (reward-function shape).

    "25 + 21 = 46" counts: each side of an ``=`` is tried on its own.
    """
    return [1.0 if any(check_countdown(c, nums, tgt) for c in candidate_expressions(completion)) else 0.0
            for completion, nums, tgt in zip(completions, numbers, target)]
