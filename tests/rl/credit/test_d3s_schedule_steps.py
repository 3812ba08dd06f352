"""D3S ``schedule_steps``: the schedule relaxes over a given number of steps, not trainer.steps.

benchmarks/credit_ablation.py runs D3S longer than the other arms (an equal trainer-time budget)
with the schedule of the equal-step run: the first S steps of a longer run must see exactly the
schedule of an S-step run, and the steps after S the final values.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl.config import load_config
from rl.credit.base import CreditContext
from rl.credit.config import D3SConfig
from rl.credit.d3s import D3S
from rl.experience import Experience

RECIPES = Path(__file__).resolve().parents[3] / "recipes"


def make_exp(adv_rows: list[float], width: int = 4) -> Experience:
    n = len(adv_rows)
    return Experience(
        prompt_ids=torch.zeros(n, 1, dtype=torch.long), prompt_mask=torch.ones(n, 1),
        completion_ids=torch.ones(n, width, dtype=torch.long), completion_mask=torch.ones(n, width),
        group_id=torch.zeros(n, dtype=torch.long), rewards=torch.tensor(adv_rows),
        advantages=torch.tensor(adv_rows)[:, None].expand(n, width).clone(),
        entropy=torch.arange(n * width, dtype=torch.float32).reshape(n, width) / (n * width))


def run(cfg: D3SConfig, step: int, total_steps: int) -> tuple[dict, torch.Tensor]:
    exp = make_exp([float(i) - 7.5 for i in range(16)])  # one group of 16, distinct non-zero advantages
    metrics = D3S(cfg).apply(exp, CreditContext(step=step, total_steps=total_steps))
    return metrics, exp.loss_mask()


def test_default_follows_trainer_steps() -> None:
    module = D3S(D3SConfig())
    for step, total in ((0, 10), (3, 10), (9, 10), (5, 6)):
        ctx = CreditContext(step=step, total_steps=total)
        assert module.progress(ctx) == ctx.progress


@pytest.mark.parametrize("step", range(6))
def test_longer_run_repeats_the_short_runs_schedule(step: int) -> None:
    """Steps 0..5 of a 12-step run with schedule_steps=6 select exactly as a 6-step run does."""
    short_m, short_mask = run(D3SConfig(), step, 6)
    long_m, long_mask = run(D3SConfig(schedule_steps=6), step, 12)
    assert long_m["d3s/n_s"] == short_m["d3s/n_s"] and long_m["d3s/k"] == pytest.approx(short_m["d3s/k"])
    assert torch.equal(long_mask, short_mask)


def test_after_the_schedule_the_final_values_hold() -> None:
    cfg = D3SConfig(schedule_steps=6)
    module = D3S(cfg)
    assert module.progress(CreditContext(step=2, total_steps=12)) == pytest.approx(0.4)
    for step in (5, 6, 11):
        assert module.progress(CreditContext(step=step, total_steps=12)) == 1.0
        metrics, mask = run(cfg, step, 12)
        assert metrics["d3s/n_s"] == 16 and metrics["d3s/k"] == 1.0 and int(mask.sum()) == 16 * 4
    assert D3S(D3SConfig(schedule_steps=1)).progress(CreditContext(step=0, total_steps=12)) == 1.0
    # the default would still be relaxing at step 5 of 12
    assert run(D3SConfig(), 5, 12)[0]["d3s/k"] < 1.0


def test_config_key() -> None:
    cfg = load_config(RECIPES / "grpo_d3s.yaml", ["algorithm.d3s.schedule_steps=20", "trainer.steps=40"])
    assert cfg.algorithm.d3s.schedule_steps == 20
    assert load_config(RECIPES / "grpo_d3s.yaml").algorithm.d3s.schedule_steps is None
    with pytest.raises(ValueError, match="algorithm.d3s.schedule_steps"):
        D3SConfig(schedule_steps=0)
