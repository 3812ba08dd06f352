"""Built-in Countdown task: reach a target with the given numbers using + - * /.

Self-contained (standard library only, no ``rl`` imports) so that the verifier can
move into the ``rewards`` package unchanged.

Generation (``data.task`` knobs): ``num_operands`` numbers of exactly ``digits``
digits each (1 digit: 1..9); the target is the value of a random expression that
uses every number once with + - * and exact division, kept when it is a positive
integer below ``10 ** (digits + 1)`` and is not one of the numbers. So every
problem is solvable. A solution may use any subset of the numbers, each at most
once. Distinct problems (by sorted numbers and target) come from one
``random.Random(seed)`` stream, test first, then train: the splits are disjoint and
the test split does not depend on ``num_train``.

Checking (``check_countdown``) parses the expression with ``ast`` and walks the
tree: only integer literals, + - * / and parentheses are allowed; nothing is ever
``eval``-ed; division is exact (``fractions.Fraction``).
"""

from __future__ import annotations

import random

TEMPLATES = {
    "short": "Using the numbers {numbers}, write an expression that equals {target}. You may use "
             "+ - * / and each number at most once. Answer with just the expression.",
    "cot": "Using the numbers {numbers}, write an expression that equals {target}. You may use "
           "+ - * / and each number at most once. Think step by step, then give the final expression "
           "inside <answer></answer> tags, for example <answer>(1 + 2) * 3</answer>.",
}
EXTRA_COLUMNS = ["numbers", "target"]
_MAX_ATTEMPTS_PER_PROBLEM = 1000


def _below(rng: random.Random, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def _combine(rng: random.Random, numbers: list[int]) -> tuple[int, str]:
    """A random expression using every number once, exact integer steps only: (value, text)."""
    pool = [(x, str(x)) for x in numbers]
    while len(pool) > 1:
        a = pool.pop(_below(rng, len(pool)))
        b = pool.pop(_below(rng, len(pool)))
        op = "+-*/"[_below(rng, 4)]
        if op == "-" and a[0] < b[0]:
            a, b = b, a
        if op == "-" and a[0] == b[0]:
            op = "+"  # a zero would make the rest of the expression trivial
        if op == "/":
            if b[0] in (0, 1) or a[0] % b[0]:
                a, b = b, a
            if b[0] in (0, 1) or a[0] % b[0]:
                op = "*"
        value = {"+": a[0] + b[0], "-": a[0] - b[0], "*": a[0] * b[0], "/": a[0] // b[0] if b[0] else 0}[op]
        pool.append((value, f"({a[1]} {op} {b[1]})"))
    value, text = pool[0]
    return value, text[1:-1] if text.startswith("(") else text


def check(cfg) -> None:
    """Countdown's narrower ranges of the data.task knobs (rl/config.py validate runs this for a recipe)."""
    if not 1 <= cfg.digits <= 4:
        raise ValueError(f"data.task.digits: {cfg.digits} is out of range for builtin:countdown (valid: in [1, 4])")
    if not 2 <= cfg.num_operands <= 6:
        raise ValueError(f"data.task.num_operands: {cfg.num_operands} is out of range for builtin:countdown "
                         "(valid: in [2, 6])")


def make_problems(cfg, split: str) -> list[dict]:
    """Distinct problems ``{"numbers", "target", "solution"}`` of ``split`` ("train" or "test")."""
    if split not in ("train", "test"):
        raise ValueError(f"builtin:countdown has splits 'train' and 'test', not {split!r}")
    check(cfg)
    lo, hi, cap = 10 ** (cfg.digits - 1), 10 ** cfg.digits - 1, 10 ** (cfg.digits + 1)
    rng = random.Random(cfg.seed)
    want = cfg.num_test + cfg.num_train
    seen: set[tuple] = set()
    out: list[dict] = []
    misses = 0
    while len(out) < want:
        numbers = [lo + _below(rng, hi - lo + 1) for _ in range(cfg.num_operands)]
        target, solution = _combine(rng, numbers)
        key = (tuple(sorted(numbers)), target)
        if 0 < target < cap and target not in numbers and key not in seen:
            seen.add(key)
            out.append({"numbers": numbers, "target": target, "solution": solution})
            misses = 0
        else:
            misses += 1
            if misses > _MAX_ATTEMPTS_PER_PROBLEM:
                raise ValueError(f"builtin:countdown: found only {len(out)} distinct problems for digits="
                                 f"{cfg.digits} num_operands={cfg.num_operands}; lower data.task.num_train/num_test")
    return out[:cfg.num_test] if split == "test" else out[cfg.num_test:]


def generate(cfg, split: str) -> list[dict]:
    """Rows ``{"prompt", "answer" (target as a string), "numbers" (list[int]), "target" (int)}``."""
    template = TEMPLATES.get(cfg.template)
    rows = []
    for p in make_problems(cfg, split):
        prompt = template.format(numbers=", ".join(map(str, p["numbers"])), target=p["target"])
        rows.append({"prompt": prompt, "answer": str(p["target"]), "numbers": p["numbers"], "target": p["target"]})
    return rows




# The checker lives with the reward functions (rewards never import rl).
from rewards.builtins.countdown import check_countdown, countdown_reward  # noqa: E402,F401
