"""Recipe schema: one dataclass per section, loaded and validated with OmegaConf.

``load_config("recipes/grpo.yaml", ["trainer.lr=1e-6"])`` merges the YAML and the
dotted overrides onto the structured defaults. Unknown keys, wrong types and
missing values raise ``ConfigError`` naming the key and the file; cross-field
checks (``validate``) do the same for settings that contradict each other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl.algorithms.preference_config import PreferenceConfig
from rl.credit.config import D3SConfig, RMTConfig, THRConfig, TWConfig
from rl.dpo_config import FAMILIES, DPOLoopConfig, validate_dpo
from rl.fields import help_field
from rl.preference_data_config import PreferenceDataConfig

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A recipe problem; the message names the key and the file."""


_h = help_field


@dataclass
class LoraConfig:
    rank: int = _h(0, "LoRA rank; 0 = full fine-tuning. The reference model is the base with adapters off.")
    alpha: int = _h(16, "LoRA alpha")
    dropout: float = _h(0.0, "LoRA dropout")
    target_modules: list[str] = _h(["q_proj", "k_proj", "v_proj", "o_proj"], "modules that get adapters")


@dataclass
class ModelConfig:
    name_or_path: str = _h("smollm2-135m", "a bundled short name (see `tokencredit prepare-model`) or an HF directory/hub id")
    dtype: str = _h("bfloat16", "trainer/rollout dtype: bfloat16 | float32")
    gradient_checkpointing: bool = _h(False, "recompute activations in backward to save memory")
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TaskConfig:
    """Knobs of the built-in generated tasks (data.source: builtin:arithmetic | builtin:countdown)."""

    ops: list[str] = _h(["add"], "arithmetic families: add, sub, mul, mixed")
    digits: int = _h(1, "digits per operand (arithmetic) / per number (countdown)")
    num_operands: int = _h(2, "operands per arithmetic problem; numbers per countdown problem")
    num_train: int = _h(2000, "generated training prompts")
    num_test: int = _h(200, "generated held-out prompts")
    seed: int = _h(1234, "generation seed (train/test are disjoint)")
    template: str = _h("short", "prompt wording: short | cot")


@dataclass
class DataConfig:
    source: str = _h("builtin:arithmetic", "builtin:<task>, a local json/jsonl/parquet/csv file or directory, or a hub dataset name")
    train_split: str = _h("train", "split used for training")
    test_split: str = _h("test", "split used for evaluation ('' = none)")
    holdout_fraction: float = _h(0.0, "when the source has no data.test_split: hold out this fraction of the train split "
                                 "as the test split (fixed seeded choice); 0 = no eval set (warning)")
    subset: str | None = _h(None, "hub dataset configuration name (e.g. 'main' for openai/gsm8k)")
    prompt_field: str = _h("prompt", "column holding the prompt (a string or a list of chat messages)")
    answer_field: str = _h("answer", "column holding the reference answer passed to rewards as `answer`")
    extra_columns: list[str] = _h([], "more columns passed to reward functions as keyword arguments")
    system_prompt: str | None = _h(None, "optional system message prepended to every prompt")
    apply_chat_template: bool = _h(True, "format prompts with the tokenizer's chat template")
    chat_template_fallback: str = _h("error", "when the tokenizer has no template: error | plain (use the raw text)")
    max_prompt_tokens: int = _h(256, "prompts longer than this (after templating) are handled by on_long_prompt")
    on_long_prompt: str = _h("drop", "drop (count and log) | error")
    shuffle: bool = _h(True, "shuffle the training prompts each epoch (seeded)")
    task: TaskConfig = field(default_factory=TaskConfig)


@dataclass
class RolloutConfig:
    backend: str = _h("vllm", "vllm | hf (transformers generate; debugging baseline)")
    num_workers: int = _h(1, "rollout workers (Ray actors, one engine each)")
    n: int = _h(8, "completions per prompt (group size G)")
    temperature: float = _h(1.0, "sampling temperature (also used for the trainer's entropy)")
    top_p: float = _h(1.0, "nucleus sampling")
    top_k: int = _h(-1, "top-k sampling, -1 = off")
    max_tokens: int = _h(64, "max new tokens per completion")
    stop: list[str] = _h([], "extra stop strings")
    max_model_len: int = _h(512, "engine context length (prompt + completion)")
    memory_fraction: float = _h(0.25, "vLLM gpu_memory_utilization; on CPU the fraction of the NUMA node's RAM for KV cache")
    num_cpus_per_worker: float = _h(1.0, "Ray CPUs reserved per rollout worker")
    num_gpus_per_worker: float = _h(0.0, "Ray GPUs per rollout worker (GPU clusters)")
    seed: int = _h(0, "engine seed (per-request seeds are GPU-only in vLLM)")
    sync_backend: str = _h("auto", "weight sync: auto | cpu_shm | nccl | cuda_ipc")
    sync_bucket_mb: int = _h(256, "weight sync bucket size")
    sync_timeout_s: float = _h(120.0, "timeout of each weight-sync call")
    generate_timeout_s: float = _h(900.0, "timeout of one generate call on a worker")
    start_timeout_s: float = _h(600.0, "timeout for a worker's engine to start")


@dataclass
class RewardFnConfig:
    name: str = _h(MISSING, "built-in name, module:function or path/to/file.py:function")
    weight: float = _h(1.0, "weight in the summed reward")
    kwargs: dict[str, Any] = _h({}, "extra keyword arguments bound to the function")


@dataclass
class RewardsConfig:
    functions: list[RewardFnConfig] = _h([], "reward functions, summed with their weights")
    on_error: str = _h("raise", "raise | skip (count the bad sample, give it reward 0 for that function)")
    timeout_s: float = _h(60.0, "per-call timeout of one reward function")


@dataclass
class KLConfig:
    coef: float = _h(0.0, "beta; 0 turns the KL term (and the reference model) off")
    estimator: str = _h("k3", "k1 | k3 (Schulman's unbiased, low-variance)")
    mode: str = _h("loss", "loss (added to the policy loss) | reward (subtracted from the reward)")


@dataclass
class DynamicSamplingConfig:
    enable: bool = _h(False, "DAPO dynamic sampling: drop groups without signal and generate more (arXiv 2503.14476)")
    max_rounds: int = _h(3, "extra generation rounds at most before training on a partial batch (an empty one skips the step)")
    criterion: str = _h("accuracy", "dropped groups: 'accuracy' keeps 0 < #correct < G by the accuracy label (DAPO) | "
                        "'reward_variance' keeps groups whose total reward is not constant")


@dataclass
class TISConfig:
    enable: bool = _h(False, "truncated importance sampling for sampler/trainer logprob mismatch")
    cap: float = _h(2.0, "clip of the per-token ratio pi_old / pi_sampler")


@dataclass
class AlgorithmConfig:
    advantage: str = _h("grpo", "grpo | dr_grpo | rloo")
    std_normalize: bool = _h(True, "grpo: divide by the group std (Dr. GRPO turns this off)")
    std_eps: float = _h(1e-4, "added to the std (TRL 1e-4, verl 1e-6)")
    credit: list[str] = _h([], "credit modules applied in order: d3s, thr, tw ([] = plain GRPO)")
    policy_loss: str = _h("clip", "clip | gspo | gspo_token")
    aggregation: str = _h("token_mean", "token_mean | seq_mean_token_mean | seq_mean_token_sum_norm")
    eps_low: float = _h(0.2, "lower clip range")
    eps_high: float = _h(0.2, "upper clip range (DAPO clip-higher: 0.28)")
    dual_clip: float | None = _h(None, "dual-clip constant c > 1 for negative advantages (None = off)")
    on_paper_mismatch: str = _h("warn", "a method combined with settings its paper does not use (table: "
                                "rl/algorithms/policy_loss.PAPER_COMBINATIONS): warn (one log line) | error | ignore")
    epochs: int = _h(1, "passes over each rollout batch")
    mini_batches: int = _h(1, "optimizer steps per epoch (the rollout batch is split this many ways)")
    overlong_filter: bool = _h(False, "mask truncated completions out of the loss (DAPO)")
    kl: KLConfig = field(default_factory=KLConfig)
    dynamic_sampling: DynamicSamplingConfig = field(default_factory=DynamicSamplingConfig)
    tis: TISConfig = field(default_factory=TISConfig)
    d3s: D3SConfig = field(default_factory=D3SConfig)
    thr: THRConfig = field(default_factory=THRConfig)
    tw: TWConfig = field(default_factory=TWConfig)
    rmt: RMTConfig = field(default_factory=RMTConfig)


@dataclass
class TrainerConfig:
    steps: int = _h(20, "rollout/update iterations")
    prompts_per_step: int = _h(8, "prompts per rollout batch (rows = prompts_per_step * rollout.n)")
    micro_batch_size: int = _h(8, "max rows per forward/backward on a rank")
    lr: float = _h(1e-6, "peak learning rate")
    lr_schedule: str = _h("constant", "constant | cosine | linear (after warmup)")
    warmup_steps: int = _h(0, "optimizer steps of linear warmup")
    weight_decay: float = _h(0.0, "AdamW weight decay")
    betas: list[float] = _h([0.9, 0.999], "AdamW betas")
    adam_eps: float = _h(1e-8, "AdamW epsilon")
    grad_clip: float = _h(1.0, "gradient norm clip (0 = off)")
    zero_stage: int = _h(0, "DeepSpeed ZeRO stage 0-3")
    offload_optimizer: bool = _h(False, "ZeRO optimizer-state offload to CPU")
    offload_params: bool = _h(False, "ZeRO-3 parameter offload to CPU")
    num_ranks: int = _h(1, "data-parallel trainer ranks (Ray actors)")
    num_cpus_per_rank: float = _h(1.0, "Ray CPUs per trainer rank")
    num_gpus_per_rank: float = _h(0.0, "Ray GPUs per trainer rank")
    logprob_chunk: int = _h(4096, "tokens per chunk of the log-prob/entropy head pass: peak ~10 x chunk x vocab bytes "
                            "(never an [N,T,V] tensor)")
    seed: int = _h(42, "seed of data order, sampling and init")
    bf16_weights: bool = _h(False, "with model.dtype=bfloat16: keep the trained parameters in bf16 (DeepSpeed bf16; fp32 "
                            "master copy in the optimizer; gradients accumulate in bf16 at ZeRO-0, fp32 at ZeRO>=1). "
                            "False: fp32 parameters and gradients, bf16 compute by autocast (TRL's mixed precision: "
                            "small updates are not rounded away)")
    torch_threads: int = _h(0, "torch threads per trainer rank (0 = all cores on CPU, where rollout and training take turns)")


@dataclass
class ClusterConfig:
    address: str | None = _h(None, "Ray address; None starts a local Ray instance")
    num_cpus: int | None = _h(None, "CPUs of the local Ray instance (None = all)")
    nodes: int = _h(1, "nodes the trainer ranks and rollout workers are spread over (one Ray placement-group bundle "
                    "per node: trainer.num_ranks/nodes ranks and rollout.num_workers/nodes workers on each)")
    timeout_s: float = _h(600.0, "timeout of trainer-rank calls (start-up, a training step, sync, checkpoint)")


@dataclass
class LoggingConfig:
    dir: str = _h("runs", "parent folder of run directories")
    run_name: str | None = _h(None, "run folder name (default: recipe name + time)")
    tensorboard: bool = _h(True, "write TensorBoard events")
    wandb_project: str | None = _h(None, "W&B project (None = off)")
    wandb_mode: str = _h("offline", "online | offline")
    progress: bool = _h(True, "live progress bar")
    save_batches: bool = _h(True, "save each step's tokens + credit for `tokencredit inspect`")


@dataclass
class CheckpointConfig:
    every: int = _h(0, "save every k steps (0 = only at the end)")
    keep_last: int = _h(2, "keep the k newest checkpoints")
    resume: str = _h("none", "none | auto (latest in the run dir) | a checkpoint path")
    export_hf: bool = _h(True, "export the final policy as an HF directory (safetensors + tokenizer)")
    export_hf_every: int = _h(0, "also export hf_model_step_N every k steps (0 = off; GRPO-family loop), e.g. to "
                              "evaluate intermediate policies from their saved weights")
    save_final: bool = _h(True, "save a checkpoint after the last step")


@dataclass
class EvalConfig:
    every: int = _h(0, "evaluate every k steps (0 = only before and after training)")
    num_prompts: int = _h(100, "held-out prompts used")
    pass_k: int = _h(4, "k of pass@k (sampled at rollout.temperature)")
    at_start: bool = _h(True, "evaluate the base model before the first step")
    accuracy_reward: str | None = _h(None, "reward function (metric label) whose value decides correctness; None = the first")
    correct_threshold: float = _h(0.5, "a sample is correct when that function's value is >= this")


@dataclass
class Config:
    name: str = _h("run", "recipe name")
    description: str = _h("", "one line shown by `tokencredit recipes`")
    family: str = _h("grpo", "training family: grpo (online RL, rl/loops/grpo.py) | dpo (preference losses: "
                     "rl/loops/dpo.py offline, rl/loops/online_dpo.py with dpo.mode=online)")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    rewards: RewardsConfig = field(default_factory=RewardsConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    preference: PreferenceConfig = field(default_factory=PreferenceConfig)  # family: dpo (rl/dpo_config.py)
    preference_data: PreferenceDataConfig = field(default_factory=PreferenceDataConfig)
    dpo: DPOLoopConfig = field(default_factory=DPOLoopConfig)


_CHOICES = {
    "family": FAMILIES,
    "model.dtype": ("bfloat16", "float32"),
    "data.on_long_prompt": ("drop", "error"),
    "data.chat_template_fallback": ("error", "plain"),
    "data.task.template": ("short", "cot"),
    "rollout.backend": ("vllm", "hf"),
    "rollout.sync_backend": ("auto", "cpu_shm", "nccl", "cuda_ipc"),
    "rewards.on_error": ("raise", "skip"),
    "algorithm.kl.estimator": ("k1", "k3"),
    "algorithm.kl.mode": ("loss", "reward"),
    "algorithm.dynamic_sampling.criterion": ("accuracy", "reward_variance"),
    "algorithm.on_paper_mismatch": ("warn", "error", "ignore"),
    "trainer.lr_schedule": ("constant", "cosine", "linear"),
}


def _fail(source: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {msg}")


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config, source: str = "<config>") -> None:
    """Cross-field checks; each error names the key(s) and the file."""
    from rl.algorithms import load_all  # registers the built-in pieces
    from rl.algorithms.registry import ADVANTAGES, CREDITS, POLICY_LOSSES

    load_all()
    for key, allowed in _CHOICES.items():
        if _get(cfg, key) not in allowed:
            raise _fail(source, key, f"{_get(cfg, key)!r} is not one of {list(allowed)}")
    a, t, r = cfg.algorithm, cfg.trainer, cfg.rollout
    if a.advantage not in ADVANTAGES:
        raise _fail(source, "algorithm.advantage", f"{a.advantage!r} is not one of {sorted(ADVANTAGES)}")
    if a.policy_loss not in POLICY_LOSSES:
        raise _fail(source, "algorithm.policy_loss", f"{a.policy_loss!r} is not one of {sorted(POLICY_LOSSES)}")
    from rl.algorithms.aggregation import AGGREGATIONS

    if a.aggregation not in AGGREGATIONS:
        raise _fail(source, "algorithm.aggregation", f"{a.aggregation!r} is not one of {sorted(AGGREGATIONS)}")
    for name in a.credit:
        if name not in CREDITS:
            raise _fail(source, "algorithm.credit", f"{name!r} is not one of {sorted(CREDITS)}")
    if r.n < 1:
        raise _fail(source, "rollout.n", "must be >= 1")
    if a.advantage in ("grpo", "dr_grpo", "rloo") and r.n < 2:
        raise _fail(source, "rollout.n", f"group-relative advantage {a.advantage!r} needs a group of at least 2")
    rows = t.prompts_per_step * r.n
    if rows % a.mini_batches:
        raise _fail(source, "algorithm.mini_batches",
                    f"rollout batch of {rows} rows (trainer.prompts_per_step * rollout.n) is not divisible by {a.mini_batches}")
    # micro_batch_size is an upper bound: uneven micro-batches are aggregated exactly (rl/engine.py).
    if t.micro_batch_size < 1 or t.num_ranks < 1:
        raise _fail(source, "trainer.micro_batch_size" if t.micro_batch_size < 1 else "trainer.num_ranks", "must be >= 1")
    if rows // a.mini_batches < t.num_ranks:
        raise _fail(source, "trainer.num_ranks", f"{t.num_ranks} ranks but only {rows // a.mini_batches} rows per mini-batch")
    nodes = cfg.cluster.nodes
    if nodes < 1:
        raise _fail(source, "cluster.nodes", "must be >= 1")
    for key, count in (("trainer.num_ranks", t.num_ranks), ("rollout.num_workers", r.num_workers)):
        if count % nodes:
            raise _fail(source, key, f"{count} does not split evenly over cluster.nodes={nodes}")
    if not 0 <= t.zero_stage <= 3:
        raise _fail(source, "trainer.zero_stage", f"{t.zero_stage} is not in 0..3")
    if t.offload_params and t.zero_stage != 3:
        raise _fail(source, "trainer.offload_params", "parameter offload needs trainer.zero_stage=3")
    if t.offload_optimizer and t.zero_stage == 0:
        raise _fail(source, "trainer.offload_optimizer", "optimizer offload needs trainer.zero_stage >= 1")
    if r.max_tokens >= r.max_model_len:
        raise _fail(source, "rollout.max_tokens", f"{r.max_tokens} leaves no room for the prompt in rollout.max_model_len={r.max_model_len}")
    if cfg.data.max_prompt_tokens + r.max_tokens > r.max_model_len:
        raise _fail(source, "data.max_prompt_tokens",
                    f"{cfg.data.max_prompt_tokens} + rollout.max_tokens {r.max_tokens} exceeds rollout.max_model_len {r.max_model_len}")
    if not 0 < r.memory_fraction <= 1:
        raise _fail(source, "rollout.memory_fraction", "must be in (0, 1]")
    if a.eps_low < 0 or a.eps_high < 0:
        raise _fail(source, "algorithm.eps_low", "clip ranges must be >= 0")
    if a.dual_clip is not None and a.dual_clip <= 1:
        raise _fail(source, "algorithm.dual_clip", "must be > 1 (or null)")
    if a.policy_loss == "gspo" and a.credit:
        raise _fail(source, "algorithm.policy_loss",
                    "credit modules reweight tokens; with GSPO use policy_loss=gspo_token (arXiv 2507.18071)")
    if not cfg.rewards.functions and cfg.family == "grpo":  # the DPO family checks its own (validate_dpo)
        raise _fail(source, "rewards.functions", "at least one reward function is required")
    if cfg.eval.pass_k < 1:
        raise _fail(source, "eval.pass_k", "must be >= 1")
    if a.rmt.enable:
        if a.dynamic_sampling.enable:
            raise _fail(source, "algorithm.dynamic_sampling.enable",
                        "RMT draws its prompts from document positions once per step; turn one of them off")
        if a.rmt.context_tokens >= cfg.data.max_prompt_tokens:
            raise _fail(source, "algorithm.rmt.context_tokens",
                        f"{a.rmt.context_tokens} leaves no room for the instruction in "
                        f"data.max_prompt_tokens={cfg.data.max_prompt_tokens}")
    validate_dpo(cfg, source, _fail)
    _check_papers(a, source)


def _check_papers(a: AlgorithmConfig, source: str) -> None:
    """Warn about (or refuse, by ``algorithm.on_paper_mismatch``) combinations that depart from their paper."""
    from rl.algorithms.policy_loss import paper_mismatches

    if a.on_paper_mismatch == "ignore":
        return
    for keys, msg in paper_mismatches(a):
        if a.on_paper_mismatch == "error":
            raise _fail(source, keys[0], msg)
        logger.warning("%s: %s", source, msg)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Recipe file + dotted overrides -> validated ``Config`` (a typed OmegaConf object)."""
    source = str(path) if path else "<defaults>"
    schema = OmegaConf.structured(Config)
    try:
        merged = schema
        if path:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"{source}: recipe file not found")
            try:
                loaded = OmegaConf.load(p)
            except yaml.YAMLError as e:
                where = getattr(e, "problem_mark", None)
                line = f" line {where.line + 1}" if where is not None else ""
                raise ConfigError(f"{source}:{line}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
            if not isinstance(loaded, DictConfig):
                raise ConfigError(f"{source}: a recipe must be a YAML mapping of sections")
            merged = OmegaConf.merge(merged, loaded)
        if overrides:
            source_o = f"{source} (command-line overrides)"
            try:
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
            except OmegaConfBaseException as e:
                raise _omegaconf_error(e, source_o) from None
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"{source}: {missing[0]}: a required value is missing")
        cfg = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except ValueError as e:  # a section's own check (e.g. credit configs) names its key
        raise ConfigError(f"{source}: {e}") from None
    except OmegaConfBaseException as e:
        raise _omegaconf_error(e, source) from None
    validate(cfg, source)
    return cfg


def _omegaconf_error(e: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(e, "full_key", None) or "?"
    msg = str(e).splitlines()[0]
    if "Key" in msg and "not in" in msg:
        msg = "unknown key (check the spelling; `tokencredit config-keys` lists every key)"
    return ConfigError(f"{source}: {key}: {msg}")


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def describe(cls=Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every leaf: used by --help-config and the README."""
    import dataclasses

    rows = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type.endswith("Config") and f.name != "name"):
            sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
            if dataclasses.is_dataclass(sub):
                rows += describe(type(sub), key + ".")
                continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        rows.append((key, repr(default), f.metadata.get("help", "")))
    return rows
