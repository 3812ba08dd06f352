#!/usr/bin/env bash
# Submit a run to a running Ray cluster as a job (ray job submit), shipping this checkout.
#   RAY_ADDRESS=http://HEAD:8265 bash launch/submit.sh recipes/grpo.yaml trainer.steps=200
set -euo pipefail
cd "$(dirname "$0")/.."
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster's dashboard address, e.g. http://127.0.0.1:8265}"
# shellcheck disable=SC1091
. "${TOKENCREDIT_VENV:-.venv}/bin/activate"
exec ray job submit --address "$RAY_ADDRESS" --working-dir . -- \
  python -m rl.cli train "$@" cluster.address=auto
