"""``tokencredit prepare-model``: its stdout is the prepared folder and nothing else (install.sh captures it)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.rl.test_engine import REPO


def test_the_first_conversion_prints_only_the_folder(tmp_path):
    """The first conversion imports DeepSpeed via transformers, whose accelerator warning went to stdout: install
    then reported the model "at [WARNING] ... Setting accelerator to CPU ... /root/.cache/...". """
    env = {**os.environ, "TOKENCREDIT_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "rl.cli", "prepare-model", "smollm2-135m"], env=env, cwd=REPO,
                         capture_output=True, text=True, timeout=600)  # the `tokencredit` entry point's code
    assert out.returncode == 0, out.stderr[-2000:]
    folder = tmp_path / "models" / "smollm2-135m"
    assert out.stdout == f"{folder}\n"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
