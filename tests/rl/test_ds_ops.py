"""DeepSpeed's JIT build lock: a lock nobody holds stops the start-up at once, with the file and the fix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rl import ds_ops
from rl.config import load_config
from tests.rl.test_engine import REPO


def test_a_lock_no_process_holds_is_stale_and_one_that_is_held_is_not(tmp_path):
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.write_text("")
    assert ds_ops.stale_locks(["deepspeed_shm_comm", "cpu_adam"], tmp_path, recheck_s=0) == [lock]
    fd = os.open(lock, os.O_RDONLY)  # what torch's FileBaton does while it builds: the file stays open
    try:
        assert ds_ops.lock_holders(lock) == [os.getpid()]
        assert ds_ops.stale_locks(["deepspeed_shm_comm"], tmp_path, recheck_s=0) == []
    finally:
        os.close(fd)


def test_the_trainer_rank_refuses_to_start_on_a_stale_lock_with_one_line(tmp_path, monkeypatch):
    """What used to wait cluster.timeout_s (600 s) and fail naming neither the lock nor the fix."""
    from rl.trainer_rank import TrainerRank

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.write_text("")
    cfg = load_config(REPO / "recipes/smoke.yaml")
    rank = TrainerRank(cfg, "unused", 0, 1, 1)
    with pytest.raises(ds_ops.StaleBuildLock) as err:
        rank.prepare_ops()
    msg = str(err.value)
    assert "\n" not in msg and str(lock) in msg and f"rm {lock}" in msg and "no process holds it" in msg
    assert ds_ops.extensions_root() == tmp_path


def test_the_ops_a_cpu_trainer_needs():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CPU machines only")
    assert ds_ops.needed(offload_optimizer=False) == [ds_ops.SHM_COMM]
    assert ds_ops.needed(offload_optimizer=True) == [ds_ops.SHM_COMM, ds_ops.CPU_ADAM]


def test_each_python_environment_builds_its_ops_in_its_own_folder(monkeypatch, tmp_path):
    """Two checkouts with their own .venv shared torch's one extensions folder: each rewrote the other's
    build.ninja (its include paths name its venv), so every run in the other one recompiled the op
    (60-130 s inside the trainer's start-up)."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", "")  # recorded, so prepare's setting is undone afterwards
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setattr(ds_ops.sys, "prefix", str(tmp_path / "a" / ".venv"))
    a = ds_ops.extensions_root()
    monkeypatch.setattr(ds_ops.sys, "prefix", str(tmp_path / "b" / ".venv"))
    b = ds_ops.extensions_root()
    assert a != b and a.parent == b.parent
    assert ds_ops.extensions_root() == b  # stable for one environment
    # the ops are loaded (and DeepSpeed later looks for them) where extensions_root says
    monkeypatch.setattr(ds_ops, "needed", lambda offload_optimizer: [])
    ds_ops.prepare(offload_optimizer=False)
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(b)


def test_an_engine_built_outside_a_trainer_rank_loads_the_ops_from_the_environments_folder(tiny_model_dir):
    """PolicyEngine used directly (tests, notebooks) goes through the same folder as the trainer ranks and
    launch/install.sh: DeepSpeed's shared-memory op comes from there, not from torch's default folder."""
    from deepspeed.ops.op_builder.builder import OpBuilder

    from rl.engine import PolicyEngine

    cfg = load_config(REPO / "recipes/smoke.yaml")
    PolicyEngine(cfg, tiny_model_dir, 0, 1, "127.0.0.1", 29467, 10)
    op = OpBuilder._loaded_ops["deepspeed_shm_comm"]
    assert Path(op.__file__).parent.parent == ds_ops.extensions_root()


def test_ops_are_built_with_this_environments_ninja_whatever_path_the_process_got(monkeypatch):
    """install.sh builds with the venv's pip ``ninja`` (1.13, on PATH there); a process started without the venv
    on PATH (``.venv/bin/python ...``, Ray workers of such a driver) found /usr/bin/ninja (1.11), whose
    command hashes differ, so ninja called the op's build stale and recompiled it (30 s) at every switch."""
    import shutil
    import sysconfig

    own = Path(sysconfig.get_path("scripts")) / "ninja"
    if not own.exists():
        pytest.skip("this environment has no pip ninja")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(ds_ops.extensions_root()))  # undone afterwards
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(ds_ops, "needed", lambda offload_optimizer: [])
    ds_ops.prepare(offload_optimizer=False)
    assert shutil.which("ninja") == str(own)
    ds_ops.prepare(offload_optimizer=False)  # idempotent: the folder is not stacked on PATH again
    assert os.environ["PATH"].split(os.pathsep).count(str(own.parent)) == 1
