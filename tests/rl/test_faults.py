"""rl/faults.py: the signal policy, the resume command, the fault-injection switch."""

from __future__ import annotations

import os
import shlex
import signal

import pytest

from rl import faults


def test_first_signal_lets_the_step_finish_the_second_abandons_it():
    calls = []
    before = signal.getsignal(signal.SIGINT)
    stop = faults.StopSignals(on_request=lambda: calls.append(1)).install()
    try:
        stop.begin_steps()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signum == signal.SIGTERM and calls == [1]
        with pytest.raises(faults.RunInterrupted) as err:
            os.kill(os.getpid(), signal.SIGINT)
        assert err.value.exit_code == 128 + signal.SIGTERM  # the first signal names the stop
        assert "abandoned" in str(err.value) and calls == [1]
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGINT) is before


def test_during_shut_down_one_signal_is_waited_out_and_a_further_one_is_not():
    stop = faults.StopSignals().install()
    try:
        stop.begin_steps()
        stop.shutting_down()
        os.kill(os.getpid(), signal.SIGINT)  # waited out: the engines are being shut down
        with pytest.raises(faults.RunInterrupted, match="during shut-down"):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        stop.restore()


def test_during_start_up_the_first_signal_abandons():
    stop = faults.StopSignals().install()
    try:
        with pytest.raises(faults.RunInterrupted, match="start-up was abandoned") as err:
            os.kill(os.getpid(), signal.SIGINT)
        assert err.value.exit_code == 130
    finally:
        stop.restore()


def test_ray_init_handler_is_replaced_again():
    stop = faults.StopSignals().install()
    try:
        signal.signal(signal.SIGTERM, lambda *a: None)  # what ray.init does
        faults.after_ray_init()
        assert signal.getsignal(signal.SIGTERM) == stop._handle
    finally:
        stop.restore()
    faults.after_ray_init()  # no run: nothing to put back
    assert signal.getsignal(signal.SIGTERM) != stop._handle


def test_the_resume_command_pins_the_run_folder_and_round_trips_quoting(tmp_path):
    argv = ["train", "recipes/smoke.yaml", "rewards.functions=[{name: 'r.py:f'}]", "data.test_split=''",
            "logging.dir=old", "checkpoint.resume=none", "--verbose"]
    cmd = faults.resume_command(tmp_path / "runs" / "smoke-1", argv)
    args = shlex.split(cmd)
    assert args[:3] == ["tokencredit", "train", "recipes/smoke.yaml"]
    assert "rewards.functions=[{name: 'r.py:f'}]" in args and "data.test_split=''" in args and "--verbose" in args
    assert args[-3:] == [f"logging.dir={tmp_path / 'runs'}", "logging.run_name=smoke-1", "checkpoint.resume=auto"]
    assert "logging.dir=old" not in args and "checkpoint.resume=none" not in args


def test_resume_advice_names_the_last_checkpoint(tmp_path):
    assert faults.resume_advice(None) is None
    assert "no checkpoint was written" in faults.resume_advice(tmp_path, ["train", "x.yaml"])
    done = tmp_path / "checkpoints" / "step_000002"
    done.mkdir(parents=True)
    (done / "COMPLETE").write_text("2")
    advice = faults.resume_advice(tmp_path, ["train", "x.yaml"])
    assert f"the last complete checkpoint is {done}; resume with: tokencredit train x.yaml" in advice


def test_fault_switch_matches_point_and_arguments(monkeypatch):
    monkeypatch.setenv("TOKENCREDIT_FAULT", "kill_rank:0:3, save_error:2:EACCES")
    assert faults.injected("kill_rank", 0, 3) == []
    assert faults.injected("kill_rank", 1, 3) is None
    assert faults.injected("save_error", 2) == ["EACCES"]
    assert faults.injected("save_error", 3) is None
    monkeypatch.delenv("TOKENCREDIT_FAULT")
    assert faults.injected("kill_rank", 0, 3) is None
