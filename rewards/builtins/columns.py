"""Reading the per-sample columns the scorer passes to every built-in as keyword arguments."""

from __future__ import annotations

import math
from typing import Any


def require_column(columns: dict[str, Any], name: str, function: str) -> list:
    """The column ``name``; a clear error naming the function when the caller did not pass it."""
    if name not in columns:
        available = sorted(k for k in columns if k not in ("completion_ids", "trainer_state"))
        raise KeyError(
            f"{function} reads the reference answer from column {name!r}, which was not passed "
            f"(columns: {available}); set data.answer_field, or kwargs.answer_column"
        )
    return columns[name]


def has_reference(value: Any) -> bool:
    """False for a missing reference (None, NaN, blank string): the reward returns None there."""
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    return not (isinstance(value, str) and not value.strip())
