"""Scaling table: what crosses each process boundary per step, and each trainer rank's peak memory.

Nothing here is timed and nothing runs on a GPU. For Qwen2.5-shaped models (1.5B, 7B, 32B) at a
cluster layout (default: N = 64 prompts x G = 8 = 512 completions of up to 4096 tokens, prompts up
to 1024 tokens, 8 trainer ranks, ZeRO-3, bf16, micro-batch 4, gradient checkpointing) the script
prints, per model and per shipped recipe,

* every boundary a step crosses (driver <-> rollout workers, driver <-> trainer ranks, rank <-> rank,
  trainer rank 0 -> rollout workers) with its bytes, and
* a trainer rank's GPU memory by component and the peak over the phases of a step.

The numbers follow the code, not a copy of it: the layout is a real ``Config`` (``load_config`` of a
shipped recipe plus dotted overrides, so chunk sizes, group size, bucket size come from the code's
defaults), the driver -> rank payload is built with ``rl.batch.build_experience`` / ``rollout_batch``
and ``shard_groups``, the statistics a rank keeps come from ``GRPOObjective.stat_requests()``, the
parameter list from a transformers ``Qwen2ForCausalLM`` on the meta device, the weight-sync buckets
from ``rollout.weight_sync.packing.bucket_named_tensors``, and DeepSpeed's buffer sizes from its own
config defaults. Each row says whether it is *exact* (bytes of tensors whose shapes the code fixes)
or an *estimate* (activations and transient scratch: formulas from the code, whose coefficients were
measured on CPU with saved-tensor hooks and torch.profiler memory events; see docs/scaling.md).

    python benchmarks/scaling_table.py                          # 1.5b 7b 32b x grpo, d3s, thr, tw
    python benchmarks/scaling_table.py --models 7b trainer.zero_stage=2 trainer.logprob_chunk=1024
    python benchmarks/scaling_table.py --recipes grpo_thr_exploit trainer.offload_optimizer=true

Writes benchmarks/results/scaling_table.json (with a "summary") and scaling_table.png (a stacked
bar of each rank's peak by component), and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rl.config import Config, load_config  # noqa: E402

GIB = 2**30


@dataclass(frozen=True)
class Shape:
    """A Qwen2.5 model's shape (config.json of the released checkpoints)."""

    label: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# The released checkpoints pad the vocabulary to 151936 (0.5B-3B) and 152064 (7B and up).
SHAPES = {
    "1.5b": Shape("Qwen2.5-1.5B", 1536, 28, 12, 2, 8960, 151936, tied=True),
    "7b": Shape("Qwen2.5-7B", 3584, 28, 28, 4, 18944, 152064, tied=False),
    "32b": Shape("Qwen2.5-32B", 5120, 64, 40, 8, 27648, 152064, tied=False),
}

RECIPES = ("grpo", "grpo_d3s", "grpo_thr_exploit", "grpo_tw")

# The layout the tables describe; command-line overrides come after these and win.
LAYOUT = [
    "trainer.prompts_per_step=64", "rollout.n=8", "rollout.max_tokens=4096", "data.max_prompt_tokens=1024",
    "rollout.max_model_len=5120", "trainer.num_ranks=8", "trainer.zero_stage=3", "trainer.micro_batch_size=4",
    "model.gradient_checkpointing=true", "model.dtype=bfloat16",
]

# Measured on CPU (torch 2.13, transformers 5.19, sdpa): backward over a checkpointed decoder layer
# peaks at 1.19-1.23 x the layer's saved activations (its recompute plus gradient temporaries); without
# checkpointing the backward adds 0.18-0.23 x one layer on top of everything saved. Rounded up.
RECOMPUTE_FACTOR = 1.25
BACKWARD_TEMP_FACTOR = 0.25

# DeepSpeed ZeRO defaults (the engine's _ds_config sets none of them); read from DeepSpeed when present.
DS_DEFAULTS = {"reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8, "sub_group_size": 1e9,
               "max_live_parameters": 1e9}


def deepspeed_defaults() -> dict[str, float]:
    try:
        import logging

        logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

        z = DeepSpeedZeroConfig()
        return {k: float(getattr(z, k)) for k in DS_DEFAULTS}
    except Exception:  # noqa: BLE001 - the table still stands on the documented defaults
        return dict(DS_DEFAULTS)


# ----------------------------------------------------------------------------------------------- model
def meta_model(shape: Shape):
    """The transformers model on the meta device: exact parameter names, order, shapes, tying."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                      num_key_value_heads=shape.kv_heads, intermediate_size=shape.intermediate,
                      vocab_size=shape.vocab, tie_word_embeddings=shape.tied)
    with torch.device("meta"):
        return Qwen2ForCausalLM(cfg)


def param_facts(shape: Shape) -> dict:
    model = meta_model(shape)
    named = list(model.named_parameters())  # tied: lm_head.weight is model.embed_tokens.weight, listed once
    return {"named": [(n, tuple(p.shape)) for n, p in named], "total": sum(p.numel() for _, p in named)}


def sync_buckets(shape: Shape, facts: dict, bucket_bytes: int, dtype: torch.dtype) -> dict:
    """Bytes rank 0 sends each rollout worker per sync, and its buckets (the code's greedy rule)."""
    from rollout.weight_sync.packing import bucket_named_tensors, tensor_nbytes
    from rollout.weight_sync.prepare import validate_named_tensors

    meta = [(n, torch.empty(s, device="meta")) for n, s in facts["named"]]
    sent = validate_named_tensors(meta, tied_embeddings=shape.tied)
    sizes = [sum(tensor_nbytes(t, dtype) for _, t in b) for b in bucket_named_tensors(sent, bucket_bytes, dtype)]
    return {"bytes": sum(sizes), "buckets": len(sizes), "largest_bucket": max(sizes), "tensors": len(sent)}


# ----------------------------------------------------------------------------------------------- layout
@dataclass
class Layout:
    cfg: Config
    recipe: str
    prompts: int  # groups per step
    group: int  # G
    rows: int  # N
    prompt_len: int  # P (prompts are left-padded to the batch's longest)
    completion_len: int  # T (completions are right-padded to the batch's longest)
    ranks: int
    rows_per_rank: int  # the busiest rank (whole groups, near-equal counts)


def layout_for(recipe: str, overrides: list[str]) -> Layout:
    path = ROOT / "recipes" / f"{recipe}.yaml"
    cfg = load_config(path, LAYOUT + list(overrides))
    if cfg.model.lora.rank > 0:
        raise SystemExit("scaling_table: LoRA (model.lora.rank > 0) is not modelled")
    if cfg.model.dtype != "bfloat16":
        raise SystemExit("scaling_table: the activation model is for model.dtype=bfloat16")
    t = cfg.trainer
    groups_per_rank = math.ceil(t.prompts_per_step / t.num_ranks)
    return Layout(cfg, recipe, t.prompts_per_step, cfg.rollout.n, t.prompts_per_step * cfg.rollout.n,
                  cfg.data.max_prompt_tokens, cfg.rollout.max_tokens, t.num_ranks, groups_per_rank * cfg.rollout.n)


def objective(cfg: Config):
    from rl.algorithms import load_all
    from rl.objectives.grpo import GRPOObjective

    load_all()
    return GRPOObjective(cfg)


# ----------------------------------------------------------------------------------------------- boundaries
def rank_payloads(prompts: int, group: int, prompt_len: int, completion_len: int, ranks: int) -> list[int]:
    """Tensor bytes the driver sends each trainer rank for one step (every row at full length),
    built with the code's own batch builder and sharding."""
    from rl.batch import build_experience, rollout_batch
    from rl.trainer_group import _take, shard_groups
    from rollout.types import Completion

    comp = Completion(0, [0] * completion_len, [0.0] * completion_len, "", "length")
    exp = build_experience([[1] * prompt_len] * prompts, [[comp] * group] * prompts, [0.0] * (prompts * group),
                           pad_id=0, correct=[False] * (prompts * group))
    batch = rollout_batch(exp)
    return [sum(v.nbytes for v in _take(batch, idx).values()) for idx in shard_groups(batch["group_id"], ranks)]


def pickled_generation(prompts: int, group: int, prompt_len: int, completion_len: int, vocab: int,
                       chars_per_token: float = 4.0) -> tuple[int, int]:
    """(pickled prompt ids sent to the workers, pickled completions returned), as Ray pickles them.
    Ids are drawn uniformly from the vocabulary (pickle spends 2-5 bytes per int by size); the text
    is ``chars_per_token`` ASCII characters per token (an estimate: BPE text runs ~3-4)."""
    from rollout.types import Completion, SamplingSpec

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (prompt_len,), generator=g).tolist()
    sent = len(pickle.dumps([ids], protocol=5)) * prompts + len(pickle.dumps(SamplingSpec(), protocol=5))
    toks = torch.randint(0, vocab, (completion_len,), generator=g).tolist()
    lps = (-torch.rand(completion_len, generator=g, dtype=torch.float64)).tolist()
    # fresh objects per completion: pickle writes a shared list or string once (its memo), Ray's batch has none
    grp = [Completion(0, list(toks), list(lps), "x" * int(chars_per_token * completion_len) + str(i), "stop")
           for i in range(group)]
    return sent, len(pickle.dumps([grp], protocol=5)) * prompts


def metric_record_bytes(keys: int = 48) -> int:
    """A rank's metric record (rl/metrics.py RankMetrics.export) with ``keys`` entries (estimate of the count)."""
    from rl.metrics import RankMetrics

    m = RankMetrics()
    for i in range(keys):
        m.mean(f"category/metric_name_{i:02d}", 0.123456789, 1234.0)
    return len(pickle.dumps(m.export(), protocol=5))


def inspect_maps(obj) -> list[str]:
    """The [n, T] float maps ``TrainerRank._inspect`` returns per rank with logging.save_batches."""
    maps = ["advantages", "token_mask", "token_weight"]
    if any(r.key == "entropy" for r in obj.stat_requests()) and obj.needs_old_pass():
        maps.append("entropy")
    extras = {"d3s": "d3s_score", "thr": "thr_score", "tw": "tw_weight"}
    return maps + [extras[m.name] for m in obj.chain if m.name in extras]


def micro_counts(lay: Layout, obj) -> dict[str, int]:
    """Micro-batches per step on the busiest rank (every rank runs as many: rl/trainer_rank.py _plan)."""
    a, mbs, n = lay.cfg.algorithm, lay.cfg.trainer.micro_batch_size, lay.rows_per_rank
    return {"old_pass": math.ceil(n / mbs) if obj.needs_old_pass() else 0,
            "update": a.epochs * a.mini_batches * math.ceil(math.ceil(n / a.mini_batches) / mbs),
            "optimizer_steps": a.epochs * a.mini_batches}


def zero_traffic(lay: Layout, shape: Shape, psi: int, obj, reference: bool) -> dict:
    """Bytes one rank receives per step in DeepSpeed's collectives (ring: (N-1)/N of each buffer).
    An estimate of DeepSpeed's algorithm, not a measurement."""
    t, cfg = lay.cfg.trainer, lay.cfg
    ring = (t.num_ranks - 1) / t.num_ranks
    w = 2 * psi
    m = micro_counts(lay, obj)
    if t.zero_stage == 3:  # parameters gathered for every forward/backward, grads reduce-scattered per micro-batch
        per_update = 3 if cfg.model.gradient_checkpointing else 2  # forward, (recompute,) backward
        gathered = w * (m["old_pass"] * (1 + reference) + m["update"] * per_update)
        gathered += 2 * shape.vocab * shape.hidden * ("policy" in obj.needs)  # the credit chain's head gather
        reduced = w * m["update"]
    elif t.zero_stage == 2:
        gathered, reduced = w * m["optimizer_steps"], w * m["update"]
    elif t.zero_stage == 1:
        gathered, reduced = w * m["optimizer_steps"], w * m["optimizer_steps"]
    else:  # all-reduce of the whole gradient at each optimizer step (~2x the buffer in a ring)
        gathered, reduced = 0, 2 * w * m["optimizer_steps"]
    return {"params_gathered": int(ring * gathered), "grads_reduced": int(ring * reduced), "micro_batches": m}


def boundaries(lay: Layout, shape: Shape, psi: int, obj, payloads: list[int], gen: tuple[int, int],
               sync: dict, reference: bool) -> list[dict]:
    cfg, n, T = lay.cfg, lay.rows_per_rank, lay.completion_len
    rows = []

    def row(boundary, what, nbytes, kind, note):
        rows.append({"boundary": boundary, "what": what, "bytes": int(nbytes), "kind": kind, "note": note})

    row("driver -> rollout workers", "prompt token ids (+ SamplingSpec)", gen[0], "estimate",
        f"{lay.prompts} prompts x {lay.prompt_len} ids, pickled by Ray; not repeated per sample")
    row("rollout workers -> driver", "completions: token ids, sampler log-probs, text, finish reason", gen[1],
        "estimate", f"{lay.rows} x {T} tokens pickled (ids + float64 log-probs + ~4 text bytes per token)")
    row("driver -> each trainer rank", "its whole groups: ids, masks, sampler log-probs, rewards, labels",
        max(payloads), "exact", f"busiest rank ({n} rows); all ranks together {fmt(sum(payloads))}")
    row("trainer rank -> driver", "metric record (scalars)", metric_record_bytes(), "estimate",
        "about 48 keys of (rule, value, weight), per rank")
    maps = inspect_maps(obj)
    if cfg.logging.save_batches:
        row("trainer rank -> driver", f"per-token credit maps [{n},{T}] f32 (logging.save_batches)",
            len(maps) * 4 * n * T, "exact", "advantages, token_mask, token_weight (+ D3S: entropy; + the module's "
            "score or weight), per rank; on by default; off: nothing")
    row("rank <-> rank", "loss normalisers, micro-batch counts (all_reduce)", 8 * 4 * (1 + micro_counts(lay, obj)
        ["optimizer_steps"]), "estimate", "a few float64 scalars per optimizer step (D3S adds its counts)")
    if any(m.name == "d3s" for m in obj.chain):
        r = lay.ranks
        row("rank <-> rank", "D3S: kept rows' advantages + valid tokens' \\|A\\|*H (all_gather, f32)",
            4 * r * n * (1 + T), "exact", "received per rank, padded to the busiest rank; upper bound (K < 1)")
    z = zero_traffic(lay, shape, psi, obj, reference)
    m, stage = z["micro_batches"], cfg.trainer.zero_stage
    how = {3: (f"received per rank; the whole model once per no-grad old-pass micro-batch "
               f"({math.ceil(n / cfg.trainer.micro_batch_size)} when the recipe needs the pass; one-update GRPO has "
               f"none) and 2-3 times per update micro-batch ({m['update']}: forward, recompute, backward)",
               "received per rank; reduce-scattered every update micro-batch"),
           2: ("received per rank; updated parameters all-gathered after each optimizer step",
               "received per rank; reduce-scattered every update micro-batch"),
           1: ("received per rank; updated parameters all-gathered after each optimizer step",
               "received per rank; reduced once per optimizer step"),
           0: ("none: every rank holds the whole model", "received per rank; all-reduced once per optimizer step")}
    row("rank <-> rank", f"DeepSpeed ZeRO-{stage}: parameters gathered (bf16)", z["params_gathered"], "estimate",
        how[stage][0])
    row("rank <-> rank", f"DeepSpeed ZeRO-{stage}: gradients reduced (bf16)", z["grads_reduced"], "estimate",
        how[stage][1])
    row("trainer rank 0 -> each rollout worker", "weights (bf16, engine dtype)", sync["bytes"], "exact",
        f"{sync['buckets']} buckets of <= {cfg.rollout.sync_bucket_mb} MiB (largest {fmt(sync['largest_bucket'])}); "
        f"x rollout.num_workers={cfg.rollout.num_workers}")
    return rows


# ----------------------------------------------------------------------------------------------- memory
def layer_activations(shape: Shape, mb: int, length: int) -> int:
    """Bytes one Qwen2 decoder layer saves for backward (bf16, sdpa with a padding mask), exact for
    transformers 5.19 (checked with saved-tensor hooks in tests/test_scaling_table.py):
    two RMSNorms (fp32 input 4 + normed 2 + output 2 bytes/elem, rsqrt [S,1] fp32) = 16 S d + 8 S;
    q after RoPE, k and v repeated to all heads (a padding mask disables SDPA's native GQA), attention
    output: 8 S d; MLP gate, up, silu(gate), product: 8 S I; SDPA's float bias [mb,1,L,L] bf16 and
    its logsumexp [mb,h,L] fp32."""
    s = mb * length
    return (24 * shape.hidden + 8 * shape.intermediate + 8) * s + 2 * mb * length**2 + 4 * mb * shape.heads * length


def thr_scratch(cfg_thr, group: int, completion_len: int, shape: Shape) -> int:
    """Worst group of rl/credit/thr.py: M = G*T valid tokens, the more expensive of its two forms."""
    d, m = shape.hidden, group * completion_len
    cols = min(cfg_thr.vocab_chunk, shape.vocab if cfg_thr.vocab == "full" else min(shape.vocab, m))
    tc = min(cfg_thr.token_chunk, m)
    group_hidden = 4 * m * d  # exp.hidden[tok_rows, t_idx]: a copy
    # M+_C and its update (fp32), head rows (bf16 copy + fp32), logits/probs tiles, hidden rows
    factorised = 8 * cols * d + 6 * cols * d + 12 * tc * cols + 8 * tc * d
    # token_hidden_scores(method="auto") takes the Gram form while P*M/d < M + P: its scratch grows
    # with P, so the worst is the largest such P; five [P, M] fp32 matrices plus temporaries
    # (measured 28-29 P*M bytes) and a [M, d] head-row copy
    p = m if m <= d else min(m, math.ceil(m * d / (m - d)) - 1)
    gram = max(29 * p * m, 25 * p * m + 6 * m * d)
    return group_hidden + max(factorised, gram)


def tw_scratch(cfg_tw, group: int, completion_len: int, shape: Shape) -> int:
    tc, cols = cfg_tw.token_chunk, min(cfg_tw.vocab_chunk, shape.vocab)
    # exp.hidden[rows] copy + ~4 live [G, tile, chunk] fp32 tiles (measured) + the fp32 head chunk
    return 4 * group * completion_len * shape.hidden + 16 * group * tc * cols + 4 * cols * shape.hidden


def d3s_scratch(lay: Layout) -> int:
    n, t, r = lay.rows_per_rank, lay.completion_len, lay.ranks
    # score and masks [n,T], every rank's scores gathered (padded) and concatenated, top-K values + indices
    return 12 * n * t + 4 * r * n * t + 4 * lay.rows * t + 12 * lay.rows * t


def rank_memory(lay: Layout, shape: Shape, facts: dict, ds: dict, obj, payload: int, sync: dict,
                reference: bool) -> dict:
    cfg, t = lay.cfg, lay.cfg.trainer
    z, ranks, psi = t.zero_stage, t.num_ranks, facts["total"]
    d, v = shape.hidden, shape.vocab
    n, p_len, t_len = lay.rows_per_rank, lay.prompt_len, lay.completion_len
    mb = min(t.micro_batch_size, n)
    length = p_len + t_len
    s = mb * length
    chunk = min(t.logprob_chunk, mb * t_len)
    part = psi / ranks if z >= 1 else psi  # what one rank's optimizer owns
    off_opt, off_par = t.offload_optimizer, t.offload_params and z == 3
    comp: dict[str, dict] = {}
    host: dict[str, dict] = {}

    def add(table, name, nbytes, kind, note):
        table[name] = {"bytes": int(nbytes), "kind": kind, "note": note}

    # --- state that lives across steps
    w = 2 * psi / ranks if z == 3 else 2 * psi
    add(host if off_par else comp, "weights", w, "exact",
        "bf16 parameters" + (f", ZeRO-3 partition 1/{ranks}" if z == 3 else " (whole)"))
    if z == 3:
        live = 2 * min(psi, ds["max_live_parameters"]) + 2 * v * d
        add(comp, "weights gathered", live, "estimate",
            "ZeRO-3 working set: <= stage3_max_live_parameters (1e9) bf16 + the output head gathered for the loss")
    if reference:
        add(comp, "reference model", 2 * psi / ranks if z == 3 else 2 * psi, "exact", "frozen bf16 copy")
    grads = 2 * psi / ranks if z >= 2 else 2 * psi
    add(host if off_opt and z >= 2 else comp, "gradients", grads, "exact",
        "bf16 " + ("partition" if z >= 2 else "whole (param.grad, reduced at the boundary)"))
    add(comp, "reduce bucket", 2 * ds["reduce_bucket_size"], "exact", "DeepSpeed reduce/all-reduce bucket, 5e8 bf16")
    add(host if off_opt else comp, "optimizer state", 12 * part, "exact",
        "fp32 master + AdamW exp_avg, exp_avg_sq" + (f", 1/{ranks} each" if z >= 1 else " (whole)"))
    step = 4 * psi if z == 0 else 6 * (min(part, ds["sub_group_size"]) if z == 3 else part)
    add(host if off_opt else comp, "optimizer step transient", step, "exact",
        "fp32 copy of the gradients the optimizer steps on (ZeRO-3: per sub-group of <= 1e9)")
    # --- this step's batch and old-policy statistics (rl/objectives/grpo.py, rl/engine.py stats)
    add(comp, "batch tensors", payload + 3 * 4 * n * t_len, "exact",
        "the rank's rollout tensors + advantages, token_mask, token_weight [n,T] f32")
    reqs = obj.stat_requests() if obj.needs_old_pass() else []
    stat_bytes = {r.key: 4 * n * t_len * (d if r.output == "hidden" else 1) for r in reqs}
    add(comp, "old-pass statistics", sum(stat_bytes.values()), "exact",
        "kept for the whole step: " + (", ".join(f"{k} {fmt(b)}" for k, b in stat_bytes.items()) or "none")
        + (" (hidden [n,T,d] is fp32)" if "hidden" in stat_bytes else ""))
    add(comp, "old-pass statistics copy", max(stat_bytes.values(), default=0), "exact",
        "transient second copy of the largest (torch.cat of micro-batches, full-size scatter, Experience.select)")
    entropy_in_pass = any(r.output == "entropy" for r in reqs)
    head_in = 2 * s * d + 2 * mb * t_len * d  # the engine's last hidden state + the logprob function's copy
    nograd = max((6 * shape.intermediate + 8 * d) * s + 3 * mb * length**2,
                 head_in + (12 if entropy_in_pass else 10) * chunk * v)
    add(comp, "old-pass forward working set", nograd if reqs else 0, "estimate",
        "no-grad forward of one micro-batch: MLP intermediates + masks, or the log-prob chunk")
    # --- the update: one micro-batch's forward and backward
    a_layer = layer_activations(shape, mb, length)
    base = 6 * s * d + 4 * s + head_in + 8 * s + mb * length**2  # final norm, head input, ids, bool mask
    ckpt = cfg.model.gradient_checkpointing
    saved = (shape.layers * 2 * s * d if ckpt else shape.layers * a_layer) + base
    add(comp, "activations saved", saved, "estimate",
        (f"{shape.layers} layer inputs (checkpointing)" if ckpt else f"{shape.layers} layers x {fmt(a_layer)}")
        + f" + final norm/head input; micro-batch {mb} x {length} tokens")
    add(comp, "activations working", (RECOMPUTE_FACTOR if ckpt else BACKWARD_TEMP_FACTOR) * a_layer, "estimate",
        ("one layer recomputed + its backward" if ckpt else "backward temporaries") + f" (layer {fmt(a_layer)})")
    add(comp, "log-prob chunk forward", (12 if obj.train_entropy else 10) * chunk * v, "exact",
        f"{chunk} tokens x V: bf16 logits + fp32 cast + /temperature copy (rl/algorithms/logprobs.py _logits)")
    add(comp, "log-prob chunk backward", 4 * v * d + max(10 * chunk * v, 4 * chunk * v + 4 * v * d) + 2 * mb * t_len * d,
        "exact", "fp32 [V,d] grad accumulator + the recomputed chunk (or its fp32 gz.T @ h product)")
    # --- the credit chain (on the rank, after the old-policy pass)
    scratch = {"d3s": lambda m: d3s_scratch(lay),
               "thr": lambda m: thr_scratch(m.cfg, lay.group, t_len, shape),
               "tw": lambda m: tw_scratch(m.cfg, lay.group, t_len, shape)}
    per_module = {m.name: scratch[m.name](m) for m in obj.chain if m.name in scratch}
    add(comp, "credit scratch", max(per_module.values(), default=0), "estimate",
        ", ".join(f"{k} {fmt(b)}" for k, b in per_module.items()) or "no credit module")
    add(comp, "weight-sync buckets", (2 if z == 3 else 1) * sync["largest_bucket"], "exact",
        "rank 0 after the step: the gathered bucket + its packed copy (a tensor larger than a bucket goes alone)")

    def b(name):
        return comp.get(name, {"bytes": 0})["bytes"]

    static = ["weights", "reference model", "optimizer state", "reduce bucket", "batch tensors"]
    static += ["gradients"] if z >= 2 else []  # ZeRO-2/3 keep their gradient partition allocated
    grads_now = [] if z >= 2 else ["gradients"]  # ZeRO-0/1: param.grad exists from backward to the step
    gathered = ["weights gathered"] if z == 3 else []
    stats = ["old-pass statistics"]

    def phase(names, *choices):
        out = {k: b(k) for k in names if b(k)}
        for group in choices:  # transients that do not coincide: only the largest counts
            top = max(group, key=b)
            if b(top):
                out[top] = b(top)
        return out

    phases = {
        "update": phase(static + grads_now + gathered + stats + ["activations saved"],
                        ["activations working", "log-prob chunk forward", "log-prob chunk backward"]),
        "optimizer step": phase(static + grads_now + stats + ["optimizer step transient"]),
        "weight sync (rank 0)": phase(static + ["weight-sync buckets"]),
    }
    if reqs:
        phases["old-policy pass"] = phase(static + gathered + stats,
                                          ["old-pass forward working set", "old-pass statistics copy"])
    if obj.chain:
        phases["credit chain"] = phase(static + gathered + stats + ["credit scratch"])
    totals = {k: sum(v.values()) for k, v in phases.items()}
    peak = max(totals, key=totals.get)
    add(host, "model load at start-up", 4 * psi + (2 * psi if reference else 0), "exact",
        "from_pretrained(dtype=float32) on every rank before DeepSpeed casts and moves it (transient)")
    start_gpu = 2 * psi if z == 3 else 0
    return {"components": comp, "phases": phases, "phase_totals": totals, "peak_phase": peak,
            "peak": totals[peak], "host": host, "startup_gpu": start_gpu,
            "rows_per_rank": n, "micro_batch": mb, "tokens_per_micro_batch": s}


# ----------------------------------------------------------------------------------------------- output
def fmt(nbytes: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}" if nbytes < 100 * size else f"{nbytes / size:.0f} {unit}"
    return f"{int(nbytes)} B"


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


COMPONENT_ORDER = ["weights", "weights gathered", "reference model", "gradients", "reduce bucket", "optimizer state",
                   "optimizer step transient", "batch tensors", "old-pass statistics", "old-pass statistics copy",
                   "old-pass forward working set", "activations saved", "activations working",
                   "log-prob chunk forward", "log-prob chunk backward", "credit scratch", "weight-sync buckets"]


def model_tables(key: str, res: dict) -> str:
    shape, recipes = res["shape"], list(res["memory"])
    out = [f"### {shape['label']}: d={shape['hidden']}, {shape['layers']} layers, heads {shape['heads']}/"
           f"{shape['kv_heads']}, I={shape['intermediate']}, V={shape['vocab']}, "
           f"{'tied' if shape['tied'] else 'untied'} head; {res['params']:,} parameters "
           f"({fmt(2 * res['params'])} in bf16)", ""]
    keys: dict[tuple, dict] = {}  # union over recipes, in first-seen order (D3S adds its gathers)
    for rec in recipes:
        for r in res["boundaries"][rec]:
            keys.setdefault((r["boundary"], r["what"]), r)
    brows = []
    for (bnd, what), r in keys.items():
        cells = [next((fmt(x["bytes"]) for x in res["boundaries"][rec] if (x["boundary"], x["what"]) == (bnd, what)),
                      "-") for rec in recipes]
        brows.append([bnd, what] + cells + [r["kind"], r["note"]])
    out += ["What crosses each boundary per step:", "",
            markdown(["boundary", "what"] + recipes + ["kind", "how"], brows), ""]
    rows = []
    for name in COMPONENT_ORDER:
        cells = [res["memory"][r]["components"].get(name) for r in recipes]
        if all(c is None or c["bytes"] == 0 for c in cells):
            continue
        kind = next(c["kind"] for c in cells if c is not None)
        rows.append([name] + [fmt(c["bytes"]) if c and c["bytes"] else "-" for c in cells] + [kind])
    for ph in ("old-policy pass", "credit chain", "update", "optimizer step", "weight sync (rank 0)"):
        rows.append([f"= {ph}"] + [fmt(res["memory"][r]["phase_totals"][ph]) if ph in res["memory"][r]["phase_totals"]
                                   else "-" for r in recipes] + ["sum"])
    rows.append(["**peak (phase)**"] + [f"**{fmt(res['memory'][r]['peak'])}** ({res['memory'][r]['peak_phase']})"
                                        for r in recipes] + [""])
    host = res["memory"][recipes[0]]["host"]
    for name, h in host.items():
        rows.append([f"host: {name}"] + [fmt(res["memory"][r]["host"][name]["bytes"]) for r in recipes] + [h["kind"]])
    if res["memory"][recipes[0]]["startup_gpu"]:
        rows.append(["GPU at start-up (before ZeRO-3 partitions)"] +
                    [fmt(res["memory"][r]["startup_gpu"]) for r in recipes] + ["exact"])
    out += ["Per trainer rank (GPU unless marked host):", "", markdown(["component"] + recipes + ["kind"], rows), ""]
    return "\n".join(out)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, stacks = [], []
    for key, res in results.items():
        for rec, mem in res["memory"].items():
            labels.append(f"{key}\n{rec.replace('grpo_', '')}")
            stacks.append(mem["phases"][mem["peak_phase"]])
    names = [c for c in COMPONENT_ORDER if any(c in s for s in stacks)]
    fig, ax = plt.subplots(figsize=(max(8, 0.9 * len(labels)), 5.5))
    bottom = [0.0] * len(labels)
    cmap = plt.get_cmap("tab20")
    for i, name in enumerate(names):
        vals = [s.get(name, 0) / GIB for s in stacks]
        ax.bar(range(len(labels)), vals, bottom=bottom, label=name, color=cmap(i % 20))
        bottom = [b + v for b, v in zip(bottom, vals)]
    for x, top in enumerate(bottom):
        ax.text(x, top, f"{top:.0f}", ha="center", va="bottom", fontsize=8)
    for cap, name, style in ((79.6, "80 GB GPU (~79.6 GiB)", "--"), (139.0, "141 GB GPU (~139 GiB)", ":")):
        ax.axhline(cap, color="grey", linestyle=style, linewidth=0.8)
        ax.text(len(labels) - 0.5, cap, name, fontsize=7, va="bottom", ha="right", color="grey")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("GiB per trainer rank at its peak phase")
    ax.set_title("Trainer rank peak memory by component (computed, not measured)", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(models: list[str], recipes: list[str], overrides: list[str]) -> dict:
    ds = deepspeed_defaults()
    lays = {r: layout_for(r, overrides) for r in recipes}
    lay0 = lays[recipes[0]]
    payloads = rank_payloads(lay0.prompts, lay0.group, lay0.prompt_len, lay0.completion_len, lay0.ranks)
    results = {}
    for key in models:
        shape = SHAPES[key]
        facts = param_facts(shape)
        gen = pickled_generation(lay0.prompts, lay0.group, lay0.prompt_len, lay0.completion_len, shape.vocab)
        res = {"shape": {**shape.__dict__}, "params": facts["total"], "boundaries": {}, "memory": {}}
        for rec, lay in lays.items():
            a = lay.cfg.algorithm
            reference = a.kl.coef > 0 or (a.rmt.enable and a.rmt.entropy_model == "reference")
            sync = sync_buckets(shape, facts, lay.cfg.rollout.sync_bucket_mb * 2**20, torch.bfloat16)
            obj = objective(lay.cfg)
            res["sync"] = sync
            res["boundaries"][rec] = boundaries(lay, shape, facts["total"], obj, payloads, gen, sync, reference)
            res["memory"][rec] = rank_memory(lay, shape, facts, ds, obj, max(payloads), sync, reference)
        results[key] = res
    return results


def summary(results: dict, lay: Layout, command: str) -> dict:
    out = {"command": command, "layout": describe_layout(lay), "driver_sent_bytes": {}, "driver_received_bytes": {},
           "model_bf16_bytes": {}, "weights_to_each_rollout_worker_bytes": {}, "peak_gib": {}, "peak_phase": {},
           "zero_params_gathered_per_rank_gib": {}}
    for key, res in results.items():
        rows = next(iter(res["boundaries"].values()))
        sent = sum(r["bytes"] for r in rows if r["boundary"] == "driver -> rollout workers")
        sent += sum(r["bytes"] * lay.ranks for r in rows if r["boundary"] == "driver -> each trainer rank")
        out["driver_sent_bytes"][key] = sent
        out["driver_received_bytes"][key] = {
            rec: sum(r["bytes"] * (lay.ranks if r["boundary"] == "trainer rank -> driver" else 1) for r in rr
                     if r["boundary"] in ("rollout workers -> driver", "trainer rank -> driver"))
            for rec, rr in res["boundaries"].items()}
        out["model_bf16_bytes"][key] = 2 * res["params"]
        out["weights_to_each_rollout_worker_bytes"][key] = res["sync"]["bytes"]
        out["peak_gib"][key] = {r: round(m["peak"] / GIB, 1) for r, m in res["memory"].items()}
        out["peak_phase"][key] = {r: m["peak_phase"] for r, m in res["memory"].items()}
        gathered = next(r["bytes"] for r in rows if "parameters gathered" in r["what"])
        out["zero_params_gathered_per_rank_gib"][key] = round(gathered / GIB, 1)
    return out


def describe_layout(lay: Layout) -> dict:
    t, c = lay.cfg.trainer, lay.cfg
    return {"completions_N": lay.rows, "prompts": lay.prompts, "group_G": lay.group, "prompt_tokens_P": lay.prompt_len,
            "completion_tokens_T": lay.completion_len, "ranks": t.num_ranks, "rows_per_rank": lay.rows_per_rank,
            "zero_stage": t.zero_stage, "offload_optimizer": t.offload_optimizer, "offload_params": t.offload_params,
            "dtype": c.model.dtype, "micro_batch_size": t.micro_batch_size,
            "gradient_checkpointing": c.model.gradient_checkpointing, "logprob_chunk": t.logprob_chunk,
            "thr_chunks": [c.algorithm.thr.vocab_chunk, c.algorithm.thr.token_chunk],
            "tw_chunks": [c.algorithm.tw.vocab_chunk, c.algorithm.tw.token_chunk],
            "sync_bucket_mb": c.rollout.sync_bucket_mb, "save_batches": c.logging.save_batches,
            "epochs": c.algorithm.epochs, "mini_batches": c.algorithm.mini_batches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(SHAPES), help=f"of {list(SHAPES)}")
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), help="shipped recipe names (recipes/NAME.yaml)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON and PNG")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("overrides", nargs="*", help="dotted config overrides applied after the layout "
                    f"({' '.join(LAYOUT)})")
    args = ap.parse_args()
    for name in ("models", "recipes"):  # "--models 7b key=value" : nargs="+" also took the overrides
        vals = getattr(args, name)
        args.overrides = [v for v in vals if "=" in v] + args.overrides
        setattr(args, name, [v for v in vals if "=" not in v])
    if unknown := [m for m in args.models if m not in SHAPES]:
        ap.error(f"--models: {unknown} not in {list(SHAPES)}")
    command = "python benchmarks/scaling_table.py" + "".join(f" {a}" for a in sys.argv[1:])
    results = run(args.models, args.recipes, args.overrides)
    lay = layout_for(args.recipes[0], args.overrides)
    head = describe_layout(lay)
    print(f"# {command}\n# layout: " + ", ".join(f"{k}={v}" for k, v in head.items()) + "\n")
    for key, res in results.items():
        print(model_tables(key, res))
    summ = summary(results, lay, command)
    print("summary:", json.dumps({k: summ[k] for k in ("peak_gib", "zero_params_gathered_per_rank_gib")}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"description": __doc__.split("\n\n")[0], "summary": summ, "layout": head, "overrides": LAYOUT + args.overrides,
           "deepspeed_defaults": deepspeed_defaults(), "results": results}
    (out / "scaling_table.json").write_text(json.dumps(doc, indent=1))
    if not args.no_plot:
        plot(results, out / "scaling_table.png")
    print(f"wrote {out / 'scaling_table.json'}" + ("" if args.no_plot else f" and {out / 'scaling_table.png'}"))


if __name__ == "__main__":
    main()
