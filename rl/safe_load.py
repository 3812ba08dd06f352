"""Loading checkpoints without unpickling code: ``torch.load(weights_only=True)`` everywhere.

A ``.pt`` file is a pickle, and a pickle may name any importable callable to run while it loads. A
checkpoint folder from someone else (or an edited one) must not be able to do that, so every load
here is ``weights_only``: tensors, numbers, strings and plain containers, plus an explicit allowlist
of plain data classes:

* the driver's ``state.pt`` (rl/checkpoint.py) holds only those (numpy arrays of earlier versions
  are rebuilt through numpy's array constructor, which torch's allowlist admits);
* DeepSpeed's own files (``mp_rank_*_model_states.pt``, ``*_optim_states.pt``) are read by its
  checkpoint engine with ``weights_only=False``; ``use_weights_only`` replaces that engine's ``load``
  on a rank with this one. Its ZeRO files hold three DeepSpeed data classes (the loss scaler's state,
  the ZeRO stage enum, a parameter-fragment address), allowed by name.

HF exports are safetensors (rl/hf_export.py) and the ``inspect`` batches load ``weights_only`` too.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

DEEPSPEED_CLASSES = (
    "deepspeed.runtime.fp16.loss_scaler.LossScaler",
    "deepspeed.runtime.fp16.loss_scaler.DynamicLossScaler",
    "deepspeed.runtime.zero.config.ZeroStageEnum",
    "deepspeed.utils.tensor_fragment.fragment_address",
)


def _classes(names) -> list:
    out = []
    for dotted in names:
        module, _, name = dotted.rpartition(".")
        try:
            out.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):  # another DeepSpeed version: its files will say what they need
            pass
    return out


def _numpy_array_globals() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_weights_only(path: str | Path, map_location=None, *, numpy_arrays: bool = False, deepspeed: bool = False):
    """``torch.load(path, weights_only=True)`` with the allowlists above; a refused file raises
    ``pickle.UnpicklingError`` naming it (nothing in it ran)."""
    import pickle

    allowed = (_numpy_array_globals() if numpy_arrays else []) + (_classes(DEEPSPEED_CLASSES) if deepspeed else [])
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "Unsupported global" in ln or "GLOBAL" in ln), first[0][:200])
        raise pickle.UnpicklingError(f"{path}: refused to load (weights_only): {detail}; a checkpoint holds "
                                     f"tensors and plain data only, so this file was not written by tokencredit "
                                     f"or was altered") from None


def use_weights_only(ds_engine) -> None:
    """Make a DeepSpeed engine read its checkpoint files with ``load_weights_only`` (its default engine
    unpickles anything)."""
    ce = getattr(ds_engine, "checkpoint_engine", None)
    if ce is None:
        return

    def load(path, map_location=None):
        return load_weights_only(path, map_location, deepspeed=True)

    ce.load = load
