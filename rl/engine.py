"""DeepSpeed engine wrapper for one data-parallel rank: forward stats, GRPO micro-steps, weights.

Runs inside a Ray actor (rl/trainer_group.py). Backend is gloo on CPU and NCCL on GPU.
Log-probs are computed from the last hidden state through the output head in
token chunks (rl/algorithms/logprobs.py), so no [N, T, V] tensor is ever held.

Gradient accumulation is driven explicitly: the controller says how many
micro-batches a mini-batch has (it varies when D3S drops rows), each backward is
scaled exactly (token-mean across micro-batches and ranks), and the optimizer
steps on the last one via ``set_gradient_accumulation_boundary``.
"""

from __future__ import annotations

import math
import os
from contextlib import nullcontext

import torch

from rl.algorithms.aggregation import aggregate
from rl.algorithms.kl import kl_loss
from rl.algorithms.logprobs import chunked_logprobs
from rl.algorithms.registry import POLICY_LOSSES
from rl.algorithms.tis import mismatch_metrics, tis_weights
from rl.config import Config

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant" or total <= warmup:
            return 1.0
        frac = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac

    return f


def needs_reference_entropy(cfg: Config) -> bool:
    """RMT ranks document tokens by the reference model's entropy (its default)."""
    return cfg.algorithm.rmt.enable and cfg.algorithm.rmt.entropy_model == "reference"


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left-padded rows start at position 0 on their first real token, as in vLLM."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class PolicyEngine:
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int,
                 master_addr: str, master_port: int, total_optimizer_steps: int) -> None:
        import deepspeed
        from transformers import AutoModelForCausalLM

        from rl.algorithms import load_all

        load_all()  # registries are per process: this runs inside a Ray actor
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                          WORLD_SIZE=str(world_size), LOCAL_RANK="0")
        # Ray sets OMP_NUM_THREADS to the actor's num_cpus (1); on a CPU machine generation and
        # training take turns, so the trainer may use every core (trainer.torch_threads=0).
        threads = cfg.trainer.torch_threads or (0 if torch.cuda.is_available() else os.cpu_count())
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(cfg.trainer.seed + rank)
        use_cuda = torch.cuda.is_available()
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
        self.device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        dtype = DTYPES[cfg.model.dtype]

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.ref_model = None
        lora = cfg.model.lora
        if lora.rank > 0:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                     target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
        elif cfg.algorithm.kl.coef > 0 or needs_reference_entropy(cfg):
            self.ref_model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
            self.ref_model.requires_grad_(False)

        t = cfg.trainer
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps, weight_decay=t.weight_decay,
                                      fused=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(t.lr_schedule, t.warmup_steps, total_optimizer_steps))
        ds_config = {
            "train_micro_batch_size_per_gpu": t.micro_batch_size,
            "gradient_accumulation_steps": 1,  # driven explicitly, see module docstring
            "gradient_clipping": t.grad_clip,
            "bf16": {"enabled": dtype == torch.bfloat16},
            "zero_optimization": {"stage": t.zero_stage},
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if t.offload_optimizer:
            ds_config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
        if t.offload_params:
            ds_config["zero_optimization"]["offload_param"] = {"device": "cpu"}
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
        self.dtype = dtype

    # ---------------------------------------------------------------- model pieces
    def _base(self, model=None):
        m = model if model is not None else self.engine.module
        return m.get_base_model() if hasattr(m, "get_base_model") else m

    def _gathered(self, params):
        if self.cfg.trainer.zero_stage == 3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(params, modifier_rank=None)
        return nullcontext()

    def lm_head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        head = self._base().get_output_embeddings()
        with self._gathered([head.weight]):
            w = head.weight.detach().to("cpu", torch.float32, copy=True)  # one fp32 copy, not two
        bias = getattr(head, "bias", None)
        b = bias.detach().to("cpu", torch.float32, copy=True) if bias is not None else None
        return w, b

    def _hidden(self, model, batch: dict) -> torch.Tensor:
        """Last hidden states aligned to completion tokens: [N, T, d]."""
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1).to(self.device)
        attn = torch.cat([batch["prompt_mask"].long(), batch["completion_mask"].long()], 1).to(self.device)
        backbone = self._base(model).model
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            out = backbone(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn),
                           use_cache=False)
        p, t = batch["prompt_ids"].shape[1], batch["completion_ids"].shape[1]
        return out.last_hidden_state[:, p - 1 : p + t - 1]

    def _logp(self, model, batch: dict, with_entropy: bool = False, hidden: torch.Tensor | None = None,
              temperature: float | None = None):
        """Log-probs (and entropy) of the completion tokens, at the sampling temperature by default."""
        h = self._hidden(model, batch) if hidden is None else hidden
        head = self._base(model).get_output_embeddings()
        with self._gathered([head.weight]):
            logp, ent = chunked_logprobs(h, head.weight, batch["completion_ids"].to(self.device),
                                         bias=getattr(head, "bias", None),
                                         temperature=self.cfg.rollout.temperature if temperature is None else temperature,
                                         chunk_tokens=self.cfg.trainer.logprob_chunk, with_entropy=with_entropy)
        return logp, ent, h

    # ---------------------------------------------------------------- no-grad passes
    @torch.no_grad()
    def forward_stats(self, batch: dict, need_entropy: bool, need_hidden: bool, need_ref: bool) -> dict:
        """Old-policy logp (and entropy / hidden) plus reference logp, in micro-batches."""
        self.engine.module.eval()
        n, mb = batch["completion_ids"].shape[0], self.cfg.trainer.micro_batch_size
        out: dict[str, list] = {"old_logp": [], "entropy": [], "hidden": [], "ref_logp": []}
        for s in range(0, n, mb):
            micro = {k: v[s : s + mb] for k, v in batch.items()}
            logp, ent, h = self._logp(self.engine.module, micro, with_entropy=need_entropy)
            out["old_logp"].append(logp.float().cpu())
            if need_entropy:
                out["entropy"].append(ent.float().cpu())
            if need_hidden:
                out["hidden"].append(h.float().cpu())
            if need_ref:
                out["ref_logp"].append(self._ref_logp(micro))
        self.engine.module.train()
        return {k: torch.cat(v) for k, v in out.items() if v}

    def _ref_logp(self, micro: dict) -> torch.Tensor:
        if self.ref_model is not None:
            return self._logp(self.ref_model, micro)[0].float().cpu()
        with self.engine.module.disable_adapter():  # LoRA: the base model is the reference
            return self._logp(self.engine.module, micro)[0].float().cpu()

    @torch.no_grad()
    def token_entropy(self, batch: dict, reference: bool) -> torch.Tensor:
        """Full-vocabulary entropy (temperature 1) of the next-token distribution at every
        completion position, under the reference model or the current policy: [N, T]."""
        self.engine.module.eval()
        mb, out = self.cfg.trainer.micro_batch_size, []
        for s in range(0, batch["completion_ids"].shape[0], mb):
            micro = {k: v[s : s + mb] for k, v in batch.items()}
            if reference and self.ref_model is None:
                with self.engine.module.disable_adapter():
                    ent = self._logp(self.engine.module, micro, with_entropy=True, temperature=1.0)[1]
            else:
                model = self.ref_model if reference else self.engine.module
                ent = self._logp(model, micro, with_entropy=True, temperature=1.0)[1]
            out.append(ent.float().cpu())
        self.engine.module.train()
        return torch.cat(out)

    # ---------------------------------------------------------------- training
    def train_mini_batch(self, micro_batches: list[dict], global_tokens: float, global_seqs: float,
                         ntp_micro_batches: list[dict] | None = None, ntp_tokens: float = 0.0) -> dict:
        """One optimizer step over this rank's micro-batches (exact global aggregation).

        ``ntp_micro_batches`` (RMT) add lambda * L_NTP, teacher-forced cross-entropy on document
        tokens under ``ntp_mask``, to the same step; ``ntp_tokens`` is its global token count.
        """
        a = self.cfg.algorithm
        loss_fn = POLICY_LOSSES[a.policy_loss]
        sums: dict[str, float] = {}
        loss_sum, grad_norm = 0.0, 0.0
        ntp_micro_batches = ntp_micro_batches or []
        n_micro = len(micro_batches) + len(ntp_micro_batches)
        for i, mb in enumerate(micro_batches):
            logp, _, _ = self._logp(self.engine.module, mb)
            mask = mb["loss_mask"].to(self.device)
            # On-policy single update: parameters only change after the last micro-batch, so the
            # current log-probs ARE the old policy's (ratio 1, as TRL/TW-GRPO with one iteration).
            old = mb["old_logp"].to(self.device) if "old_logp" in mb else logp.detach()
            tok_loss, metrics = loss_fn(logp, old, mb["advantages"].to(self.device), mask,
                                        eps_low=a.eps_low, eps_high=a.eps_high, dual_clip=a.dual_clip)
            if "old_logp" not in mb and "sampler_logp" in mb:
                sampler = mb["sampler_logp"].to(self.device)
                for k, v in mismatch_metrics(old, sampler, mb["completion_mask"].to(self.device)).items():
                    metrics[f"mismatch/{k}"] = v
            if a.tis.enable and "sampler_logp" in mb:
                tok_loss = tok_loss * tis_weights(old, mb["sampler_logp"].to(self.device), mask, a.tis.cap)
            tok_loss = tok_loss * mb["token_weight"].to(self.device)
            if a.kl.coef > 0 and a.kl.mode == "loss":
                kl = kl_loss(logp, mb["ref_logp"].to(self.device), mask, a.kl.coef, a.kl.estimator)
                tok_loss = tok_loss + kl
                metrics["kl"] = (kl.detach() * mask).sum() / mask.sum().clamp(min=1) / a.kl.coef
            share = aggregate(tok_loss, mask, a.aggregation, global_tokens=global_tokens,
                              global_seqs=global_seqs, max_len=self.cfg.rollout.max_tokens)
            grad_norm = self._backward(share, i == n_micro - 1) or grad_norm
            w = float(mask.sum())
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * w
            sums["_tokens"] = sums.get("_tokens", 0.0) + w
            loss_sum += share.item()
        ntp_sum = 0.0
        for j, mb in enumerate(ntp_micro_batches):
            # RMT: L_NTP at temperature 1 (a language-modelling loss, not a sampling distribution)
            logp = self._logp(self.engine.module, mb, temperature=1.0)[0]
            nll = -(logp * mb["ntp_mask"].to(self.device)).sum()
            share = a.rmt.ntp_coef * nll / (max(ntp_tokens, 1.0) if a.rmt.ntp_reduction == "mean" else 1.0)
            grad_norm = self._backward(share, len(micro_batches) + j == n_micro - 1) or grad_norm
            ntp_sum += float(nll.detach())
            loss_sum += share.item()
        tokens = max(sums.pop("_tokens", 0.0), 1.0)
        out = {(k if "/" in k else f"train/{k}"): v / tokens for k, v in sums.items()}
        if ntp_micro_batches:
            out["train/ntp_nll_sum"] = ntp_sum  # this rank's; the group divides the total by ntp_tokens
        out["train/loss"] = loss_sum  # this rank's share; shares sum to the mini-batch loss
        out["train/grad_norm"] = grad_norm
        out["train/lr"] = float(self.scheduler.get_last_lr()[0])
        return out

    def _backward(self, share: torch.Tensor, last: bool) -> float | None:
        """Accumulate one micro-batch; the optimizer steps after ``last``. Returns the grad norm then."""
        self.engine.set_gradient_accumulation_boundary(last)
        # DeepSpeed averages gradients over ranks: multiply back so the global sum is exact.
        self.engine.backward(share * self.world_size, scale_wrt_gas=False)
        norm = self._grad_norm() if last else None
        self.engine.step()
        return norm

    def _grad_norm(self) -> float:
        """Pre-clip global gradient norm (ZeRO >= 1 keeps partitioned grads: ask DeepSpeed)."""
        if self.cfg.trainer.zero_stage > 0:
            return float(self.engine.get_global_grad_norm() or 0.0)
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0

    # ---------------------------------------------------------------- weights & checkpoints
    def named_weights(self) -> dict[str, torch.Tensor]:
        """Full HF-named weights for the rollout engines (LoRA merged into a copy)."""
        model = self.engine.module
        with self._gathered(list(model.parameters())):
            if hasattr(model, "merge_and_unload"):
                import copy

                merged = copy.deepcopy(model).merge_and_unload()
                sd = merged.state_dict()
            else:
                sd = model.state_dict()
            return {k: v.detach().to(self.dtype).cpu().clone() for k, v in sd.items()}

    def save(self, path: str, client_state: dict) -> None:
        self.engine.save_checkpoint(path, tag="ds", client_state=client_state)

    def load(self, path: str) -> dict:
        _, client_state = self.engine.load_checkpoint(path, tag="ds")
        return client_state or {}

    def export_hf(self, path: str, tokenizer_path: str) -> None:
        from transformers import AutoTokenizer

        model = self.engine.module
        with self._gathered(list(model.parameters())):
            if hasattr(model, "merge_and_unload"):
                import copy

                model = copy.deepcopy(model).merge_and_unload()
            if self.rank == 0:
                model.save_pretrained(path, safe_serialization=True)
                AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(path)
