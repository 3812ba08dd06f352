"""Write streamed weight buckets as a Hugging Face model folder (safetensors shards + index + config + tokenizer).

The trainer hands over one bucket at a time (gathered bucket by bucket under ZeRO-3), so the
whole model never has to exist in one place; each bucket becomes one shard. The folder loads
unchanged in transformers and vLLM.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch


def write_hf_folder(buckets: Iterable[list[tuple[str, torch.Tensor]]], path: str, config, tokenizer_path: str) -> Path:
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    shards: list[tuple[str, list[str]]] = []
    total = 0
    for i, bucket in enumerate(buckets):
        tensors = {n: t.detach().contiguous().cpu() for n, t in bucket if not (tied and n == "lm_head.weight")}
        if not tensors:
            continue
        name = f"part-{i:05d}.safetensors"
        save_file(tensors, str(tmp / name), metadata={"format": "pt"})
        shards.append((name, list(tensors)))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
    if len(shards) == 1:
        os.rename(tmp / shards[0][0], tmp / "model.safetensors")
    else:
        weight_map = {}
        for k, (name, names) in enumerate(shards):
            final = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
            os.rename(tmp / name, tmp / final)
            weight_map.update({n: final for n in names})
        (tmp / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
