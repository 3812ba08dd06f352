"""Faults a run survives or stops on cleanly: signals, non-finite updates, failed checkpoint saves.

Stopping on a signal (``StopSignals``), the policy:

* the first SIGINT or SIGTERM lets the current step finish (generation, update, weight sync, its
  evaluation), then a checkpoint of that step is written (always: the run was asked to stop, and a
  checkpoint is what makes the stop resumable; skipped only when the step already saved one), the
  engines are shut down and ``RunInterrupted`` carries the resume command to the command line;
* a second signal abandons the current step at once: nothing is written (the last complete checkpoint
  stays the one to resume from), the engines are shut down all the same;
* during start-up (before the first step) the first signal already abandons: there is nothing to save.

Ctrl-C in a terminal reaches the whole process group; Ray starts its processes with SIGINT blocked, so
the engines keep running while the step finishes. A SIGTERM to every process (SLURM's job end) kills
the engines too: the step cannot finish, and the run stops as if the step had been abandoned.

Fault injection for the tests (tests/e2e/test_faults_e2e.py): ``TOKENCREDIT_FAULT`` holds
comma-separated ``point:args`` entries, e.g. ``kill_rank:0:2,save_error:3:ENOSPC``; each hook asks
``injected(point, *args)``. Points: ``kill_in_save:STEP`` and ``save_error:STEP[:ERRNO]``
(rl/checkpoint.py), ``kill_rank:RANK:STEP`` and ``nan_loss:STEP`` (rl/trainer_rank.py),
``kill_worker:INDEX:CALL`` (rollout/worker_actor.py: the worker's CALL-th generate call).
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger(__name__)

FAULT_ENV = "TOKENCREDIT_FAULT"


def injected(point: str, *args) -> list[str] | None:
    """The extra fields of the ``TOKENCREDIT_FAULT`` entry ``point:args...`` ([] when none), or None."""
    want = [point, *map(str, args)]
    for entry in os.environ.get(FAULT_ENV, "").split(","):
        fields = entry.strip().split(":")
        if fields[: len(want)] == want:
            return fields[len(want):]
    return None


# ----------------------------------------------------------------------------- stopping on a signal

class RunInterrupted(KeyboardInterrupt):
    """The run stopped on SIGINT / SIGTERM after shutting everything down; ``exit_code`` is 128 + signal."""

    def __init__(self, signum: int, message: str = "", run_dir: Path | None = None):
        self.signum = signum
        self.run_dir = run_dir
        self.exit_code = 128 + signum
        super().__init__(message or f"{signal.Signals(signum).name} received")


class StopSignals:
    """SIGINT / SIGTERM handlers for a run (the policy is in the module docstring).

    ``install()`` (again after ``ray.init``, which sets its own SIGTERM handler), ``begin_steps()`` once
    the engines are up, ``requested`` at each step boundary, ``restore()`` at the end. Handlers can only
    be set from the main thread; elsewhere this does nothing and signals keep their default meaning."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_request=None) -> None:
        self.signum: int | None = None
        self.stepping = False
        self.closing = 0  # signals received while shutting down (the first is waited out)
        self.on_request = on_request  # called once, on the first signal (e.g. no more worker restarts)
        self._old: dict[int, object] = {}

    def install(self) -> StopSignals:
        global _ACTIVE
        if threading.current_thread() is not threading.main_thread():
            return self
        for s in self.SIGNALS:
            old = signal.signal(s, self._handle)
            self._old.setdefault(s, old)
        _ACTIVE = self
        return self

    def begin_steps(self) -> None:
        self.stepping = True
        self.install()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def shutting_down(self) -> None:
        """From here (the engines are being shut down) one more signal is waited out, a further one is not."""
        self.closing = 1

    def _handle(self, signum, frame) -> None:
        name = signal.Signals(signum).name
        if self.closing:
            self.closing += 1
            if self.closing == 2:
                print(f"[tokencredit] {name}: shutting the engines down, a few seconds (send it again to exit at "
                      f"once, which may leave engine processes behind)", file=sys.stderr, flush=True)
                return
            raise RunInterrupted(self.signum or signum, f"{name} received during shut-down")
        first = self.signum is None
        if first:
            self.signum = signum
            if self.on_request is not None:
                self.on_request()
        if first and self.stepping:
            print(f"[tokencredit] {name}: finishing this step, then a checkpoint and a clean stop "
                  f"(send it again to abandon the step now)", file=sys.stderr, flush=True)
            return
        what = "start-up" if not self.stepping else "the current step"
        print(f"[tokencredit] {name}: abandoning {what}; shutting the engines down", file=sys.stderr, flush=True)
        raise RunInterrupted(self.signum, f"{name} received; {what} was abandoned")

    def restore(self) -> None:
        global _ACTIVE
        for s, old in self._old.items():
            try:
                signal.signal(s, old)
            except (TypeError, ValueError):
                pass
        self._old = {}
        if _ACTIVE is self:
            _ACTIVE = None


_ACTIVE: StopSignals | None = None


def after_ray_init() -> None:
    """``ray.init`` sets its own SIGTERM handler (exit at once): put the run's handlers back (rl/setup.py)."""
    if _ACTIVE is not None:
        _ACTIVE.install()


# ----------------------------------------------------------------------------- non-finite updates

class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient norm with ``trainer.on_nonfinite=stop``."""


def check_nonfinite(on_nonfinite: str, step: int, metrics: dict, last_checkpoint: Path | None) -> None:
    """After a training step: log the optimizer steps the ranks skipped for a non-finite loss or gradient
    norm (``train/nonfinite_steps``); with ``stop``, raise. The ranks never apply such an update, so the
    weights are still those before it and no checkpoint holds non-finite values."""
    bad = metrics.get("train/nonfinite_steps", 0.0)
    if not bad:
        return
    what = "loss" if metrics.get("train/nonfinite_loss", 0.0) else "gradient norm"
    msg = (f"step {step}: non-finite {what} in {bad:g} optimizer step(s); the update was not applied "
           f"(the weights are those before it)")
    if on_nonfinite == "stop":
        where = f"the last checkpoint {last_checkpoint} is intact" if last_checkpoint else "no checkpoint was written"
        raise NonFiniteError(f"{msg}; the run stops (trainer.on_nonfinite=stop; 'skip' drops such updates and "
                             f"goes on); {where}")
    log.warning("%s; going on (trainer.on_nonfinite=skip)", msg)


# ----------------------------------------------------------------------------- the resume command

def note_run_dir(err: BaseException, run_dir: Path) -> None:
    """Remember on an error which run it stopped, for ``resume_advice`` on the command line."""
    if getattr(err, "run_dir", None) is None:
        try:
            err.run_dir = run_dir
        except (AttributeError, TypeError):
            pass


def resume_advice(run_dir: Path | None, argv: list[str] | None = None) -> str | None:
    """One line for the end of a stopped run: the checkpoint to resume from and the command, or None."""
    if run_dir is None:
        return None
    from rl.checkpoint import latest_checkpoint

    last = latest_checkpoint(Path(run_dir))
    if last is None:
        return f"no checkpoint was written in {run_dir}; the same command starts the run again"
    return f"the last complete checkpoint is {last}; resume with: {resume_command(run_dir, argv)}"


def resume_command(run_dir: Path, argv: list[str] | None = None) -> str:
    """The ``tokencredit train`` command that resumes ``run_dir``: this process's command with
    ``checkpoint.resume=auto`` and the run folder pinned (a fresh run may have been given ``NAME-1``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    drop = ("checkpoint.resume=", "logging.dir=", "logging.run_name=", "--print-config")
    kept = [a for a in argv if not a.startswith(drop)]
    if not kept or kept[0] != "train":
        kept = ["train", "RECIPE", *kept]
    run_dir = Path(run_dir)
    extra = [f"logging.dir={run_dir.parent}", f"logging.run_name={run_dir.name}", "checkpoint.resume=auto"]
    return "tokencredit " + " ".join(shlex.quote(a) for a in kept + extra)
