#!/usr/bin/env bash
# Run any recipe on this machine (a local Ray instance is started and stopped by the run).
#   bash launch/local.sh recipes/grpo_d3s.yaml trainer.steps=50
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash launch/local.sh RECIPE [key=value ...]" >&2; exit 2; }
# shellcheck disable=SC1091
. "${TOKENCREDIT_VENV:-.venv}/bin/activate"
exec tokencredit train "$@"
