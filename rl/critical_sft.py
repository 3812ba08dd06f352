"""cDPO's positive and negative models (arXiv 2411.19943, "Critical Tokens Matter"; specs/dpo_methods.md
§3.1 step 3): LoRA SFT (peft) of the base model on the responses of one kind, loss on the response tokens
only (the official ``DataCollatorForCompletionOnlyLM``), merged into a plain HF folder. Used by
``tokencredit critical-tokens`` (rl/critical_tokens.py), whose docstring tables the official settings
against the defaults here."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from rl.fields import FieldError, check_fields
from rl.fields import help_field as _h
from rl.standalone_model import DTYPES, base_model, output_head, torch_device

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    """LoRA SFT of the positive / negative models (cDPO ``train_sft.py``; spec §3.1 step 3)."""

    lora_rank: int = _h(8, "LoRA rank (official 8)", ge=1)
    lora_alpha: int = _h(16, "LoRA alpha (official 16)", ge=1)
    lora_dropout: float = _h(0.1, "LoRA dropout (official 0.1)", ge=0, lt=1)
    target_modules: list[str] = _h(["gate_proj", "up_proj", "down_proj"], "modules with adapters (official: MLP)",
                                   min_len=1)
    lr: float = _h(3e-4, "peak learning rate (official 3e-4)", gt=0)
    epochs: int = _h(1, "passes over the SFT set (official 1)", ge=1)
    batch_size: int = _h(6, "examples per micro-batch (official 6 per device)", ge=1)
    grad_accum: int = _h(1, "micro-batches per optimizer step (official 1; 70B: 3)", ge=1)
    lr_schedule: Literal["cosine", "linear", "constant", "constant_with_warmup"] = _h(
        "cosine", "learning-rate schedule after warmup (transformers' names; official cosine)")
    warmup_steps: int = _h(100, "linear warmup steps (official 100) ...", ge=0)
    max_warmup_fraction: float = _h(0.1, "... at most this fraction of all steps (small sets; 1.0 = official)",
                                    ge=0, le=1)
    weight_decay: float = _h(0.0, "AdamW weight decay (transformers' default, as the official run)", ge=0)
    grad_clip: float = _h(1.0, "gradient-norm clip (transformers' default; 0 = off)", ge=0)
    max_length: int = _h(1024, "prompt + response tokens at most; longer examples keep their first tokens "
                               "(official max_seq 1024)", ge=1)
    holdout: int = _h(0, "held-out examples; the adapter with the lowest held-out loss is kept (official 300 "
                         "with load_best_model_at_end; 0 = off)", ge=0)
    eval_every: int = _h(0, "optimizer steps between held-out evaluations (0 = at the end of each epoch)", ge=0)
    dtype: Literal["float32", "bfloat16"] = _h("float32", "autocast dtype of the forward (official bf16; master "
                                               "weights and the merged model are float32)")
    seed: int = _h(0, "seed of the adapter init, dropout and the example order", ge=0)

    def check(self, prefix: str) -> list[str]:
        """The fields' declared valid values (rl/fields.py); [] or the first problem."""
        try:
            check_fields(self, prefix)
        except FieldError as e:
            return [str(e)]
        return []


def sft_examples(path: str | Path, tokenizer, max_length: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) of each prompt/completion row, tokenized the way ``load_pairs``
    tokenizes a text pair (prompt as written, response = the joint tokens after the prompt's, EOS appended);
    an example longer than ``max_length`` keeps its first tokens."""
    from rl.data import tokenize_prompts

    rows = [json.loads(x) for x in Path(path).read_text(encoding="utf-8").splitlines() if x.strip()]
    texts = [s for r in rows for s in (r["prompt"], r["prompt"] + r["completion"])]
    enc = tokenize_prompts(tokenizer, texts, [False] * len(texts))
    eos = tokenizer.eos_token_id
    out = []
    for k, r in enumerate(rows):
        p, joint = enc[2 * k], enc[2 * k + 1]
        resp = joint[len(p):] if joint[: len(p)] == p else list(
            tokenizer(r["completion"], add_special_tokens=False)["input_ids"])
        if not resp or resp[-1] != eos:
            resp = resp + [eos]
        if len(p) >= max_length:
            continue
        out.append((p, resp[: max_length - len(p)]))
    return out


def sft_batch(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded prompt+response rows; ``loss_mask[:, j]`` = 1 where token j+1 is a response token."""
    t = max(len(p) + len(r) for p, r in examples)
    ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), t), dtype=torch.long)
    loss = torch.zeros((len(examples), t - 1), dtype=torch.long)
    for i, (p, r) in enumerate(examples):
        n = len(p) + len(r)
        ids[i, :n] = torch.tensor(p + r)
        attn[i, :n] = 1
        loss[i, len(p) - 1: n - 1] = 1
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}


def _nll_sum(model, batch: dict, dtype: torch.dtype, chunk_tokens: int = 1024) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the response tokens (chunked over the vocabulary) and their count."""
    from rl.algorithms.logprobs import chunked_logprobs

    device = next(model.parameters()).device
    ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    mask = batch["loss_mask"].to(device) > 0
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        h = base_model(model).get_decoder()(input_ids=ids, attention_mask=attn, use_cache=False).last_hidden_state
    w, b = output_head(model)
    logp, _ = chunked_logprobs(h[:, :-1][mask][None], w, ids[:, 1:][mask][None], bias=b, chunk_tokens=chunk_tokens)
    return -logp.sum(), int(mask.sum())


@torch.no_grad()
def sft_loss(model, examples, pad_id: int, batch_size: int = 8, dtype: torch.dtype = torch.float32) -> float:
    """Mean NLL per response token over ``examples`` (no grad; the held-out loss)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for s in range(0, len(examples), batch_size):
        nll, n = _nll_sum(model, sft_batch(examples[s: s + batch_size], pad_id), dtype)
        total, count = total + float(nll), count + n
    model.train(was)
    return total / max(count, 1)


def train_lora_sft(base_model: str, sft_path: str | Path, out_dir: str | Path, cfg: SFTConfig, tokenizer,
                   device: str = "auto") -> dict[str, Any]:
    """LoRA SFT of ``base_model`` on a prompt/completion jsonl, loss on the response only; the merged model
    goes to ``out_dir`` atomically (with the tokenizer and ``sft_stats.json``). Returns the stats."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, get_scheduler

    errors = cfg.check("sft")
    if errors:
        raise ValueError("; ".join(errors))
    start = time.perf_counter()
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples = sft_examples(sft_path, tokenizer, cfg.max_length)
    if not examples:
        raise ValueError(f"{sft_path}: no SFT examples (no prompt had a response of this kind: raise "
                         f"critical_tokens.n or the temperature, or sample more prompts)")
    order = list(range(len(examples)))
    random.Random(f"{cfg.seed}:holdout").shuffle(order)
    n_hold = min(cfg.holdout, len(examples) - 1)
    held = [examples[i] for i in order[:n_hold]]
    train = [examples[i] for i in sorted(order[n_hold:])]
    steps_per_epoch = math.ceil(math.ceil(len(train) / cfg.batch_size) / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs
    warmup = min(cfg.warmup_steps, math.ceil(cfg.max_warmup_fraction * total))
    dtype = DTYPES[cfg.dtype]

    torch.manual_seed(cfg.seed)
    dev = torch_device(device)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32).to(dev)
    model = get_peft_model(base, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                            target_modules=list(cfg.target_modules), task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_scheduler(cfg.lr_schedule, opt, num_warmup_steps=warmup, num_training_steps=total)
    evals: list[float] = []
    best = (math.inf, None)

    def evaluate() -> None:
        nonlocal best
        loss = sft_loss(model, held, pad_id, cfg.batch_size, dtype)
        evals.append(loss)
        if loss < best[0]:
            best = (loss, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})

    if held:
        evaluate()
    model.train()
    losses, step = [], 0
    for epoch in range(cfg.epochs):
        idx = list(range(len(train)))
        random.Random(f"{cfg.seed}:{epoch}").shuffle(idx)
        micro = [[train[i] for i in idx[s: s + cfg.batch_size]] for s in range(0, len(idx), cfg.batch_size)]
        for g in range(0, len(micro), cfg.grad_accum):
            group = [sft_batch(m, pad_id) for m in micro[g: g + cfg.grad_accum]]
            tokens = sum(int(b["loss_mask"].sum()) for b in group)
            step_loss = 0.0
            for b in group:  # token mean over the whole optimizer step
                nll, _ = _nll_sum(model, b, dtype)
                (nll / tokens).backward()
                step_loss += float(nll.detach()) / tokens
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(step_loss)
            step += 1
            if held and cfg.eval_every and step % cfg.eval_every == 0:
                evaluate()
        if held and not cfg.eval_every:
            evaluate()
    if held and best[1] is not None:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in best[1]:
                    p.copy_(best[1][n])
    merged = model.merge_and_unload()
    stats = {"examples": len(train), "holdout": len(held), "steps": step, "warmup_steps": warmup,
             "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
             "losses": losses, "eval_losses": evals, "best_eval_loss": best[0] if held else None,
             "seconds": time.perf_counter() - start, "config": dataclasses.asdict(cfg), "base_model": base_model}
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "sft_stats.json").write_text(json.dumps(stats, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    log.info("critical-tokens: SFT %s: %d examples, %d steps, loss %.3f -> %.3f (%.0fs)", out.name, len(train), step,
             stats["first_loss"] or 0.0, stats["final_loss"] or 0.0, stats["seconds"])
    return stats
