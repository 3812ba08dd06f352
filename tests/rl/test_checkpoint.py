"""Checkpoint bookkeeping: atomic completion marker, keep-last-k, resume resolution, RNG round trip."""

from __future__ import annotations

import random

import pytest
import torch

from rl import checkpoint as ckpt


class FakeTrainers:
    """Stands in for TrainerGroup's save/load (the DeepSpeed part is exercised in tests/e2e)."""

    def __init__(self):
        self.loaded = None

    def save(self, path, client_state):
        from pathlib import Path

        Path(path).mkdir(parents=True)
        (Path(path) / "weights").write_text(str(client_state["step"]))

    def load(self, path):
        self.loaded = path
        return {}


def test_save_is_complete_and_keeps_last_k(tmp_path):
    t = FakeTrainers()
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, t, {"sampler": {"epoch": 0, "position": step}}, "name: x\n", keep_last=2)
    names = [p.name for p in ckpt.complete_checkpoints(tmp_path)]
    assert names == ["step_000003", "step_000004"]
    assert (tmp_path / "checkpoints/step_000004/COMPLETE").read_text() == "4"
    assert (tmp_path / "checkpoints/step_000004/config.yaml").read_text() == "name: x\n"


def test_interrupted_save_is_ignored_and_cleaned(tmp_path):
    t = FakeTrainers()
    ckpt.save_checkpoint(tmp_path, 1, t, {}, "", keep_last=3)
    half = tmp_path / "checkpoints/step_000002.tmp"
    (half / "ds").mkdir(parents=True)  # what a kill mid-save leaves
    no_marker = tmp_path / "checkpoints/step_000003"
    no_marker.mkdir()
    assert ckpt.latest_checkpoint(tmp_path).name == "step_000001"
    assert ckpt.resolve_resume("auto", tmp_path).name == "step_000001"
    with pytest.raises(FileNotFoundError, match="interrupted"):
        ckpt.resolve_resume(str(no_marker), tmp_path)
    ckpt.save_checkpoint(tmp_path, 4, t, {}, "", keep_last=3)
    assert not half.exists()


def test_resume_none_and_missing_path(tmp_path):
    assert ckpt.resolve_resume("none", tmp_path) is None
    assert ckpt.resolve_resume("auto", tmp_path) is None  # nothing saved yet: start fresh
    with pytest.raises(FileNotFoundError, match="checkpoint.resume"):
        ckpt.resolve_resume(str(tmp_path / "nope"), tmp_path)


def test_load_restores_driver_state_and_rng(tmp_path):
    t = FakeTrainers()
    torch.manual_seed(7)
    random.seed(7)
    path = ckpt.save_checkpoint(tmp_path, 5, t, {"sampler": {"epoch": 1, "position": 3}}, "", keep_last=1)
    expect = (torch.rand(3), random.random())
    torch.manual_seed(99)
    random.seed(99)
    state = ckpt.load_checkpoint(path, t)
    assert state["step"] == 5 and state["sampler"] == {"epoch": 1, "position": 3}
    assert t.loaded.endswith("ds")
    torch.testing.assert_close(torch.rand(3), expect[0])
    assert random.random() == expect[1]
