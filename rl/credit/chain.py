"""Build and run the recipe's credit chain (``algorithm.credit: [d3s, thr, ...]``) in order."""

from __future__ import annotations

from rl.algorithms.registry import CREDITS
from rl.credit.base import CreditContext, CreditModule
from rl.experience import Experience


def build_chain(names: list[str], algorithm_cfg) -> list[CreditModule]:
    from rl.credit import load_all

    load_all()
    return [CREDITS[name](getattr(algorithm_cfg, name)) for name in names]


def chain_needs(chain: list[CreditModule]) -> set[str]:
    needs: set[str] = set()
    for module in chain:
        needs |= set(module.needs)
    return needs


def run_chain(chain: list[CreditModule], exp: Experience, ctx: CreditContext) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for module in chain:
        metrics.update(module.apply(exp, ctx))
    return metrics


def run_row_phase(chain: list[CreditModule], exp: Experience, ctx: CreditContext) -> dict[str, float] | None:
    """The leading module's advantage-only row selection, if it has one (metrics), else None."""
    return chain[0].select_rows(exp, ctx) if chain else None


def stats_rows_can_shrink(chain: list[CreditModule]) -> bool:
    """True when no module reads old-policy statistics of rows that are out of the loss."""
    return all(not m.reads_dropped_rows for m in chain)
