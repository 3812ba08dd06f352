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


# --- durability: fsync before the rename, never a moment without a usable checkpoint (issue 12) ------
class WeightsTrainers(FakeTrainers):
    """Saves a given payload (in ds/sub/weights), so a test can tell the old checkpoint from the new one."""

    def __init__(self, payload: str):
        super().__init__()
        self.payload = payload

    def save(self, path, client_state):
        from pathlib import Path

        (Path(path) / "sub").mkdir(parents=True)
        (Path(path) / "sub" / "weights").write_text(self.payload)


def test_every_file_and_directory_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    import os

    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", str(src), str(dst)))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    final = ckpt.save_checkpoint(tmp_path, 3, WeightsTrainers("A"), {}, "name: x\n", keep_last=2)
    into_place = [i for i, e in enumerate(events) if e[0] == "rename" and e[2] == str(final)]
    assert len(into_place) == 1
    before = {e[1] for e in events[: into_place[0]] if e[0] == "fsync"}
    tmp = str(final) + ".tmp"
    files = {"state.pt", "config.yaml", "COMPLETE", "ds/sub/weights"}
    assert {f"{tmp}/{f}" for f in files} <= before  # every file, in the folder that is renamed
    assert {tmp, f"{tmp}/ds", f"{tmp}/ds/sub"} <= before  # and the folders holding them
    assert sorted(str(p.relative_to(final)) for p in final.rglob("*") if p.is_file()) == sorted(files)
    after = [e[1] for e in events[into_place[0] + 1:] if e[0] == "fsync"]
    assert str(final.parent) in after  # the rename itself is made durable


class Injected(OSError):
    pass


class FailAt:
    """Wraps real functions and raises ``Injected`` at the n-th call of any of them (counted together)."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def wrap(self, name, real):
        def call(*args, **kwargs):
            self.calls += 1
            if self.calls == self.n:
                raise Injected(f"injected failure at call {self.n} ({name})")
            return real(*args, **kwargs)
        return call


def test_resaving_a_step_always_leaves_a_usable_checkpoint(tmp_path, monkeypatch):
    """Re-save step 12 (old payload A, new B) and fail at the n-th rename / rmtree / fsync, for every n
    the save reaches. After each failure a complete step-12 checkpoint holding A or B is what resume
    finds; the next save succeeds and leaves only B, without leftovers."""
    import os
    import shutil

    real = {"rename": os.rename, "rmtree": shutil.rmtree, "fsync": os.fsync}
    n = 0
    while True:
        n += 1
        run = tmp_path / f"run{n}"
        ckpt.save_checkpoint(run, 10, WeightsTrainers("older"), {}, "", keep_last=3)
        ckpt.save_checkpoint(run, 12, WeightsTrainers("A"), {}, "", keep_last=3)
        fail = FailAt(n)
        monkeypatch.setattr(os, "rename", fail.wrap("rename", real["rename"]))
        monkeypatch.setattr(shutil, "rmtree", fail.wrap("rmtree", real["rmtree"]))
        monkeypatch.setattr(os, "fsync", fail.wrap("fsync", real["fsync"]))
        try:
            ckpt.save_checkpoint(run, 12, WeightsTrainers("B"), {}, "", keep_last=3)
            failed = False
        except ckpt.CheckpointSaveError as e:  # the driver's report of the failure (test_checkpoint_faults.py)
            assert isinstance(e.__cause__, Injected), e
            failed = True
        finally:
            monkeypatch.undo()
        latest = ckpt.resolve_resume("auto", run)
        assert latest is not None and (latest / ckpt.MARKER).read_text() == "12", (n, latest)
        assert (latest / "ds/sub/weights").read_text() in ("A", "B"), n
        if not failed:
            assert (latest / "ds/sub/weights").read_text() == "B" and latest.name == "step_000012"
            break
        ckpt.save_checkpoint(run, 12, WeightsTrainers("B"), {}, "", keep_last=3)  # the retry
        names = sorted(p.name for p in (run / "checkpoints").iterdir())
        assert names == ["step_000010", "step_000012"], (n, names)
        assert (run / "checkpoints/step_000012/ds/sub/weights").read_text() == "B"
    assert n > 3  # the loop did walk through the save's renames and fsyncs


def test_a_checkpoint_set_aside_is_restored(tmp_path):
    """A crash between 'old aside' and 'new into place' leaves step_N.old (complete) and step_N.tmp:
    resume uses the old one, and the next save puts it back before anything else."""
    ckpt.save_checkpoint(tmp_path, 5, WeightsTrainers("A"), {}, "", keep_last=2)
    root = tmp_path / "checkpoints"
    (root / "step_000005").rename(root / "step_000005.old")
    (root / "step_000005.tmp").mkdir()
    assert ckpt.resolve_resume("auto", tmp_path) == root / "step_000005.old"
    assert [p.name for p in ckpt.complete_checkpoints(tmp_path)] == ["step_000005.old"]
    ckpt.save_checkpoint(tmp_path, 6, WeightsTrainers("B"), {}, "", keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step_000005", "step_000006"]
    assert (root / "step_000005/ds/sub/weights").read_text() == "A"
