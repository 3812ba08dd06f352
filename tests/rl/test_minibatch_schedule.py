"""Mini-batches across rollout steps (issue 12): a fresh row order every step, and an LR schedule that
ends where it was planned even when mini-batches have nothing to learn from and are skipped."""

from __future__ import annotations

import pytest

from rl.trainer_rank import minibatch_order
from tests.rl.test_engine import cfg_for, rollout_batch


def test_each_rollout_step_epoch_and_rank_gets_its_own_order():
    orders = {(step, epoch, rank): minibatch_order(12, 42, step, epoch, rank).tolist()
              for step in range(4) for epoch in range(2) for rank in range(2)}
    for order in orders.values():
        assert sorted(order) == list(range(12))  # a permutation of the rank's rows
    # 16 orders of 12 rows, all different (a repeat by chance has probability < 16^2 / 12!)
    assert len({tuple(o) for o in orders.values()}) == len(orders)
    # seeded: a resumed run draws the same order at the same step, another seed another one
    assert minibatch_order(12, 42, 3, 1, 0).tolist() == orders[(3, 1, 0)]
    assert minibatch_order(12, 43, 3, 1, 0).tolist() != orders[(3, 1, 0)]


@pytest.mark.parametrize("active_rows", [1, 8])
def test_the_lr_schedule_reaches_its_end_when_mini_batches_are_skipped(tiny_model_dir, ray_local, active_rows):
    """Two mini-batches planned for the run's only rollout step, linear decay to 0 over those two
    optimizer steps. With one row left in the loss (a credit module dropped the others' tokens), the
    second mini-batch has no loss token and is skipped; the schedule still advances twice, so lr ends
    at lr * (1 - 2/2) = 0, as when both steps run. (Before the fix a skipped mini-batch left the
    schedule where it was: lr ended at lr * (1 - 1/2).)"""
    from rl.trainer_group import TrainerGroup

    cfg = cfg_for(**{"algorithm.mini_batches": 2, "trainer.lr_schedule": "linear", "trainer.lr": 1e-3,
                     "trainer.adam_eps": 1e-8})
    batch = rollout_batch(groups=2, group=4, seed=1)
    batch["completion_mask"][active_rows:] = 0.0  # rows without a token in the loss
    group = TrainerGroup(cfg, tiny_model_dir, 2)
    try:
        m, _ = group.train_step(batch, None, 0, 1)
    finally:
        group.shutdown()
    skipped = 1 if active_rows == 1 else 0
    assert m["train/skipped_optimizer_steps"] == skipped and m["train/optimizer_steps"] == 2 - skipped
    assert m["train/lr"] == 0.0  # linear over 2 optimizer steps, taken or skipped: lr * (1 - 2/2)
