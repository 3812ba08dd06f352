"""Metrics a trainer rank reports, and how the driver reduces them over ranks.

Each rank records a metric with the rule that combines it across ranks (and across the
optimizer steps of one rollout step):

* ``mean(key, value, weight)``: sum(value * weight) / sum(weight) — e.g. clip fraction weighted by
  loss tokens, so the reduced value is the mean over every loss token of the step;
* ``sum(key, value)``: a count or an additive loss share, summed (``train/loss`` is the sum of the
  ranks' shares of each mini-batch loss);
* ``max(key, value)``: e.g. a phase's wall time (the slowest rank sets the step's pace), or a
  quantity every rank knows identically (the global grad norm).

A rank's record is plain floats: this is all the driver receives from a training step.
"""

from __future__ import annotations

RULES = ("mean", "sum", "max")


class RankMetrics:
    def __init__(self) -> None:
        self._items: dict[str, list] = {}  # key -> [rule, numerator, weight]

    def _add(self, rule: str, key: str, num: float, weight: float) -> None:
        item = self._items.setdefault(key, [rule, 0.0, 0.0])
        if item[0] != rule:
            raise ValueError(f"metric {key!r} recorded as both {item[0]!r} and {rule!r}")
        if rule == "max":
            item[1] = num if item[2] == 0 else max(item[1], num)
            item[2] = 1.0
        else:
            item[1] += num
            item[2] += weight

    def mean(self, key: str, value: float, weight: float = 1.0) -> None:
        self._add("mean", key, float(value) * float(weight), float(weight))

    def sum(self, key: str, value: float) -> None:
        self._add("sum", key, float(value), 1.0)

    def max(self, key: str, value: float) -> None:
        self._add("max", key, float(value), 1.0)

    def update_means(self, values: dict, weight: float = 1.0) -> None:
        for k, v in values.items():
            self.mean(k, float(v), weight)

    def export(self) -> dict[str, tuple[str, float, float]]:
        return {k: (r, n, w) for k, (r, n, w) in self._items.items()}


def reduce_ranks(parts: list[dict[str, tuple[str, float, float]]]) -> dict[str, float]:
    """Combine the ranks' exported records into one value per key (see module doc)."""
    merged: dict[str, list] = {}
    for part in parts:
        for key, (rule, num, weight) in part.items():
            item = merged.setdefault(key, [rule, None, 0.0])
            if rule == "max":
                item[1] = num if item[1] is None else max(item[1], num)
            else:
                item[1] = (item[1] or 0.0) + num
                item[2] += weight
    out = {}
    for key, (rule, num, weight) in merged.items():
        if rule == "mean":
            if weight > 0:
                out[key] = num / weight
        else:
            out[key] = num
    return out
