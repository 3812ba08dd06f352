"""Check what a reward function returned: one finite number or None per sample.

Accepted: a list or tuple (or anything with ``.tolist()`` giving a list, e.g. a numpy array
or torch tensor) of length n, whose items are None, real numbers (int, float, numpy
scalars) or bools (True/False read as 1.0/0.0, as Python does). Rejected: NaN/inf, strings
and every other type. A wrong container or length spoils the whole call (BadOutput); a bad
item spoils only its sample (listed in the returned problems, its value set to 0.0).
"""

from __future__ import annotations

import math
import numbers
import reprlib
from typing import Any


class BadOutput(Exception):
    """The output as a whole is unusable (not a list, or the wrong length)."""


def coerce_outputs(raw: Any, n: int) -> tuple[list[float | None], dict[int, str]]:
    """(values, {sample index: problem}); raises BadOutput for a whole-output problem."""
    if not isinstance(raw, (list, tuple, str, bytes, dict)) and hasattr(raw, "tolist"):
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)):
        raise BadOutput(f"returned a {type(raw).__name__} ({reprlib.repr(raw)}) instead of a list")
    if len(raw) != n:
        raise BadOutput(f"returned {len(raw)} values for {n} samples")
    values: list[float | None] = []
    problems: dict[int, str] = {}
    for index, item in enumerate(raw):
        value, problem = _coerce_item(item)
        values.append(value)
        if problem is not None:
            problems[index] = problem
    return values, problems


def _coerce_item(item: Any) -> tuple[float | None, str | None]:
    if item is None:
        return None, None
    if isinstance(item, numbers.Real):  # bool included: True -> 1.0
        value = float(item)
        if math.isfinite(value):
            return value, None
        return 0.0, f"the non-finite value {value}"
    return 0.0, f"a non-number: {type(item).__name__} {reprlib.repr(item)}"
