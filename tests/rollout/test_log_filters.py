"""vLLM's per-tensor "Attempted to load weight" warning is kept once when it only means a cast to model.dtype
(rollout/vllm_adapter.py); whether vLLM prints it at all depends on the CPU, so the e2e console test cannot
rely on it and this checks the filter on records directly."""

from __future__ import annotations

import logging

import torch

from rollout.vllm_adapter import _DowncastOnce

MSG = _DowncastOnce.MSG


def emitted(records: list[tuple]) -> list[str]:
    log = logging.getLogger("test.downcast_once")
    log.filters[:] = []
    log.addFilter(_DowncastOnce())
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    log.handlers[:] = [handler]
    log.propagate = False
    for args in records:
        log.warning(MSG, *args)
    return seen


def test_a_cast_to_a_narrower_dtype_is_kept_once_with_a_note():
    casts = [(f"layers.{i}.weight", torch.float32, torch.bfloat16) for i in range(7)]
    seen = emitted(casts)
    assert len(seen) == 1
    assert seen[0].startswith("Attempted to load weight layers.0.weight with dtype torch.float32 into parameter")
    assert "the other weights are not listed" in seen[0]


def test_any_other_mismatch_is_kept_every_time():
    odd = [("a", torch.bfloat16, torch.float16), ("b", torch.bfloat16, torch.float16), ("c", torch.int8, torch.bfloat16)]
    seen = emitted([("x", torch.float32, torch.bfloat16)] + odd)
    assert len(seen) == 4 and all("not listed" not in s for s in seen[1:])


def test_importing_trl_does_not_silence_the_rollout_workers_log_files(tmp_path):
    """TRL sets VLLM_LOGGING_LEVEL=ERROR process-wide when imported (DPO runs import it for its data helpers);
    the workers still log vLLM's INFO lines to RUN/logs/ unless the user set a level before the run."""
    import os
    import subprocess
    import sys

    code = ("import os, rollout, trl; from rollout.logs import ENV_DIR; os.environ[ENV_DIR] = '.';"
            "from rollout.vllm_adapter import engine_process_env;"
            "print(os.environ['VLLM_LOGGING_LEVEL'], engine_process_env(False, 1, False)['VLLM_LOGGING_LEVEL'])")
    env = {k: v for k, v in os.environ.items() if k != "VLLM_LOGGING_LEVEL"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["ERROR", "INFO"], out.stderr[-2000:]
    out = subprocess.run([sys.executable, "-c", code], env={**env, "VLLM_LOGGING_LEVEL": "DEBUG"},
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.stdout.split() == ["DEBUG", "DEBUG"], out.stderr[-2000:]  # the user's own setting is kept
