"""Preference pairs from the model's own samples, for ``tokencredit build-pairs`` and ``builtin:self``.

Both read a recipe: the prompts of ``data:`` (e.g. ``builtin:arithmetic``), sampled with ``rollout:``
(n, temperature, top_p, max_tokens) by the rollout workers, scored by ``rewards:`` (a sample is correct when
``eval.accuracy_reward`` >= ``eval.correct_threshold``), paired by ``dpo.pair_rule`` (rl/pairs.py: a correct vs
an incorrect sample, or cDPO's most-frequent-answer rule) with ``dpo.build_seed``; rl/build_pairs.py does the
work and writes jsonl that rl/preference_data.py reads.

``preference_data.source: builtin:self`` makes ``tokencredit train`` build that file before training, from
the starting policy, into the cache (``$TOKENCREDIT_CACHE/pairs/<name>-<key>.jsonl``, beside the bundled
models' ``models/``). The key hashes everything the pairs depend on (model weights file, data, sampling, rewards, rule,
seed, limit), so a changed recipe builds anew and an unchanged one reuses the file; a ``.json`` beside it
records the build's inputs and statistics. Pairs hold the sampled text: the pair reader re-tokenizes it
(rl/preference_data.py checks that the prompt tokens are the sampled ones). ``builtin:critical`` runs the
whole cDPO pipeline of rl/critical_tokens.py the same way (``$TOKENCREDIT_CACHE/critical/<name>-<key>/``):
cDPO's pairs, LoRA SFT of the positive and negative models, p_CE of every response token.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, replace
from pathlib import Path

log = logging.getLogger(__name__)


def sampling(cfg, n: int | None = None):
    from rl.collect import sampling_spec

    spec = sampling_spec(cfg.rollout)
    if n is not None:
        spec.n = n
    return spec


def _model_identity(model_path: str) -> dict:
    p = Path(model_path)
    files = sorted(p.glob("*.safetensors")) + sorted(p.glob("*.bin")) if p.is_dir() else []
    return {"path": str(p.resolve()) if p.exists() else model_path,
            "weights": [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]}


def build_inputs(cfg, model_path: str, limit: int | None) -> dict:
    """Everything the built pairs depend on (hashed into the cache key, recorded beside the file)."""
    from omegaconf import OmegaConf

    spec = sampling(cfg)
    return {"model": _model_identity(model_path), "data": OmegaConf.to_container(OmegaConf.structured(cfg.data)),
            "sampling": {k: v for k, v in asdict(spec).items() if k != "seed"},
            "rollout_seed": cfg.rollout.seed, "rewards": OmegaConf.to_container(OmegaConf.structured(cfg.rewards)),
            "accuracy_reward": cfg.eval.accuracy_reward, "correct_threshold": cfg.eval.correct_threshold,
            "rule": cfg.dpo.pair_rule, "seed": cfg.dpo.build_seed, "limit": limit,
            "keep_truncated": cfg.dpo.keep_truncated, "split": cfg.data.train_split}


def builtin_pairs_path(cfg, model_path: str) -> Path:
    from rl.models import cache_dir

    key = hashlib.sha256(json.dumps(build_inputs(cfg, model_path, cfg.dpo.build_limit), sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    name = Path(model_path).name or "model"
    return cache_dir().parent / "pairs" / f"{name}-{key}.jsonl"


def make_pairs(cfg, pool, scorer, tokenizer, out: str | Path, *, split: str | None = None, limit: int | None = None,
               rule: str | None = None, seed: int | None = None, n: int | None = None, write_sft: bool = False,
               batch_prompts: int = 64) -> dict:
    """Sample, score and pair the prompts of ``cfg.data`` (``split``, first ``limit`` rows) into ``out``."""
    from rl.build_pairs import build_pairs
    from rl.data import load_prompts

    prompts = load_prompts(cfg.data, tokenizer, split or cfg.data.train_split, limit)
    if not prompts.rows:
        raise ValueError(f"data.source: {cfg.data.source} split {split or cfg.data.train_split!r} has no usable "
                         f"prompts to sample pairs from")
    return build_pairs(pool, scorer, prompts, sampling(cfg, n), out, rule=rule or cfg.dpo.pair_rule,
                       seed=cfg.dpo.build_seed if seed is None else seed,
                       accuracy_reward=cfg.eval.accuracy_reward, correct_threshold=cfg.eval.correct_threshold,
                       keep_truncated=cfg.dpo.keep_truncated, batch_prompts=batch_prompts, write_sft=write_sft)


def ensure_builtin_pairs(cfg, model_path: str, pool, scorer, tokenizer) -> Path:
    """The cached pairs file of ``preference_data.source=builtin:self``, built first when missing."""
    path = builtin_pairs_path(cfg, model_path)
    if path.is_file():
        log.info("builtin:self pairs: reusing %s", path)
        return path
    if pool is None:
        raise RuntimeError("builtin:self pairs are not built yet and no rollout workers were started")
    log.info("building pairs from the model's own samples -> %s", path)
    stats = make_pairs(cfg, pool, scorer, tokenizer, path, limit=cfg.dpo.build_limit)
    if not stats["pairs"]:
        path.unlink(missing_ok=True)
        raise ValueError(f"preference_data.source=builtin:self: no pair from {stats['prompts']} prompts x "
                         f"rollout.n={cfg.rollout.n} samples ({stats['correct']} of {stats['candidates']} correct): "
                         "every prompt was all correct or all wrong; change data.task, rollout.temperature or n")
    meta = path.with_suffix(".json")
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"inputs": build_inputs(cfg, model_path, cfg.dpo.build_limit), "stats": stats},
                              indent=1, default=str))
    os.replace(tmp, meta)
    log.info("%d pairs from %d prompts (sample accuracy %.2f, %.0f s)", stats["pairs"], stats["prompts"],
             stats["accuracy"], stats["seconds"])
    return path


def critical_config(cfg):
    """``builtin:critical``: rl/critical_tokens.py's settings from the recipe (its defaults are the official
    ones: top_p 0.95, LoRA r 8 on the MLP, lr 3e-4, 1 epoch; n / prompts / seed from rollout.n, dpo.build_*)."""
    from rl.critical_tokens import CriticalTokensConfig

    return CriticalTokensConfig(num_prompts=cfg.dpo.build_limit or 0, n=cfg.rollout.n, seed=cfg.dpo.build_seed,
                                keep_truncated=cfg.dpo.keep_truncated)


def ensure_critical_pairs(cfg, model_path: str, pool_factory) -> Path:
    """``builtin:critical``: `tokencredit critical-tokens` into the cache (its stages are skipped when done),
    returning its weighted_pairs.jsonl (p_CE per response token in chosen_weight / rejected_weight)."""
    from rl.critical_tokens import run_critical_tokens
    from rl.models import cache_dir

    ct = critical_config(cfg)
    inputs = build_inputs(cfg, model_path, cfg.dpo.build_limit)
    inputs["critical_tokens"] = asdict(ct)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]
    out = cache_dir().parent / "critical" / f"{Path(model_path).name or 'model'}-{key}"
    log.info("cDPO critical tokens (sample, LoRA SFT pos/neg, p_CE) -> %s", out)
    run_critical_tokens(cfg, ct, out, pool_factory=pool_factory)
    return out / "weighted_pairs.jsonl"


def resolved_data_config(cfg, path: Path):
    """``preference_data`` with ``builtin:self`` / ``builtin:critical`` replaced by the built file."""
    return replace(cfg.preference_data, source=str(path))
