"""Atomic checkpoints: DeepSpeed state + step + data position + RNG states + resolved config.

Layout: ``<run>/checkpoints/step_000012/{ds/, state.pt, config.yaml, COMPLETE}``. A
checkpoint is written under ``step_000012.tmp``; ``COMPLETE`` is the last file written. Then
every file and folder in it is fsynced, and only then is it renamed into place, after which
the ``checkpoints`` folder is fsynced so that the rename itself survives a power loss.

Re-saving a step that already has a checkpoint never leaves a moment without one: the old
folder is renamed aside (``step_000012.old``), the new one renamed into place, and only then
is the old one deleted. A crash in between leaves a complete ``.old`` folder, which
``complete_checkpoints`` reports (so resume uses it) while its ``step_N`` is missing, and the
next save renames it back first. A kill anywhere during a save therefore leaves the previous
checkpoint usable; ``.tmp`` folders are ignored and cleaned up.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
from pathlib import Path

import numpy as np
import torch

MARKER = "COMPLETE"
ASIDE = ".old"  # suffix of a checkpoint set aside while the same step is re-saved


def checkpoint_root(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def _step_of(name: str) -> int | None:
    """step_000012 -> 12, step_000012.old -> 12; None for anything else (.tmp, other files)."""
    base = name[: -len(ASIDE)] if name.endswith(ASIDE) else name
    if not base.startswith("step_") or not base[5:].isdigit():
        return None
    return int(base[5:])


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first: ``step_N`` folders with ``COMPLETE``, plus a complete
    ``step_N.old`` whose ``step_N`` is missing (a crash while step N was re-saved)."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    done = {}
    for p in root.iterdir():
        step = _step_of(p.name)
        if step is None or not p.is_dir() or not (p / MARKER).is_file():
            continue
        if p.name.endswith(ASIDE) and (root / p.name[: -len(ASIDE)] / MARKER).is_file():
            continue  # the new step_N is in place; this one only waits to be deleted
        done[step] = p
    return [done[s] for s in sorted(done)]


def _fsync_path(path: Path | str, is_dir: bool) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if is_dir else 0))
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems cannot fsync a directory; the data itself was synced
        if not (is_dir and e.errno in (errno.EINVAL, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    """fsync every file under ``path``, then every folder (deepest first, ``path`` last)."""
    for dirpath, _, filenames in os.walk(path, topdown=False):
        for name in filenames:
            _fsync_path(os.path.join(dirpath, name), is_dir=False)
        _fsync_path(dirpath, is_dir=True)


def _restore_set_aside(root: Path) -> None:
    """Undo what a crash between 'old aside' and 'new into place' left: rename ``step_N.old`` back
    when ``step_N`` is missing; delete it when the new ``step_N`` is complete."""
    for p in list(root.iterdir()):
        if not p.name.endswith(ASIDE) or _step_of(p.name) is None:
            continue
        final = root / p.name[: -len(ASIDE)]
        if (final / MARKER).is_file():
            shutil.rmtree(p, ignore_errors=True)
        elif (p / MARKER).is_file():
            if final.exists():
                shutil.rmtree(final)  # an incomplete step_N (not written by this module)
            os.rename(p, final)
            _fsync_path(root, is_dir=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    done = complete_checkpoints(run_dir)
    return done[-1] if done else None


def rng_state() -> dict:
    """The driver's RNG states in a form ``torch.load(weights_only=True)`` reads (tensors, ints, tuples)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, *rest = state["numpy"]
    keys = keys.numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
    np.random.set_state((kind, keys.astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the previous one is untouched (the message names it)."""


def save_checkpoint(run_dir: Path, step: int, trainers, driver_state: dict, config_yaml: str,
                    keep_last: int) -> Path:
    """Write the checkpoint of ``step``; any failure (disk full, permission, a rank's error) removes the
    partial ``.tmp`` folder and raises ``CheckpointSaveError`` naming the cause and the checkpoint that
    stays the one to resume from. A kill mid-save leaves the ``.tmp`` folder, which nothing reads."""
    root = checkpoint_root(run_dir)
    tmp = root / f"step_{step:06d}.tmp"
    try:
        return _save(root, step, tmp, trainers, driver_state, config_yaml, keep_last)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # frees the space a full disk needs back
        if not isinstance(e, Exception):
            raise  # an interrupt: the caller reports it
        previous = latest_checkpoint(run_dir)
        keep = f"the previous checkpoint {previous} is intact" if previous else "there is no earlier checkpoint"
        raise CheckpointSaveError(f"checkpoint save of step {step} to {root} failed: {type(e).__name__}: "
                                  f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}; {keep} and "
                                  f"resume picks it") from e


def _save(root: Path, step: int, tmp: Path, trainers, driver_state: dict, config_yaml: str, keep_last: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    _restore_set_aside(root)
    final = root / f"step_{step:06d}"
    aside = root / f"step_{step:06d}{ASIDE}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    trainers.save(str(tmp / "ds"), {"step": step})
    _fault_injection("save_error", step)
    torch.save({**driver_state, "step": step, "rng": rng_state()}, tmp / "state.pt")
    _fault_injection("kill_in_save", step)
    (tmp / "config.yaml").write_text(config_yaml)
    (tmp / MARKER).write_text(str(step))
    _fsync_tree(tmp)  # every byte on disk before the name says "complete"
    if final.exists():  # re-saving this step: the old one stays usable until the new one is in place
        os.rename(final, aside)
    os.rename(tmp, final)
    _fsync_path(root, is_dir=True)  # the renames themselves
    if aside.exists():
        shutil.rmtree(aside)
    for old in complete_checkpoints(root.parent)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("*.tmp"):  # leftovers of an interrupted save
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _fault_injection(point: str, step: int) -> None:
    """Test hooks (rl/faults.py): ``kill_in_save:STEP`` SIGKILLs this process mid-save;
    ``save_error:STEP[:ERRNO]`` fails the save as a full disk (ENOSPC, the default) or EACCES, EIO would."""
    from rl.faults import injected

    args = injected(point, step)
    if args is None:
        return
    if point == "kill_in_save":
        os.kill(os.getpid(), signal.SIGKILL)
    code = getattr(errno, args[0] if args else "ENOSPC")
    raise OSError(code, f"{os.strerror(code)} (injected by TOKENCREDIT_FAULT)")


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
    """Load the ranks' DeepSpeed state and the driver's ``state.pt``; nothing is unpickled beyond tensors
    and plain containers (``weights_only``; the ranks load DeepSpeed's files the same way, rl/safe_load.py)."""
    from rl.safe_load import load_weights_only

    trainers.load(str(path / "ds"))
    state = load_weights_only(path / "state.pt", numpy_arrays=True)  # arrays: state.pt of earlier versions
    set_rng_state(state["rng"])
    return state
