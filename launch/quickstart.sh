#!/usr/bin/env bash
# README command 1: set up (once) and run the quickstart: GRPO on the bundled
# SmolLM2-135M-Instruct with vLLM rollouts and a DeepSpeed trainer (about 10 min on 2 CPU cores).
# Extra arguments are recipe overrides, e.g. `bash launch/quickstart.sh trainer.steps=5`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
# shellcheck disable=SC1091
. "${TOKENCREDIT_VENV:-.venv}/bin/activate"
exec tokencredit train recipes/quickstart.yaml "$@"
