"""``tokencredit critical-tokens``: cDPO's critical-token estimation (arXiv 2411.19943, "Critical Tokens
Matter"; specs/dpo_methods.md §3.1) from a model's own samples, ending in the weighted pair dataset the
cdpo loss reads (rl/preference_data.py weight columns -> rl/credit/cdpo.py).

    tokencredit critical-tokens recipes/quickstart.yaml critical_tokens.n=64 --out runs/ct [--verify]

Stages (each writes its outputs atomically, then a marker ``stages/<name>.json``; a rerun skips a stage
whose marker holds the same settings fingerprint and the same upstream run ids, and redoes it and
everything downstream otherwise; ``--force`` redoes all):

1. ``sample`` - n responses per prompt from the recipe's model with the rollout workers (vLLM), scored by
   the recipe's reward functions (accuracy label ``eval.accuracy_reward`` >= ``eval.correct_threshold``),
   grouped by final answer: ``pairs.jsonl`` (chosen = a response of the most frequent correct answer,
   rejected = one of the most frequent incorrect answer) and cDPO's SFT sets ``pairs.sft_pos.jsonl`` /
   ``pairs.sft_neg.jsonl`` (rl/build_pairs.py, rl/pairs.py, rule ``cdpo``).
2. ``verify`` (only with ``--verify``) - §3.3 rollout verification on the rejected responses
   (rl/critical_verify.py): ``verify.json``. Runs right after sampling, on the same engines.
3. ``sft_pos`` / ``sft_neg`` - a positive and a negative model (rl/critical_sft.py): LoRA SFT (peft) of the base model on each
   set, loss on the response tokens only (the official ``DataCollatorForCompletionOnlyLM``), merged:
   ``pos_model/``, ``neg_model/`` (HF folders with the tokenizer and ``sft_stats.json``).
4. ``score`` - the contrastive-estimation score of every response token of chosen and rejected
   (rl/credit/critical.py ``contrastive_token_probs``):

       p_CE,t = softmax_v[(1 + beta_CE) log p_pos(v|x, y_<t) - beta_CE log p_neg(v|x, y_<t)] at v = y_t

   a probability (low = critical; spec §7.1, the code form, beta_CE = 1 there, ``beta_ce`` here), in fp32
   from chunks of tokens (no [N, T, V] tensor), from both models' last hidden states on the *same*
   tokenization the trainer uses: the pairs are read with ``load_pairs`` and scored at their
   ``chosen_ids`` / ``rejected_ids`` (response tokens, EOS included), aligned by response-token offset
   (spec §6.1). ``weighted_pairs.jsonl`` = ``pairs.jsonl`` rows plus ``chosen_weight`` / ``rejected_weight``,
   one p_CE per response token incl. EOS; read it with
   ``PreferenceDataConfig(chosen_weight_field="chosen_weight", rejected_weight_field="rejected_weight")``
   and the same tokenizer. (The cdpo loss turns p_CE into weights 1 - p_CE on rejected tokens; its
   ``cdpo_eos_weight=one`` gives EOS weight 1 as the official code does.)

Official settings (spec §3.1) and the defaults here, scaled for a 135M model on a CPU:

    ================================  =======================  ==========================================
    setting                           official                 default here (key)
    ================================  =======================  ==========================================
    samples per prompt, top_p         64, 0.95                 64, 0.95 (``n``, ``top_p``)
    temperature, max_tokens           per model (~10 wrong/q)  the recipe's rollout.* (``temperature``...)
    LoRA r / alpha / dropout          8 / 16 / 0.1             same (``sft.lora_*``)
    LoRA targets                      gate, up, down proj      same (``sft.target_modules``)
    lr, epochs, schedule              3e-4, 1, cosine          same (``sft.lr``, ``sft.epochs``, ...)
    batch                             6 per device             6 (``sft.batch_size``, ``sft.grad_accum``)
    warmup                            100 steps                min(100, ceil(10% of the steps))
                                                             (``sft.warmup_steps``, ``max_warmup_fraction``)
    held-out eval, best model         300 examples             0 = off (``sft.holdout``, ``sft.eval_every``):
                                                             small sets cannot spare 300 examples
    precision                         bf16                     fp32 on CPU (``sft.dtype``)
    max sequence / pair filter        1024 / prompt<512        same (``sft.max_length``, ``max_length``,
                                                             ``max_prompt_length``)
    beta_CE                           1 (hard-coded)           1 (``beta_ce``)
    ================================  =======================  ==========================================

Config: a ``critical_tokens:`` section in the recipe (``CriticalTokensConfig``) and ``critical_tokens.*``
overrides; the rest of the recipe is the usual training recipe (model, data, rollout, rewards, eval).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from rl.critical_sft import SFTConfig, train_lora_sft
from rl.critical_verify import VerifyConfig
from rl.fields import check_fields
from rl.fields import help_field as _h
from rl.standalone_model import DTYPES, output_head, response_hidden, torch_device

log = logging.getLogger(__name__)

SECTION = "critical_tokens"


# ----------------------------------------------------------------------------- config


@dataclass
class CriticalTokensConfig:
    """cDPO critical tokens (2411.19943): sampling, SFT of the contrastive pair, p_CE, §3.3 verification."""

    num_prompts: int = _h(0, "training prompts sampled (the first N of data.train_split; 0 = all)", ge=0)
    n: int = _h(64, "responses sampled per prompt (official 64)", ge=1)
    temperature: float | None = _h(None, "sampling temperature; null = rollout.temperature (official: per model, "
                                         "so that ~10 answers per question are wrong)", ge=0)
    top_p: float = _h(0.95, "nucleus sampling (official 0.95)", gt=0, le=1)
    max_tokens: int | None = _h(None, "max new tokens per response; null = rollout.max_tokens (official 1024)", ge=1)
    seed: int = _h(0, "seed of sampling (per chunk of prompts) and of the pair / SFT-set choice", ge=0)
    batch_prompts: int = _h(64, "prompts per generate call while sampling", ge=1)
    keep_truncated: bool = _h(False, "keep responses cut at max_tokens as candidates (they have no EOS)")
    answer_extract: str = _h("auto", "final answer used to group responses: auto | answer_tag | boxed | "
                                     "last_number, or module:function / file.py:function (text -> str | None)",
                             min_len=1)
    sft_neg_top_p: float = _h(0.5, "negative SFT set: incorrect answers until this share of incorrect responses "
                                   "is covered (official top-p 0.5)", gt=0, le=1)
    sft: SFTConfig = field(default_factory=SFTConfig)
    beta_ce: float = _h(1.0, "p_CE = softmax((1+b) log p_pos - b log p_neg)[y_t] (official b = 1, spec §7.1)", ge=0)
    max_length: int = _h(1024, "pairs longer than this (prompt + response tokens) are not scored (official 1024); "
                         "above max_prompt_length", ge=2)
    max_prompt_length: int = _h(512, "pairs with a longer prompt are not scored (official 512)", ge=1)
    score_batch: int = _h(8, "pairs per forward when scoring", ge=1)
    chunk_tokens: int = _h(1024, "tokens per chunk of the full-vocabulary p_CE pass", ge=1)
    score_dtype: Literal["float32", "bfloat16"] = _h("float32", "dtype of the pos/neg forward when scoring (the "
                                                     "softmax is float32 either way, spec §6.6)")
    device: str = _h("auto", "SFT and scoring device: auto (cuda when available) | cpu | cuda | cuda:N",
                     pattern=r"auto|cpu|cuda(:\d+)?")
    verify: VerifyConfig = field(default_factory=VerifyConfig)

    def check(self, prefix: str = SECTION) -> None:
        """Every field (sft.* and verify.* too) against its declared valid values (rl/fields.py), then the
        relations between fields; the first problem raises ValueError naming its key."""
        check_fields(self, prefix)
        if self.max_length <= self.max_prompt_length:
            raise ValueError(f"{prefix}.max_length: {self.max_length} must exceed {prefix}.max_prompt_length="
                             f"{self.max_prompt_length}")
        self.verify.check(f"{prefix}.verify")


def load_critical_config(recipe: str | Path, overrides: Sequence[str] = ()):
    """(recipe ``Config``, ``CriticalTokensConfig``) from a recipe with an optional ``critical_tokens:``
    section and dotted overrides (``critical_tokens.*`` ones go to the section). Errors are ConfigErrors
    naming the file and the key."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from rl.config import ConfigError, load_config

    path = Path(recipe)
    ours = [o for o in overrides if o.split("=", 1)[0].strip().startswith(SECTION + ".")]
    rest = [o for o in overrides if o not in ours]
    try:
        raw = OmegaConf.load(path) if path.is_file() else None
    except Exception:  # noqa: BLE001 - not valid YAML: load_config says where
        raw = None
    section = raw.pop(SECTION) if isinstance(raw, DictConfig) and SECTION in raw else None
    if section is None:
        cfg = load_config(path, rest)
    else:
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d) / path.name
            tmp.write_text(OmegaConf.to_yaml(raw))
            try:
                cfg = load_config(tmp, rest)
            except ConfigError as e:
                raise ConfigError(str(e).replace(str(tmp), str(path))) from None
    source = str(path)
    try:
        merged = OmegaConf.structured(CriticalTokensConfig)
        if section is not None:
            merged = OmegaConf.merge(merged, section)
        if ours:
            source = f"{path} (command-line overrides)"
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([o[len(SECTION) + 1:] for o in ours]))
        ct = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        from rl.config import omegaconf_message

        key = getattr(e, "full_key", None) or "?"
        msg = omegaconf_message(e)
        if msg.startswith("unknown key"):
            msg = "unknown key (`tokencredit config-keys` lists every key, critical_tokens.* included)"
        raise ConfigError(f"{source}: {SECTION}.{key}: {msg}") from None
    try:
        ct.check()
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return cfg, ct


# ----------------------------------------------------------------------------- shared model helpers


def _split_rows(values: torch.Tensor, lengths: Sequence[int]) -> list[list[float]]:
    return [[float(x) for x in row[:n]] for row, n in zip(values.double().cpu(), lengths)]


# ----------------------------------------------------------------------------- p_CE


@torch.no_grad()
def score_pairs(pos, neg, rows, pad_id: int, beta_ce: float = 1.0, batch_pairs: int = 8, chunk_tokens: int = 1024,
                dtype: torch.dtype = torch.float32) -> list[tuple[list[float], list[float]]]:
    """p_CE of every response token (EOS included) of each pair: [(chosen scores, rejected scores)].

    ``rows`` are ``PairRow``s from ``load_pairs``: the scores are aligned with ``chosen_ids`` /
    ``rejected_ids`` by response-token offset. Hidden states from both models on the same batch, p_CE
    from rl/credit/critical.py in float32 over chunks of ``chunk_tokens`` masked tokens.
    """
    from rl.credit.critical import contrastive_token_probs
    from rl.preference_data import collate_pairs

    pos.eval()
    neg.eval()
    w_pos, b_pos = output_head(pos)
    w_neg, b_neg = output_head(neg)
    out = []
    for s in range(0, len(rows), batch_pairs):
        part = rows[s: s + batch_pairs]
        batch = collate_pairs(part, pad_id)
        mask = batch["completion_mask"] > 0
        labels = batch["completion_ids"][mask].to(w_pos.device)
        h_pos = response_hidden(pos, batch, dtype)[mask.to(w_pos.device)]
        h_neg = response_hidden(neg, batch, dtype)[mask.to(w_neg.device)].to(h_pos.device)
        p = contrastive_token_probs(h_pos, w_pos, h_neg, w_neg.to(h_pos.device), labels, beta_ce,
                                    bias_pos=b_pos, bias_neg=None if b_neg is None else b_neg.to(h_pos.device),
                                    chunk_tokens=chunk_tokens)
        full = torch.zeros(mask.shape, dtype=torch.float64)
        full[mask] = p.double().cpu()
        b = len(part)
        chosen = _split_rows(full[:b], [len(r.chosen_ids) for r in part])
        rejected = _split_rows(full[b:], [len(r.rejected_ids) for r in part])
        out += list(zip(chosen, rejected))
    return out


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_weighted_pairs(pairs_path: str | Path, rows, scores, out_path: str | Path,
                         chosen_field: str = "chosen_weight", rejected_field: str = "rejected_weight") -> int:
    """``pairs_path`` rows (by ``PairRow.index``) plus per-token p_CE columns, written atomically; row count."""
    raw = [json.loads(line) for line in Path(pairs_path).read_text(encoding="utf-8").splitlines() if line.strip()]
    lines = []
    for row, (c, r) in zip(rows, scores):
        if len(c) != len(row.chosen_ids) or len(r) != len(row.rejected_ids):
            raise ValueError(f"write_weighted_pairs: pair {row.index}: {len(c)}/{len(r)} scores for "
                             f"{len(row.chosen_ids)}/{len(row.rejected_ids)} response tokens")
        rec = dict(raw[row.index])
        if isinstance(rec.get("prompt"), str) and rec["prompt"] != row.prompt:
            raise ValueError(f"write_weighted_pairs: row {row.index} of {pairs_path} is not the pair that was scored")
        rec[chosen_field], rec[rejected_field] = list(c), list(r)
        lines.append(json.dumps(rec, default=str) + "\n")
    _atomic_write(Path(out_path), "".join(lines))
    return len(lines)


# ----------------------------------------------------------------------------- stages


def _fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class _Stages:
    """``stages/<name>.json`` markers: settings fingerprint, run id, upstream run ids, outputs, stats."""

    def __init__(self, out: Path, force: bool):
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.out, self.force, self.ran, self.stats = out, force, [], {}
        self.forced: set[str] = set()

    def marker(self, name: str) -> dict | None:
        try:
            return json.loads((self.dir / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def needed(self, name: str, fp: str, upstream: Sequence[str]) -> bool:
        m = self.marker(name)
        inputs = {u: (self.marker(u) or {}).get("run_id") for u in upstream}
        stale = (m is None or (self.force and name not in self.forced) or m.get("fingerprint") != fp
                 or m.get("inputs") != inputs or not all((self.out / o).exists() for o in m.get("outputs", [])))
        if stale:
            (self.dir / f"{name}.json").unlink(missing_ok=True)  # a crash from here on leaves it unfinished
            self.forced.add(name)
        else:
            self.stats[name] = m.get("stats", {})
        return stale

    def done(self, name: str, fp: str, upstream: Sequence[str], outputs: Sequence[str], stats: dict) -> None:
        inputs = {u: (self.marker(u) or {}).get("run_id") for u in upstream}
        rec = {"fingerprint": fp, "run_id": uuid.uuid4().hex, "inputs": inputs, "outputs": list(outputs),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "stats": stats}
        _atomic_write(self.dir / f"{name}.json", json.dumps(rec, indent=1, default=str))
        self.ran.append(name)
        self.stats[name] = stats


def _sampling(cfg, ct: CriticalTokensConfig):
    from rollout.types import SamplingSpec

    r = cfg.rollout
    return SamplingSpec(n=ct.n, temperature=r.temperature if ct.temperature is None else ct.temperature,
                        top_p=ct.top_p, top_k=r.top_k, max_tokens=ct.max_tokens or r.max_tokens, stop=list(r.stop))


def _extractor(spec: str, base_dir: str | None) -> str | Callable[[str], str | None]:
    from rewards.extract import EXTRACT_MODES
    from rewards.loader import load_reward_fn

    return spec if spec in EXTRACT_MODES else load_reward_fn(spec, base_dir)


def _default_pool(cfg, model_path: str):
    from rl.setup import init_ray
    from rollout.pool import RolloutPool

    init_ray(cfg)
    r = cfg.rollout
    return RolloutPool(model_path, num_workers=r.num_workers, backend=r.backend, dtype=cfg.model.dtype,
                       max_model_len=r.max_model_len, memory_fraction=r.memory_fraction, seed=r.seed,
                       num_cpus_per_worker=r.num_cpus_per_worker, num_gpus_per_worker=r.num_gpus_per_worker,
                       sync_backend=r.sync_backend, generate_timeout_s=r.generate_timeout_s,
                       start_timeout_s=r.start_timeout_s)


def _settings(cfg, ct: CriticalTokensConfig, model_path: str) -> dict[str, str]:
    """Settings fingerprint of each stage (only what changes its output)."""
    asdict = dataclasses.asdict
    sample = {"model": model_path, "data": asdict(cfg.data), "rewards": asdict(cfg.rewards),
              "accuracy": [cfg.eval.accuracy_reward, cfg.eval.correct_threshold],
              "sampling": dataclasses.asdict(_sampling(cfg, ct)), "engine": [cfg.model.dtype, cfg.rollout.seed],
              "ct": [ct.num_prompts, ct.seed, ct.batch_prompts, ct.keep_truncated, ct.answer_extract,
                     ct.sft_neg_top_p]}
    return {
        "sample": _fingerprint(sample),
        "verify": _fingerprint([model_path, asdict(ct.verify), ct.max_length, ct.max_prompt_length]),
        "sft_pos": _fingerprint([model_path, asdict(ct.sft)]),
        "sft_neg": _fingerprint([model_path, asdict(ct.sft)]),
        "score": _fingerprint([ct.beta_ce, ct.max_length, ct.max_prompt_length, ct.score_dtype]),
    }


def _pair_cfg(ct: CriticalTokensConfig, source: Path, extra: Sequence[str] = ()):
    from rl.preference_data import PreferenceDataConfig

    return PreferenceDataConfig(source=str(source), max_length=ct.max_length, max_prompt_length=ct.max_prompt_length,
                                extra_columns=list(extra), on_bad_pair="drop")


def run_critical_tokens(cfg, ct: CriticalTokensConfig, out_dir: str | Path, *, recipe_path: str | None = None,
                        verify: bool = False, weights: bool = True, force: bool = False,
                        pool_factory: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Run the stages (module doc) into ``out_dir``; returns {"ran": [stage names], "stats": {...}, "out": path}.

    ``pool_factory(model_path)`` builds the rollout pool (default: a RolloutPool from ``cfg.rollout``); it is
    called only when sampling or verification has to run, and the pool is shut down before the SFT.
    """
    from transformers import AutoTokenizer

    from rewards import RewardScorer
    from rl.build_pairs import build_pairs
    from rl.config import to_yaml
    from rl.data import load_train_prompts
    from rl.evaluate import accuracy_label
    from rl.models import resolve_model

    ct.check()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_path = resolve_model(cfg.model.name_or_path)
    from omegaconf import OmegaConf

    _atomic_write(out / "critical_tokens.yaml", to_yaml(cfg) + OmegaConf.to_yaml({SECTION: OmegaConf.structured(ct)}))
    _atomic_write(out / "run.json", json.dumps({"model_path": model_path, "recipe": recipe_path}, indent=1))
    tok = AutoTokenizer.from_pretrained(model_path)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    fps = _settings(cfg, ct, model_path)
    st = _Stages(out, force)
    sampling = _sampling(cfg, ct)
    if cfg.data.max_prompt_tokens + sampling.max_tokens > cfg.rollout.max_model_len:
        raise ValueError(f"{SECTION}.max_tokens: {sampling.max_tokens} + data.max_prompt_tokens "
                         f"{cfg.data.max_prompt_tokens} exceeds rollout.max_model_len {cfg.rollout.max_model_len}")
    base_dir = str(Path(recipe_path).resolve().parent) if recipe_path else None
    scorer = RewardScorer([{"name": f.name, "weight": f.weight, "kwargs": dict(f.kwargs)} for f in cfg.rewards.functions],
                          on_error=cfg.rewards.on_error, timeout_s=cfg.rewards.timeout_s, base_dir=base_dir)
    label = accuracy_label(scorer, cfg.eval)
    pairs = out / "pairs.jsonl"
    sft_sets = {"pos": out / "pairs.sft_pos.jsonl", "neg": out / "pairs.sft_neg.jsonl"}
    pool, prompts = None, None

    def get_prompts():
        nonlocal prompts
        if prompts is None:
            prompts = load_train_prompts(cfg.data, tok, limit=ct.num_prompts or None)
        return prompts

    def get_pool():
        nonlocal pool
        if pool is None:
            pool = (pool_factory or (lambda p: _default_pool(cfg, p)))(model_path)
        return pool

    try:
        if st.needed("sample", fps["sample"], []):
            stats = build_pairs(get_pool(), scorer, get_prompts(), sampling, pairs, rule="cdpo", seed=ct.seed,
                                accuracy_reward=cfg.eval.accuracy_reward, correct_threshold=cfg.eval.correct_threshold,
                                extract=_extractor(ct.answer_extract, base_dir), keep_truncated=ct.keep_truncated,
                                batch_prompts=ct.batch_prompts, write_sft=True, sft_neg_top_p=ct.sft_neg_top_p)
            st.done("sample", fps["sample"], [], ["pairs.jsonl", "pairs.sft_pos.jsonl", "pairs.sft_neg.jsonl"], stats)
            log.info("sampled: %d pairs from %d prompts (accuracy %.3f); SFT sets %d pos / %d neg", stats["pairs"],
                     stats["prompts"], stats["accuracy"], stats["sft_pos"], stats["sft_neg"])
        if verify and st.needed("verify", fps["verify"], ["sample"]):
            report = _verify(get_pool(), scorer, get_prompts(), tok, ct, sampling, label, cfg.eval.correct_threshold,
                             pairs, model_path)
            _atomic_write(out / "verify.json", json.dumps(report, indent=1))
            st.done("verify", fps["verify"], ["sample"], ["verify.json"], report["summary"])
            _print_verify(report["summary"])
    finally:
        if pool is not None:
            pool.shutdown()
    if weights:
        for side in ("pos", "neg"):
            name = f"sft_{side}"
            if st.needed(name, fps[name], ["sample"]):
                stats = train_lora_sft(model_path, sft_sets[side], out / f"{side}_model", ct.sft, tok, ct.device)
                stats = {k: v for k, v in stats.items() if k not in ("losses", "config")}
                st.done(name, fps[name], ["sample"], [f"{side}_model/config.json"], stats)
        if st.needed("score", fps["score"], ["sample", "sft_pos", "sft_neg"]):
            stats = _score(out, ct, tok, pad_id, pairs)
            st.done("score", fps["score"], ["sample", "sft_pos", "sft_neg"], ["weighted_pairs.jsonl"], stats)
            log.info("wrote %s: %d pairs; mean p_CE chosen %.3g, rejected %.3g; read it with "
                     "chosen_weight_field=chosen_weight rejected_weight_field=rejected_weight",
                     out / "weighted_pairs.jsonl", stats["pairs"], stats["mean_pce_chosen"], stats["mean_pce_rejected"])
    return {"ran": st.ran, "stats": st.stats, "out": out}


def _score(out: Path, ct: CriticalTokensConfig, tok, pad_id: int, pairs: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from rl.preference_data import load_pairs

    start = time.perf_counter()
    ps = load_pairs(_pair_cfg(ct, pairs), tok)
    dev = torch_device(ct.device)
    pos = AutoModelForCausalLM.from_pretrained(out / "pos_model", dtype=torch.float32).to(dev)
    neg = AutoModelForCausalLM.from_pretrained(out / "neg_model", dtype=torch.float32).to(dev)
    scores = score_pairs(pos, neg, ps.rows, pad_id, ct.beta_ce, ct.score_batch, ct.chunk_tokens, DTYPES[ct.score_dtype])
    n = write_weighted_pairs(pairs, ps.rows, scores, out / "weighted_pairs.jsonl")
    eos = tok.eos_token_id

    def body(values, ids):  # without the EOS slot
        return values[:-1] if ids and ids[-1] == eos else values

    flat_c = [x for row, (c, _) in zip(ps.rows, scores) for x in body(c, row.chosen_ids)]
    flat_r = [x for row, (_, r) in zip(ps.rows, scores) for x in body(r, row.rejected_ids)]

    def mean(xs):
        return sum(xs) / len(xs) if xs else float("nan")

    return {"pairs": n, "dropped": ps.dropped, "tokenizer": str(getattr(tok, "name_or_path", "")),
            "beta_ce": ct.beta_ce, "mean_pce_chosen": mean(flat_c), "mean_pce_rejected": mean(flat_r),
            "rejected_tokens_below_0.5": mean([float(x < 0.5) for x in flat_r]),
            "chosen_tokens_below_0.5": mean([float(x < 0.5) for x in flat_c]),
            "seconds": time.perf_counter() - start}


def _verify(pool, scorer, prompts, tok, ct: CriticalTokensConfig, sampling, label, threshold, pairs: Path,
            model_path: str) -> dict:
    from transformers import AutoModelForCausalLM

    from rl.critical_verify import HFNextToken, Trajectory, verify_critical_tokens
    from rl.preference_data import load_pairs

    ps = load_pairs(_pair_cfg(ct, pairs, ["prompt_index"]), tok, limit=ct.verify.num_trajectories, allow_empty=True)
    eos = tok.eos_token_id
    trajs = [Trajectory(int(r.columns["prompt_index"]), r.prompt_ids,
                        r.rejected_ids[:-1] if r.rejected_ids and r.rejected_ids[-1] == eos else r.rejected_ids, r.index)
             for r in ps.rows]
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(torch_device(ct.device)).eval()
    report = verify_critical_tokens(pool, scorer, prompts, trajs, HFNextToken(base), tok, ct.verify, sampling, label,
                                    threshold)
    report["summary"]["model"] = model_path
    return report


def _print_verify(s: dict) -> None:
    def fmt(d):
        return " ".join(f"@{k}={v:.3f}" for k, v in d.items()) or "-"

    print(f"[tokencredit] verify: {s['found']}/{s['trajectories']} trajectories with a critical token\n"
          f"  critical, with:      {fmt(s['critical']['with'])}\n"
          f"  critical, forced:    {fmt(s['critical']['without'])}\n"
          f"  random pos, with:    {fmt(s['random']['with'])}\n"
          f"  random pos, forced:  {fmt(s['random']['without'])}", flush=True)


def cli_main(args) -> int:
    """``tokencredit critical-tokens`` (wired in rl/cli.py)."""
    from rl.cli import find_recipe

    recipe = find_recipe(args.recipe)
    cfg, ct = load_critical_config(recipe, args.overrides)
    if args.print_config:
        from omegaconf import OmegaConf

        from rl.config import to_yaml

        print(to_yaml(cfg) + OmegaConf.to_yaml({SECTION: OmegaConf.structured(ct)}))
        return 0
    res = run_critical_tokens(cfg, ct, args.out, recipe_path=str(recipe), verify=args.verify or args.verify_only,
                              weights=not args.verify_only, force=args.force)
    skipped = [s for s in ("sample", "verify", "sft_pos", "sft_neg", "score") if s in res["stats"] and s not in res["ran"]]
    log.info("critical-tokens done: %s (ran: %s%s)", res["out"], ", ".join(res["ran"]) or "nothing",
             "; already done: " + ", ".join(skipped) if skipped else "")
    return 0

