"""Checkpoint faults on the driver side: a save that fails (disk full, permission, a rank's error) leaves the
previous checkpoint as the one resume picks; loads never unpickle code (weights_only)."""

from __future__ import annotations

import errno
import pickle

import numpy as np
import pytest
import torch

from rl import checkpoint as ckpt
from rl.safe_load import load_weights_only
from tests.rl.test_checkpoint import FakeTrainers


class FailingTrainers(FakeTrainers):
    """The ranks' DeepSpeed save fails after writing part of its files (as a full disk would)."""

    def save(self, path, client_state):
        super().save(path, client_state)
        raise RuntimeError("trainer call 'checkpoint save' failed: OSError: [Errno 28] No space left on device")


@pytest.mark.parametrize("code", ["ENOSPC", "EACCES", "EIO"])
def test_a_failed_save_keeps_the_previous_checkpoint_and_resume_picks_it(tmp_path, monkeypatch, code):
    t = FakeTrainers()
    ckpt.save_checkpoint(tmp_path, 1, t, {"sampler": {"epoch": 0, "position": 1}}, "", keep_last=1)
    monkeypatch.setenv("TOKENCREDIT_FAULT", f"save_error:2:{code}")  # after the ranks wrote their files
    with pytest.raises(ckpt.CheckpointSaveError) as err:
        ckpt.save_checkpoint(tmp_path, 2, t, {"sampler": {"epoch": 0, "position": 2}}, "", keep_last=1)
    msg = str(err.value)
    assert "step 2" in msg and errno.errorcode[getattr(errno, code)] not in ("",) and "step_000001 is intact" in msg
    assert isinstance(err.value.__cause__, OSError) and err.value.__cause__.errno == getattr(errno, code)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000001"]  # the partial step_000002.tmp is gone (a full disk gets its space back)
    assert ckpt.resolve_resume("auto", tmp_path).name == "step_000001"
    monkeypatch.delenv("TOKENCREDIT_FAULT")
    assert ckpt.load_checkpoint(ckpt.resolve_resume("auto", tmp_path), t)["sampler"]["position"] == 1


def test_a_rank_failing_its_save_is_reported_and_cleaned_up_the_same_way(tmp_path):
    ckpt.save_checkpoint(tmp_path, 3, FakeTrainers(), {}, "", keep_last=2)
    with pytest.raises(ckpt.CheckpointSaveError, match=r"step 4 .*No space left.*step_000003 is intact"):
        ckpt.save_checkpoint(tmp_path, 4, FailingTrainers(), {}, "", keep_last=2)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step_000003"]


def test_a_failed_first_save_says_there_is_no_earlier_checkpoint(tmp_path):
    with pytest.raises(ckpt.CheckpointSaveError, match="there is no earlier checkpoint"):
        ckpt.save_checkpoint(tmp_path, 1, FailingTrainers(), {}, "", keep_last=2)
    assert ckpt.resolve_resume("auto", tmp_path) is None


class Boom:
    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_state_pt_is_loaded_weights_only_and_a_pickle_with_code_is_refused(tmp_path, capsys):
    path = ckpt.save_checkpoint(tmp_path, 1, FakeTrainers(), {"sampler": {"epoch": 0, "position": 0}}, "", 1)
    ckpt.load_checkpoint(path, FakeTrainers())  # what we write loads weights_only
    torch.save({"step": 1, "rng": ckpt.rng_state(), "x": Boom()}, path / "state.pt")
    with pytest.raises(pickle.UnpicklingError, match="refused to load"):
        ckpt.load_checkpoint(path, FakeTrainers())
    assert "this ran" not in capsys.readouterr().out


def test_state_pt_of_earlier_versions_with_numpy_arrays_still_loads(tmp_path):
    import random

    np.random.seed(5)
    old = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    want = np.random.rand(3)
    torch.save({"step": 2, "rng": old, "sampler": {}}, tmp_path / "state.pt")
    state = load_weights_only(tmp_path / "state.pt", numpy_arrays=True)
    ckpt.set_rng_state(state["rng"])
    np.testing.assert_array_equal(np.random.rand(3), want)
