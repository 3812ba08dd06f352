"""DeepSpeed engine of one data-parallel rank: forward passes, backward, optimizer step, weights out.

It knows no training method. An objective (rl/objectives) declares the no-grad statistics it
needs (``Stat``: which model, which output) and computes its loss from a differentiable forward;
the engine runs those passes, backpropagates each micro-batch's share and steps the optimizer
on the last one (``set_gradient_accumulation_boundary``), so micro-batches may be uneven and the
objective's normaliser stays exact across micro-batches and ranks.

Log-probs come from the last hidden state through the output head in token chunks
(rl/algorithms/logprobs.py): no [N, T, V] tensor. Under ZeRO-3 the head weight is gathered for
the loss *and its backward* (the chunked function saves it for the recompute), every forward
is matched across ranks (the gathers are collectives), and every weight read (export, sync)
gathers bucket by bucket, collectively on all ranks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import nullcontext

import torch

from rl import dist
from rl.algorithms.logprobs import chunked_logprobs
from rl.config import Config
from rl.objectives.base import Stat
from rl.prompt_sharing import completion_hidden

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


def hf_name(peft_name: str) -> str:
    """A PEFT-wrapped parameter name -> the plain transformers name the rollout engines load."""
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


class PolicyEngine:
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int, master_addr: str,
                 master_port: int, total_optimizer_steps: int, reference: bool = False,
                 frozen_models: dict[str, str] | None = None) -> None:
        import deepspeed
        from transformers import AutoModelForCausalLM

        from rl import ds_ops
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
        # DeepSpeed's C++ ops from this environment's build folder (a no-op when the trainer rank loaded them)
        ds_ops.prepare(cfg.trainer.offload_optimizer)
        deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
        self.device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        self.dtype = DTYPES[cfg.model.dtype]
        self.zero3 = cfg.trainer.zero_stage == 3

        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        if cfg.model.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.models: dict[str, torch.nn.Module] = {}
        lora = cfg.model.lora
        if lora.rank > 0:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                     target_modules=list(lora.target_modules), task_type="CAUSAL_LM"))
        elif reference:
            self.models["reference"] = self._frozen(AutoModelForCausalLM.from_pretrained(model_path, dtype=self.dtype))
        for role, path in (frozen_models or {}).items():  # more frozen roles an objective asks for (guidance, ...)
            extra = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
            if extra.get_output_embeddings().weight.shape[0] != model.get_output_embeddings().weight.shape[0]:
                raise ValueError(f"the {role} model {path} has a vocabulary of {extra.config.vocab_size} tokens, the "
                                 f"policy {model_path} of {model.config.vocab_size}: per-token statistics need the "
                                 f"policy's tokenizer")
            self.models[role] = self._frozen(extra)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=self._optimizer(model), config=self._ds_config(),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(
                opt, lr_lambda(cfg.trainer.lr_schedule, cfg.trainer.warmup_steps, total_optimizer_steps)))
        self.models["policy"] = self.engine.module
        self.lora = lora.rank > 0
        self.last_nonfinite: str | None = None
        self.inject_nan = False

    # ---------------------------------------------------------------- set-up
    def _ds_config(self) -> dict:
        t = self.cfg.trainer
        zero: dict = {"stage": t.zero_stage}
        if t.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        if t.offload_params:
            zero["offload_param"] = {"device": "cpu"}
        bf16_weights = self.dtype == torch.bfloat16 and t.bf16_weights
        out = {
            "train_micro_batch_size_per_gpu": t.micro_batch_size,
            "gradient_accumulation_steps": 1,  # driven explicitly, see module docstring
            "gradient_clipping": t.grad_clip,
            # off (default): fp32 parameters and gradients, bf16 compute through autocast (``hidden``)
            "bf16": {"enabled": bf16_weights},
            "zero_optimization": zero,
            "steps_per_print": 10**9,
            "wall_clock_breakdown": False,
        }
        if bf16_weights and t.zero_stage >= 1:  # accumulate micro-batch gradients in fp32, not bf16
            out["data_types"] = {"grad_accum_dtype": "fp32"}
        return out

    def _optimizer(self, model: torch.nn.Module):
        """torch AdamW, or DeepSpeed's CPU Adam when the optimizer state is offloaded (ZeRO refuses a
        client torch optimizer with offload; both implement AdamW with decoupled weight decay)."""
        t = self.cfg.trainer
        params = [p for p in model.parameters() if p.requires_grad]
        kwargs = dict(lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps, weight_decay=t.weight_decay)
        if t.offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(params, adamw_mode=True, **kwargs)
        return torch.optim.AdamW(params, fused=True, **kwargs)

    def _frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        """A frozen model for no-grad passes: partitioned like the policy under ZeRO-3, else whole."""
        model.requires_grad_(False)
        if not self.zero3:
            return model.to(self.device).eval()
        import deepspeed

        cfg = self._ds_config()
        cfg.pop("gradient_clipping")
        wrapped, *_ = deepspeed.initialize(model=model, config=cfg)
        return wrapped.module.eval()

    # ---------------------------------------------------------------- forward
    def _base(self, model):
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    def gathered(self, params):
        """All ranks enter together under ZeRO-3 (a collective); a no-op otherwise."""
        if self.zero3:
            import deepspeed

            return deepspeed.zero.GatheredParameters(list(params), modifier_rank=None)
        return nullcontext()

    def head(self, model: str = "policy") -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight [V, d], bias) of a model's output head; gather it first under ZeRO-3 (``head_gathered``)."""
        out = self._base(self.models[model]).get_output_embeddings()
        return out.weight, getattr(out, "bias", None)

    def head_gathered(self, model: str = "policy"):
        return self.gathered([p for p in self.head(model) if p is not None])

    def hidden(self, model: str, batch: dict) -> torch.Tensor:
        """Last hidden states aligned to completion tokens: [N, T, d] (h[:, t] predicts token t); each distinct
        prompt runs once when ``trainer.share_prompt_forward`` (rl/prompt_sharing.py)."""
        backbone = self._base(self.models[model]).model
        share = self.cfg.trainer.share_prompt_forward and not self.zero3 and not self.cfg.model.gradient_checkpointing
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            h, _ = completion_hidden(backbone, batch, share, self.device)
        return h

    def token_logprobs(self, model: str, hidden: torch.Tensor, labels: torch.Tensor, temperature: float,
                       with_entropy: bool = False):
        """(logp [N, T], entropy or None) from hidden states; call inside ``head_gathered(model)``."""
        w, b = self.head(model)
        return chunked_logprobs(hidden, w, labels.to(self.device), bias=b, temperature=temperature,
                                chunk_tokens=self.cfg.trainer.logprob_chunk, with_entropy=with_entropy)

    def _model_ctx(self, model: str):
        if model == "reference" and "reference" not in self.models:
            return self.engine.module.disable_adapter()  # LoRA: the base model is the reference
        return nullcontext()

    def _role(self, model: str) -> str:
        if model == "reference" and "reference" not in self.models:
            return "policy"
        if model not in self.models and model != "policy":
            raise ValueError(f"no {model!r} model on this rank (loaded: {sorted(self.models)}); the objective "
                             f"needs it but the rank was started without it")
        return model

    @torch.no_grad()
    def stats(self, batch: dict, requests: list[Stat]) -> dict[str, torch.Tensor]:
        """The requested no-grad statistics over ``batch`` in micro-batches, kept on this rank's device.

        ``batch`` needs at least one row (under ZeRO-3 a rank with fewer micro-batches than the others
        runs throw-away forwards of its first row so the collective gathers line up)."""
        self.engine.module.eval()
        n, mb = batch["completion_ids"].shape[0], self.cfg.trainer.micro_batch_size
        out: dict[str, list] = {r.key: [] for r in requests}
        passes: dict[tuple[str, float, str | None], list[Stat]] = {}
        for r in requests:
            temp = self.cfg.rollout.temperature if r.temperature is None else r.temperature
            passes.setdefault((r.model, temp, r.prompt), []).append(r)
        n_micro = math.ceil(n / mb)
        if self.zero3:  # every forward gathers parameters collectively: all ranks run as many
            n_micro = int(dist.all_reduce([float(n_micro)], "max")[0])
        try:
            for i in range(n_micro):
                s = i * mb if i * mb < n else 0  # past this rank's rows: a throw-away forward of row 0
                micro = {k: v[s : s + mb] for k, v in batch.items() if isinstance(v, torch.Tensor)}
                keep = i * mb < n
                for (model, temp, prompt), reqs in passes.items():
                    role = self._role(model)
                    inputs = micro if prompt is None else {  # the same completions after another prompt
                        **micro, "prompt_ids": micro[f"{prompt}_ids"], "prompt_mask": micro[f"{prompt}_mask"]}
                    with self._model_ctx(model):
                        h = self.hidden(role, inputs)
                        want = {r.output for r in reqs}
                        logp = ent = None
                        if want & {"logp", "entropy"}:
                            with self.head_gathered(role):
                                logp, ent = self.token_logprobs(role, h, micro["completion_ids"], temp,
                                                                with_entropy="entropy" in want)
                    got = {"logp": logp, "entropy": ent, "hidden": h}
                    for r in reqs:
                        if keep:  # hidden states stay in the backbone's dtype (bf16: half of fp32)
                            t = got[r.output]
                            out[r.key].append(t if r.output == "hidden" else t.float())
        finally:
            self.engine.module.train()
        return {k: torch.cat(v) for k, v in out.items()}

    # ---------------------------------------------------------------- training
    def train_step(self, parts: list[tuple], metrics) -> tuple[float, dict[str, float]]:
        """One optimizer step over ``parts`` = [(objective, micro_batches, norm), ...].

        Returns (the step's pre-clip global grad norm, this rank's loss share per objective prefix);
        each objective adds its token-weighted metrics to ``metrics`` (RankMetrics)."""
        n_micro = sum(len(mbs) for _, mbs, _ in parts)
        done = 0
        norm_before = None
        shares: dict[str, float] = {}
        self.last_nonfinite = None  # "loss" | "grad_norm" when this step was dropped (see _step)
        bad_loss = False
        for objective, micro_batches, norm in parts:
            for mb in micro_batches:
                done += 1
                last = done == n_micro
                self._begin_micro_batch()
                h = self.hidden("policy", mb)
                heads = {m: self.head(self._role(m)) for m in ("policy", *objective.loss_heads)}
                params = list({id(p): p for wb in heads.values() for p in wb if p is not None}.values())
                with self.gathered(params):  # ZeRO-3: the chunked backward recomputes with the weight
                    logp, ent = self.token_logprobs("policy", h, mb["completion_ids"], objective.temperature,
                                                    with_entropy=objective.train_entropy)
                    out = {"logp": logp, "entropy": ent, "hidden": h, "heads": heads}
                    share, values, weight = objective.loss(out, mb, norm)
                    if self.inject_nan:  # test hook (rl/faults.py nan_loss)
                        share = share * float("nan")
                    if not bool(torch.isfinite(share.detach())):
                        bad_loss = True
                        share = share * float("nan")  # makes every gradient non-finite: the step is dropped
                    self.engine.set_gradient_accumulation_boundary(last)
                    # DeepSpeed averages gradients over ranks: multiply back so the global sum is exact.
                    self.engine.backward(share * self.world_size, scale_wrt_gas=False)
                if last:
                    norm_before = self._step(bad_loss)
                else:
                    self.engine.step()
                if weight > 0:
                    metrics.update_means(values, weight)
                shares[objective.prefix] = shares.get(objective.prefix, 0.0) + float(share.detach())
        if self.last_nonfinite:
            return float("nan"), shares
        after = self.engine.get_global_grad_norm() if n_micro else None
        return (float(after) if after is not None else float(norm_before or 0.0)), shares

    def _step(self, bad_loss: bool) -> float | None:
        """The optimizer step after the last micro-batch, unless the loss or the gradient norm is not finite
        (``trainer.on_nonfinite``): then the update is dropped before it touches the weights or the optimizer
        state, on every rank alike (a non-finite loss anywhere made every gradient non-finite, and gradients
        are reduced over ranks), and ``last_nonfinite`` says why. ZeRO-0 with a plain torch optimizer: the
        gradient norm is checked here, before ``engine.step()`` (DeepSpeed would clip by NaN and step);
        DeepSpeed's own optimizers (ZeRO 1-3, bf16 weights) compute the norm inside their step and drop a
        non-finite one themselves (``optimizer.overflow``). A dropped step advances the LR schedule like
        ``skip_step``. Returns the pre-clip norm where it is computed here (plain optimizer)."""
        norm = None
        if not hasattr(self.optimizer, "_global_grad_norm"):  # plain torch optimizer: ZeRO-0
            norm = self._plain_grad_norm()
            if not math.isfinite(norm):
                self.optimizer.zero_grad(set_to_none=True)
                self.last_nonfinite = "loss" if bad_loss else "grad_norm"
                self.skip_step()
                return norm
        self.engine.step()
        if getattr(self.optimizer, "overflow", False):
            self.last_nonfinite = "loss" if bad_loss else "grad_norm"
            self.skip_step()
        return norm

    def nonfinite_parameter(self) -> str | None:
        """The first parameter (this rank's partition of it under ZeRO-3) holding NaN or inf, agreed over
        ranks (a collective); None when all are finite."""
        bad = None
        for name, p in self.engine.module.named_parameters():
            t = getattr(p, "ds_tensor", None)
            if not bool(torch.isfinite(t if t is not None else p.detach()).all()):
                bad = name
                break
        if self.world_size > 1 and dist.all_reduce([float(bad is not None)], "max")[0] and bad is None:
            bad = "(on another rank)"
        return bad

    def _begin_micro_batch(self) -> None:
        """What ``DeepSpeedEngine.forward`` does first, which we bypass by calling the module's parts:
        ZeRO-3 counts micro-steps there, and without it every micro-batch's gradient partition
        overwrites the previous one instead of adding to it."""
        from deepspeed.runtime.base_optimizer import ZeROOptimizer

        if isinstance(self.optimizer, ZeROOptimizer):
            self.optimizer.clear_backward_seen_flag()

    def skip_step(self) -> None:
        """An optimizer step with nothing to learn from: the LR schedule still advances, so it ends
        where it was planned to (``total_optimizer_steps``)."""
        self.scheduler.step()

    def _plain_grad_norm(self) -> float:
        """ZeRO-0 with a plain optimizer: the grads of this step, on the parameters, before clipping."""
        grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
        return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    # ---------------------------------------------------------------- weights out
    def _export_entries(self) -> list[tuple[str, list[torch.nn.Parameter], object]]:
        """(HF name, parameters to gather, fn -> tensor) in parameter order; LoRA merged per tensor."""
        model = self.engine.module
        entries = []
        lora_modules = {}
        if self.lora:
            for name, module in model.named_modules():
                if hasattr(module, "base_layer") and hasattr(module, "get_delta_weight"):
                    lora_modules[name + ".base_layer.weight"] = module
        for name, p in model.named_parameters():
            if self.lora and ".lora_" in name:
                continue
            module = lora_modules.get(name)
            if module is not None:
                extra = [q for q in module.parameters() if q is not p]
                adapter = module.active_adapters[0]
                entries.append((hf_name(name), [p, *extra],
                                lambda p=p, m=module, a=adapter: p.detach() + m.get_delta_weight(a).to(p.dtype)))
            else:
                entries.append((hf_name(name), [p], lambda p=p: p.detach()))
        return entries

    def weight_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """(HF name, full shape) of every exported tensor, without gathering anything."""
        return [(name, tuple(getattr(ps[0], "ds_shape", ps[0].shape))) for name, ps, _ in self._export_entries()]

    def iter_weight_buckets(self, bucket_bytes: int, dtype: torch.dtype | None = None
                            ) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """The exported weights, bucket by bucket (each of at most ``bucket_bytes`` in ``dtype``).

        Under ZeRO-3 every rank must iterate (each bucket is gathered collectively) and only
        one bucket is ever gathered; the tensors are valid until the next bucket is requested.
        """
        def nbytes(ps):
            p = ps[0]
            numel = p.ds_numel if hasattr(p, "ds_numel") else p.numel()
            return numel * (dtype or p.dtype).itemsize

        bucket, size = [], 0
        for entry in self._export_entries():
            b = nbytes(entry[1])
            if bucket and size + b > bucket_bytes:
                yield from self._materialise(bucket)
                bucket, size = [], 0
            bucket.append(entry)
            size += b
        if bucket:
            yield from self._materialise(bucket)

    def _materialise(self, entries) -> Iterator[list[tuple[str, torch.Tensor]]]:
        with self.gathered([p for _, ps, _ in entries for p in ps]), torch.no_grad():
            yield [(name, fn()) for name, _, fn in entries]

    # ---------------------------------------------------------------- checkpoints
    def save(self, path: str, client_state: dict) -> None:
        bad = self.nonfinite_parameter()  # never a checkpoint of NaN weights
        if bad is not None:
            raise FloatingPointError(f"refusing to write a checkpoint: parameter {bad} holds NaN or inf values")
        self.engine.save_checkpoint(path, tag="ds", client_state=client_state)

    def load(self, path: str) -> dict:
        from rl.safe_load import use_weights_only

        use_weights_only(self.engine)  # DeepSpeed's files load weights_only, like state.pt (rl/safe_load.py)
        _, client_state = self.engine.load_checkpoint(path, tag="ds")
        return client_state or {}

    def base_config(self):
        return self._base(self.engine.module).config
