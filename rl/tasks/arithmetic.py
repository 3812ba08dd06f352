"""Built-in arithmetic task: "What is 23 + 58?" with an exact integer answer.

Problems are drawn from ``data.task`` knobs:

* ``ops``: families to draw from, one picked uniformly per problem. ``add`` / ``sub`` /
  ``mul`` use that operator throughout; ``mixed`` draws each operator from + - * and
  the answer follows the usual precedence (``*`` first).
* ``digits``: every operand has exactly this many digits (1 digit: 1..9, no zeros).
* ``num_operands``: operands per problem (>= 2).

``sub`` puts the largest operand first, so two-operand differences are never
negative; with three or more operands a negative answer is possible.

Determinism and disjointness: one ``random.Random(seed)`` stream draws distinct
problems (distinct = distinct expression text, so ``2 + 3`` and ``3 + 2`` are
different problems); the first ``num_test`` go to the test split and the next
``num_train`` to the train split. The test split therefore does not depend on
``num_train``, and no test expression ever appears in train. When the knobs allow
fewer distinct problems than requested (e.g. 1-digit addition has 81), the test
split takes at most half of them and train the rest, with a warning.
Only ``Random.random()`` is used (its stream is stable across Python versions).
"""

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass

log = logging.getLogger(__name__)

_OP_OF = {"add": "+", "sub": "-", "mul": "*"}

# Wordings (the names are data.task.template's choices, rl/config.py TaskConfig): {expr} is the expression. "short" asks for the bare number; "cot" lets the model
# reason and puts the result in <answer> tags (what the format/answer-tag rewards look for).
TEMPLATES = {
    "short": "What is {expr}? Answer with just the number.",
    "cot": "What is {expr}? Think step by step, then give the final answer as a number inside "
           "<answer></answer> tags, for example <answer>42</answer>.",
}

# Above this many possible problems, draw by rejection; below it, enumerate them all.
_ENUMERATE_BELOW = 200_000


@dataclass(frozen=True)
class Problem:
    operands: tuple[int, ...]
    operators: tuple[str, ...]  # len(operands) - 1 symbols from + - *

    @property
    def expression(self) -> str:
        parts = [str(self.operands[0])]
        for op, x in zip(self.operators, self.operands[1:]):
            parts += [op, str(x)]
        return " ".join(parts)

    @property
    def answer(self) -> int:
        return evaluate(self.operands, self.operators)


def evaluate(operands: tuple[int, ...], operators: tuple[str, ...]) -> int:
    """Integer value with ``*`` binding tighter than ``+``/``-`` (left to right otherwise)."""
    total, term = 0, operands[0]
    sign = 1
    for op, x in zip(operators, operands[1:]):
        if op == "*":
            term *= x
        else:
            total += sign * term
            sign, term = (1 if op == "+" else -1), x
    return total + sign * term


def _check(cfg) -> None:
    """The knobs' valid values are declared on rl/config.py TaskConfig; checked here for configs built in code."""
    import dataclasses

    from rl.fields import check_fields

    if dataclasses.is_dataclass(cfg):
        check_fields(cfg, "data.task")


def _below(rng: random.Random, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def _canonical(family: str, operands: tuple[int, ...], operators: tuple[str, ...]) -> Problem:
    if family == "sub":  # largest first: two-operand differences stay >= 0
        first = max(range(len(operands)), key=lambda i: operands[i])
        operands = (operands[first],) + operands[:first] + operands[first + 1:]
    elif family == "mixed" and len(operands) == 2 and operators[0] == "-":
        operands = tuple(sorted(operands, reverse=True))
    return Problem(operands, operators)


def _draw(rng: random.Random, cfg) -> Problem:
    lo, hi = 10 ** (cfg.digits - 1), 10 ** cfg.digits - 1
    family = cfg.ops[_below(rng, len(cfg.ops))]
    operands = tuple(lo + _below(rng, hi - lo + 1) for _ in range(cfg.num_operands))
    k = cfg.num_operands - 1
    operators = tuple("+-*"[_below(rng, 3)] for _ in range(k)) if family == "mixed" else (_OP_OF[family],) * k
    return _canonical(family, operands, operators)


def _space_size(cfg) -> int:
    values = 10 ** cfg.digits - 10 ** (cfg.digits - 1)
    per_family = {f: values ** cfg.num_operands * (3 ** (cfg.num_operands - 1) if f == "mixed" else 1)
                  for f in set(cfg.ops)}
    return sum(per_family.values())  # upper bound: canonicalisation merges some


def _enumerate(cfg, rng: random.Random) -> list[Problem]:
    lo, hi = 10 ** (cfg.digits - 1), 10 ** cfg.digits - 1
    seen: dict[str, Problem] = {}
    for family in sorted(set(cfg.ops)):
        op_choices = itertools.product("+-*", repeat=cfg.num_operands - 1) if family == "mixed" \
            else [(_OP_OF[family],) * (cfg.num_operands - 1)]
        for operators in op_choices:
            for operands in itertools.product(range(lo, hi + 1), repeat=cfg.num_operands):
                p = _canonical(family, operands, tuple(operators))
                seen.setdefault(p.expression, p)
    problems = sorted(seen.values(), key=lambda p: p.expression)
    for i in range(len(problems) - 1, 0, -1):  # Fisher-Yates with random() only
        j = _below(rng, i + 1)
        problems[i], problems[j] = problems[j], problems[i]
    return problems


def make_problems(cfg, split: str) -> list[Problem]:
    """The ``split`` ("train" or "test") problems for ``cfg`` (a TaskConfig)."""
    _check(cfg)
    if split not in ("train", "test"):
        raise ValueError(f"builtin:arithmetic has splits 'train' and 'test', not {split!r}")
    rng = random.Random(cfg.seed)
    space = _space_size(cfg)
    want = cfg.num_test + cfg.num_train
    if space <= _ENUMERATE_BELOW:
        pool = _enumerate(cfg, rng)
        n_test = min(cfg.num_test, len(pool) // 2)
        n_train = min(cfg.num_train, len(pool) - n_test)
        if (n_test, n_train) != (cfg.num_test, cfg.num_train):
            log.warning("builtin:arithmetic: only %d distinct problems for ops=%s digits=%d num_operands=%d; "
                        "using %d test and %d train (asked %d / %d)", len(pool), list(cfg.ops), cfg.digits,
                        cfg.num_operands, n_test, n_train, cfg.num_test, cfg.num_train)
        test, train = pool[:n_test], pool[n_test:n_test + n_train]
    else:
        if want > space // 4:  # keep rejection sampling fast; such sizes are not useful prompts sets anyway
            raise ValueError(f"data.task.num_train + num_test = {want} is too many for a space of ~{space} problems")
        seen: set[str] = set()
        drawn: list[Problem] = []
        while len(drawn) < want:
            p = _draw(rng, cfg)
            if p.expression not in seen:
                seen.add(p.expression)
                drawn.append(p)
        test, train = drawn[:cfg.num_test], drawn[cfg.num_test:]
    return test if split == "test" else train


def generate(cfg, split: str) -> list[dict]:
    """Rows ``{"prompt", "answer"}`` (answer as a decimal string, e.g. ``"-7"``)."""
    problems = make_problems(cfg, split)  # validates cfg.template too
    template = TEMPLATES[cfg.template]
    return [{"prompt": template.format(expr=p.expression), "answer": str(p.answer)} for p in problems]


EXTRA_COLUMNS: list[str] = []
