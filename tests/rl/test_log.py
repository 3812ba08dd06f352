"""The console/log-file split (rl/log.py, rollout/logs.py), per-step progress lines and the closing summary."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from rl import log as rl_log
from rl.tracking import StepProgress, run_summary, step_text
from rollout.logs import ENV_DIR, ENV_VERBOSE

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def driver_logging():
    """setup_logging's handlers for one test, removed afterwards (the root logger is process-wide)."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    rl_log.detach_run_log()
    for h in list(root.handlers):
        if h not in before:
            root.removeHandler(h)
    root.setLevel(level)
    rl_log._state.update(verbose=False, level=logging.INFO, log_dir=None, attached=False)


def test_console_shows_ours_and_library_errors_file_has_everything(tmp_path, capsys, driver_logging):
    rl_log.setup_logging()
    logging.getLogger("rl.setup").info("early line, before the run folder exists")
    logging.getLogger("somelib").warning("library chatter")
    logs = rl_log.attach_run_log(tmp_path / "run")
    logging.getLogger("rl.loops.grpo").warning("step 3: no group with a signal")
    logging.getLogger("somelib.sub").error("library failure")
    logging.getLogger("somelib").info("library info")
    rl_log.detach_run_log()

    err = capsys.readouterr().err.splitlines()
    assert "[tokencredit] early line, before the run folder exists" in err
    assert "[tokencredit] warning: step 3: no group with a signal" in err
    assert "[somelib] error: library failure" in err
    assert not any("library chatter" in line or "library info" in line for line in err)
    assert any(line.startswith("[tokencredit] run folder: ") and "--verbose" in line for line in err)
    text = (logs / "driver.log").read_text()
    for line in ("early line", "library chatter", "step 3", "library failure", "library info"):
        assert line in text  # the buffered early records too
    assert ENV_DIR not in os.environ and ENV_VERBOSE not in os.environ  # detached: later actors log as before


def test_verbose_brings_library_lines_back_and_actors_are_told(tmp_path, capsys, driver_logging):
    rl_log.setup_logging(level="debug")
    logs = rl_log.attach_run_log(tmp_path / "run")
    logging.getLogger("somelib").warning("library chatter")
    assert "[somelib] warning: library chatter" in capsys.readouterr().err
    assert rl_log.ray_runtime_env() == {"env_vars": {ENV_DIR: str(logs), ENV_VERBOSE: "1"}}


def test_level_warning_hides_our_info_and_bad_level_is_refused(capsys, driver_logging):
    rl_log.setup_logging(level="warning")
    logging.getLogger("rl.setup").info("phase line")
    logging.getLogger("rl.setup").warning("real problem")
    err = capsys.readouterr().err
    assert "phase line" not in err and "[tokencredit] warning: real problem" in err
    with pytest.raises(ValueError, match="logging.level='loud'"):
        rl_log.setup_logging(level="loud")


ACTOR = textwrap.dedent("""
    import logging, os, sys
    from rollout.logs import capture_actor_output, forward_errors
    print(capture_actor_output("rollout-0"))
    print("engine stdout line"); sys.stdout.flush()
    os.write(2, b"native stderr line\\n")
    logging.getLogger("vllm").propagate = False
    logging.getLogger("vllm").addHandler(logging.StreamHandler(sys.stdout))  # as vLLM configures itself
    forward_errors("vllm")
    logging.getLogger("vllm").warning("Attempted to load weight x")
    logging.getLogger("vllm").error("engine error")
    logging.getLogger("rollout.pool").warning("our warning")
    logging.getLogger("rollout.pool").info("our info")
    sys.stdout.flush()
""")


@pytest.mark.parametrize("verbose", [False, True])
def test_actor_output_goes_to_the_run_folder(tmp_path, verbose):
    env = dict(os.environ, **{ENV_DIR: str(tmp_path), ENV_VERBOSE: "1" if verbose else "0"})
    got = subprocess.run([sys.executable, "-c", ACTOR], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert got.returncode == 0, got.stderr
    text = (tmp_path / "rollout-0.log").read_text()
    for line in ("engine stdout line", "native stderr line", "Attempted to load weight x", "engine error",
                 "our warning", "our info"):
        assert line in text
    console = got.stdout + got.stderr
    if verbose:  # everything, as printed
        assert "Attempted to load weight x" in console and "engine stdout line" in console
    else:  # our warnings and any error, one short line each
        assert got.stdout == ""  # even the printed path went to the file
        assert "[tokencredit] warning: our warning" in got.stderr and "[vllm] error: engine error" in got.stderr
        assert "Attempted to load weight" not in console and "engine stdout line" not in console
        assert "our info" not in console and "native stderr line" not in console


def test_without_a_log_folder_nothing_is_redirected(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in (ENV_DIR, ENV_VERBOSE)}
    got = subprocess.run([sys.executable, "-c", ACTOR], env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert got.stdout.startswith("None\nengine stdout line")


def test_downcast_warning_is_kept_once():
    from rollout.vllm_adapter import _DowncastOnce

    f = _DowncastOnce()

    def rec(src, dst, name="w"):
        return logging.LogRecord("vllm.model_executor.models.utils", logging.WARNING, "", 0, _DowncastOnce.MSG,
                                 (name, src, dst), None)

    assert f.filter(rec("torch.float32", "torch.bfloat16"))
    assert not f.filter(rec("torch.float32", "torch.bfloat16", "other"))
    assert f.filter(rec("torch.int8", "torch.bfloat16"))  # not a float cast: every one is shown


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_summary_names_accuracy_before_after_time_and_where_things_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "quickstart"
    write_metrics(run, [{"step": 0, "eval/greedy_acc": 0.3125, "eval/pass_at_k": 0.6875},
                        {"step": 1, "reward/total/mean": 0.4},
                        {"step": 2, "reward/total/mean": 0.5, "eval/greedy_acc": 0.6875, "eval/pass_at_k": 0.875}])
    (run / "report.png").write_bytes(b"png")
    (run / "hf_model").mkdir()
    cfg = SimpleNamespace(name="quickstart", eval=SimpleNamespace(pass_k=4))
    lines = run_summary(run, cfg, 252)
    assert lines[0] == "done: quickstart, 2 steps in 4 min 12 s"
    text = "\n".join(lines)
    assert "greedy 31.2% -> 68.8%, pass@4 68.8% -> 87.5%  (step 0 -> 2)" in text
    assert "runs/quickstart/report.png" in text and "runs/quickstart/hf_model" in text
    assert "logs" not in text  # only what exists


def test_summary_of_a_dpo_run_and_of_a_run_without_eval(tmp_path):
    cfg = SimpleNamespace(name="dpo", eval=SimpleNamespace(pass_k=4))
    write_metrics(tmp_path / "a", [{"step": 0, "eval/reward_accuracy": 0.0}, {"step": 3, "eval/reward_accuracy": 0.75}])
    assert "pair accuracy 0.0% -> 75.0%" in "\n".join(run_summary(tmp_path / "a", cfg, 5))
    write_metrics(tmp_path / "b", [{"step": 1, "train/loss": 0.1}])
    assert not any("held-out" in line for line in run_summary(tmp_path / "b", cfg, 5))


def test_progress_without_a_terminal_is_one_line_per_step(caplog):
    bar = StepProgress("quickstart", 12, 0, live=True)  # pytest's stderr is not a terminal
    with caplog.at_level(logging.INFO, logger="rl.tracking"):
        bar.update(1, {"reward/total/mean": 0.359, "train/accuracy": 0.359, "timing/step": 63.7, "train/loss": 1.0})
    bar.close()
    assert caplog.messages == ["step 1/12: reward 0.359, accuracy 0.359, 64 s"]
    assert step_text({"train/reward_accuracy": 0.5, "eval/reward_accuracy": 0.75}) == \
        "pair accuracy 0.5, held-out pair accuracy 0.75"
