"""Checks and normalises the trainer's named tensors before any byte is sent.

The trainer passes ``model.state_dict()`` names of a transformers causal LM. Here we
(1) reject names and shapes the rollout model does not have, with the tensor named,
(2) drop ``lm_head.weight`` of tied-embedding models (it is ``model.embed_tokens.weight``;
vLLM skips it anyway and safetensors refuses shared storage). The backends then cast
floating tensors to the engine dtype while packing (rollout.weight_sync.packing),
which halves the bytes for bf16 engines and rounds exactly as vLLM's own load does.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

TIED_OUTPUT_NAME = "lm_head.weight"


def read_model_layout(model_path: str) -> tuple[dict[str, tuple[int, ...]] | None, bool]:
    """(tensor name -> shape from the safetensors headers or None if none found, tied embeddings?)."""
    root = Path(model_path)
    tied = False
    config = root / "config.json"
    if config.is_file():
        cfg = json.loads(config.read_text())
        tied = bool(cfg.get("tie_word_embeddings", cfg.get("text_config", {}).get("tie_word_embeddings", False)))
    files = sorted(root.glob("*.safetensors")) if root.is_dir() else []
    if not files:
        return None, tied
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        with open(f, "rb") as fh:  # header only: 8-byte length + JSON; no tensor is read
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        shapes.update({k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"})
    return shapes, tied


def validate_named_tensors(named: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], *,
                           tied_embeddings: bool,
                           expected_shapes: dict[str, tuple[int, ...]] | None = None) -> list[tuple[str, torch.Tensor]]:
    """Check every name and shape before anything is sent (a half-applied sync would mix two policies).

    Holds references only (no copies). Drops the tied output layer.
    """
    items = named.items() if isinstance(named, Mapping) else named
    out: list[tuple[str, torch.Tensor]] = []
    seen: set[str] = set()
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], torch.Tensor)):
            raise TypeError(f"sync_weights expects (name, torch.Tensor) pairs or a dict; got {type(item).__name__} "
                            f"{str(item)[:80]!r}")
        name, tensor = item
        if tied_embeddings and name == TIED_OUTPUT_NAME:
            continue  # tied: the output layer is model.embed_tokens.weight
        if name in seen:
            raise ValueError(f"sync_weights: tensor {name!r} given twice")
        seen.add(name)
        if expected_shapes is not None:
            if name not in expected_shapes:
                raise ValueError(f"sync_weights: tensor {name!r} is not in the rollout model's checkpoint "
                                 f"(expected Hugging Face names such as {next(iter(expected_shapes))!r}; "
                                 f"strip wrappers' prefixes like 'module.' and merge LoRA adapters first)")
            if tuple(tensor.shape) != expected_shapes[name]:
                raise ValueError(f"sync_weights: tensor {name!r} has shape {tuple(tensor.shape)}, the rollout "
                                 f"model expects {expected_shapes[name]}")
        out.append((name, tensor))
    if not out:
        raise ValueError("sync_weights: no tensors to send")
    check_fused_groups([name for name, _ in out])
    return out


# vLLM fuses these projections into one parameter (qkv_proj, gate_up_proj); reloading only part
# of a fused parameter leaves the rest of it undefined, so a sync must send all or none of a group
FUSED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def check_fused_groups(names: list[str]) -> None:
    present = set(names)
    for name in names:
        prefix, _, leaf = name.rpartition(".")  # e.g. model.layers.3.self_attn.q_proj . weight
        module_path, _, module = prefix.rpartition(".")
        for group in FUSED_GROUPS:
            if module in group:
                missing = [f"{module_path}.{m}.{leaf}" for m in group if f"{module_path}.{m}.{leaf}" not in present]
                if missing:
                    raise ValueError(f"sync_weights: {name!r} is sent without {missing}; the engine stores "
                                     f"{'/'.join(group)} as one fused tensor, so send all of them or none")
