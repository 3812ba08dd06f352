"""A resumed run's metrics read as one run: rows after the resume step are dropped (metrics.jsonl, TensorBoard)."""

from __future__ import annotations

import time

from rl.config import Config
from rl.tracking import Tracker, read_metrics


def cfg(tensorboard: bool = False) -> Config:
    c = Config()
    c.logging.progress = False
    c.logging.tensorboard = tensorboard
    return c


def run(run_dir, start: int, steps: range, value: float, tensorboard: bool = False) -> None:
    t = Tracker(run_dir, cfg(tensorboard), 10, start)
    for s in steps:
        t.log(s, {"x": value + s})
    t.close()


def test_resume_drops_rows_after_the_checkpoint_step(tmp_path):
    # the first run logged steps 0..5 and was killed after its checkpoint at step 3
    run(tmp_path, 0, range(0, 6), 100.0)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 6, "x": 1')  # the kill tore the last write
    run(tmp_path, 3, range(4, 7), 200.0)  # the resumed run redoes steps 4, 5 and goes on
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    assert [r["x"] for r in rows] == [100, 101, 102, 103, 204, 205, 206]


def test_a_run_from_step_zero_starts_a_fresh_log(tmp_path):
    run(tmp_path, 0, range(0, 3), 100.0)
    run(tmp_path, 0, range(0, 2), 200.0)  # no checkpoint to resume from: the run starts over
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(0, 200), (1, 201)]


def test_tensorboard_purges_steps_after_the_resume_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run(tmp_path, 0, range(1, 6), 100.0, tensorboard=True)
    time.sleep(1.1)  # event files are ordered by the second in their name
    run(tmp_path, 3, range(4, 6), 200.0, tensorboard=True)
    acc = EventAccumulator(str(tmp_path / "tensorboard"), purge_orphaned_data=True)
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("x")] == [(1, 101), (2, 102), (3, 103), (4, 204), (5, 205)]
