"""Atomic checkpoints: DeepSpeed state + step + data position + RNG states + resolved config.

Layout: ``<run>/checkpoints/step_000012/{ds/, state.pt, config.yaml, COMPLETE}``. A
checkpoint is written under ``step_000012.tmp`` and renamed only when every part is
on disk, and ``COMPLETE`` is the last file written; a kill during a save therefore
leaves at most a ``.tmp`` folder, which is ignored and cleaned up, and the previous
checkpoint stays the latest usable one.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import torch

MARKER = "COMPLETE"


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_")
            and not p.name.endswith(".tmp") and (p / MARKER).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(run_dir: Path, step: int, trainers, driver_state: dict, config_yaml: str,
                    keep_last: int) -> Path:
    root = checkpoint_root(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:06d}"
    tmp = root / f"step_{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainers.save(str(tmp / "ds"), {"step": step})
    torch.save({**driver_state, "step": step, "rng": rng_state()}, tmp / "state.pt")
    _fault_injection("kill_in_save", step)
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / MARKER).write_text(str(step))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in complete_checkpoints(run_dir)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("*.tmp"):  # leftovers of an interrupted save
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _fault_injection(point: str, step: int) -> None:
    """Test hook: TOKENCREDIT_FAULT=kill_in_save:STEP SIGKILLs this process mid-save (tests/e2e)."""
    if os.environ.get("TOKENCREDIT_FAULT") == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def resolve_resume(resume: str, run_dir: Path) -> Path | None:
    """``checkpoint.resume``: none | auto | a path -> the checkpoint folder to load (or None)."""
    if resume == "none":
        return None
    if resume == "auto":
        return latest_checkpoint(run_dir)
    path = Path(resume)
    if not (path / MARKER).is_file():
        hint = " (it has no COMPLETE marker: the save was interrupted)" if path.is_dir() else ""
        raise FileNotFoundError(f"checkpoint.resume: {resume} is not a complete checkpoint folder{hint}")
    return path


def load_checkpoint(path: Path, trainers) -> dict:
    trainers.load(str(path / "ds"))
    state = torch.load(path / "state.pt", weights_only=False)
    set_rng_state(state["rng"])
    return state
