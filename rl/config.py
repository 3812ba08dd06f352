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
from typing import Any, Literal

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rl.algorithms.preference_config import PreferenceConfig
from rl.credit.config import D3SConfig, RMTConfig, THRConfig, TWConfig
from rl.dpo_config import DPOLoopConfig, Family, validate_dpo
from rl.fields import check_fields, help_field, type_name, valid_text, walk_fields
from rl.preference_data_config import PreferenceDataConfig

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A recipe problem; the message names the key and the file."""


_h = help_field


def _names(kind: str):
    """``choices=`` of a field whose names live in a registry or table next to their implementations
    (rl/algorithms/registry.py and friends): read when the recipe is checked, so registered extensions count."""

    def names() -> list[str]:
        from rl.algorithms import load_all, registry

        load_all()
        if kind == "aggregation":
            from rl.algorithms.aggregation import AGGREGATIONS as table
        elif kind == "kl":
            from rl.algorithms.kl import ESTIMATORS as table
        else:
            table = {"advantage": registry.ADVANTAGES, "policy_loss": registry.POLICY_LOSSES,
                     "credit": registry.CREDITS}[kind]
        return sorted(table)

    return names


@dataclass
class LoraConfig:
    rank: int = _h(0, "LoRA rank; 0 = full fine-tuning. The reference model is the base with adapters off.", ge=0)
    alpha: int = _h(16, "LoRA alpha", ge=1)
    dropout: float = _h(0.0, "LoRA dropout", ge=0, lt=1)
    target_modules: list[str] = _h(["q_proj", "k_proj", "v_proj", "o_proj"], "modules that get adapters", min_len=1)


@dataclass
class ModelConfig:
    name_or_path: str = _h("smollm2-135m", "a bundled short name (see `tokencredit prepare-model`) or an HF "
                           "directory/hub id (checked before anything starts: rl/models.py check_model)", min_len=1)
    dtype: Literal["bfloat16", "float32"] = _h("bfloat16", "trainer/rollout dtype")
    gradient_checkpointing: bool = _h(False, "recompute activations in backward to save memory")
    lora: LoraConfig = field(default_factory=LoraConfig)


@dataclass
class TaskConfig:
    """Knobs of the built-in generated tasks (data.source: builtin:arithmetic | builtin:countdown)."""

    ops: list[Literal["add", "sub", "mul", "mixed"]] = _h(["add"], "arithmetic families (one drawn per problem)",
                                                         min_len=1)
    digits: int = _h(1, "digits per operand (arithmetic) / per number (countdown: at most 4)", ge=1, le=9)
    num_operands: int = _h(2, "operands per arithmetic problem; numbers per countdown problem (at most 6)", ge=2)
    num_train: int = _h(2000, "generated training prompts", ge=0)
    num_test: int = _h(200, "generated held-out prompts", ge=0)
    seed: int = _h(1234, "generation seed (train/test are disjoint)", ge=0)
    template: Literal["short", "cot"] = _h("short", "prompt wording (rl/tasks/arithmetic.py TEMPLATES)")


@dataclass
class DataConfig:
    source: str = _h("builtin:arithmetic", "builtin:<task>, a local json/jsonl/parquet/csv file or directory, or a hub "
                     "dataset name", min_len=1)
    train_split: str = _h("train", "split used for training", min_len=1)
    test_split: str = _h("test", "split used for evaluation ('' = none)", any_value=True)
    holdout_fraction: float = _h(0.0, "when the source has no data.test_split: hold out this fraction of the train split "
                                 "as the test split (fixed seeded choice); 0 = no eval set (warning)", ge=0, lt=1)
    subset: str | None = _h(None, "hub dataset configuration name (e.g. 'main' for openai/gsm8k)", any_value=True)
    prompt_field: str = _h("prompt", "column holding the prompt (a string or a list of chat messages)", min_len=1)
    answer_field: str = _h("answer", "column holding the reference answer passed to rewards as `answer` ('' = none)",
                           any_value=True)
    extra_columns: list[str] = _h([], "more columns passed to reward functions as keyword arguments", any_value=True)
    system_prompt: str | None = _h(None, "optional system message prepended to every prompt", any_value=True)
    apply_chat_template: bool = _h(True, "format prompts with the tokenizer's chat template")
    chat_template_fallback: Literal["error", "plain"] = _h("error", "when the tokenizer has no template: error | plain "
                                                           "(use the raw text)")
    max_prompt_tokens: int = _h(256, "prompts longer than this (after templating) are handled by on_long_prompt", ge=1)
    on_long_prompt: Literal["drop", "error"] = _h("drop", "drop (count and log) | error")
    shuffle: bool = _h(True, "shuffle the training prompts each epoch (seeded)")
    task: TaskConfig = field(default_factory=TaskConfig)


@dataclass
class RolloutConfig:
    backend: Literal["vllm", "hf"] = _h("vllm", "vllm | hf (transformers generate; debugging baseline)")
    num_workers: int = _h(1, "rollout workers (Ray actors, one engine each)", ge=1)
    n: int = _h(8, "completions per prompt (group size G)", ge=1)
    temperature: float = _h(1.0, "sampling temperature (also used for the trainer's entropy; 0 = greedy)", ge=0)
    top_p: float = _h(1.0, "nucleus sampling", gt=0, le=1)
    top_k: int = _h(-1, "top-k sampling, -1 = off", ge=1, allow=(-1,))
    max_tokens: int = _h(64, "max new tokens per completion", ge=1)
    stop: list[str] = _h([], "extra stop strings", any_value=True)
    max_model_len: int = _h(512, "engine context length (prompt + completion)", ge=2)
    memory_fraction: float = _h(0.25, "vLLM gpu_memory_utilization; on CPU the fraction of the NUMA node's RAM for "
                                "KV cache", gt=0, le=1)
    num_cpus_per_worker: float = _h(1.0, "Ray CPUs reserved per rollout worker", ge=0)
    num_gpus_per_worker: float = _h(0.0, "Ray GPUs per rollout worker (GPU clusters)", ge=0)
    seed: int = _h(0, "engine seed (per-request seeds are GPU-only in vLLM)", ge=0)
    sync_backend: Literal["auto", "cpu_shm", "nccl", "cuda_ipc"] = _h("auto", "weight sync (rollout/weight_sync)")
    sync_bucket_mb: int = _h(256, "weight sync bucket size", ge=1)
    sync_timeout_s: float = _h(120.0, "timeout of each weight-sync call", gt=0)
    generate_timeout_s: float = _h(900.0, "timeout of one generate call on a worker", gt=0)
    start_timeout_s: float = _h(600.0, "timeout for a worker's engine to start", gt=0)
    max_restarts: int = _h(2, "a rollout worker that dies or hangs is restarted, gets the current weights and its seeded "
                           "request is retried (the same samples), at most this many times per worker; 0 = stop at once",
                           ge=0)


@dataclass
class RewardFnConfig:
    name: str = _h(MISSING, "built-in name, module:function or path/to/file.py:function", min_len=1)
    weight: float = _h(1.0, "weight in the summed reward (negative: a penalty)", any_value=True)
    kwargs: dict[str, Any] = _h({}, "extra keyword arguments bound to the function", any_value=True)


@dataclass
class RewardsConfig:
    functions: list[RewardFnConfig] = _h([], "reward functions, summed with their weights")
    on_error: Literal["raise", "skip"] = _h("raise", "raise | skip (count the bad sample, give it reward 0 for that "
                                            "function)")
    timeout_s: float = _h(60.0, "per-call timeout of one reward function", gt=0)


@dataclass
class KLConfig:
    coef: float = _h(0.0, "beta; 0 turns the KL term (and the reference model) off", ge=0)
    estimator: str = _h("k3", "k1 | k3 (Schulman's unbiased, low-variance; rl/algorithms/kl.py)", choices=_names("kl"))
    mode: Literal["loss", "reward"] = _h("loss", "loss (added to the policy loss) | reward (subtracted from the reward)")


@dataclass
class DynamicSamplingConfig:
    enable: bool = _h(False, "DAPO dynamic sampling: drop groups without signal and generate more (arXiv 2503.14476)")
    max_rounds: int = _h(3, "extra generation rounds at most before training on a partial batch (an empty one skips "
                         "the step)", ge=0)
    criterion: Literal["accuracy", "reward_variance"] = _h("accuracy", "dropped groups: 'accuracy' keeps 0 < #correct < G by the accuracy label (DAPO) | "
                        "'reward_variance' keeps groups whose total reward is not constant")


@dataclass
class TISConfig:
    enable: bool = _h(False, "truncated importance sampling for sampler/trainer logprob mismatch")
    cap: float = _h(2.0, "clip of the per-token ratio pi_old / pi_sampler", gt=0)


@dataclass
class AlgorithmConfig:
    advantage: str = _h("grpo", "advantage estimator (rl/algorithms/advantage.py)", choices=_names("advantage"))
    std_normalize: bool = _h(True, "grpo: divide by the group std (Dr. GRPO turns this off)")
    std_eps: float = _h(1e-4, "added to the std (TRL 1e-4, verl 1e-6)", gt=0)
    credit: list[str] = _h([], "credit modules applied in order ([] = plain GRPO)", choices=_names("credit"))
    policy_loss: str = _h("clip", "policy loss (rl/algorithms/policy_loss.py)", choices=_names("policy_loss"))
    aggregation: str = _h("token_mean", "loss aggregation (rl/algorithms/aggregation.py)", choices=_names("aggregation"))
    eps_low: float = _h(0.2, "lower clip range (ratio >= 1 - eps_low)", ge=0, lt=1)
    eps_high: float = _h(0.2, "upper clip range (DAPO clip-higher: 0.28)", ge=0)
    dual_clip: float | None = _h(None, "dual-clip constant c > 1 for negative advantages (None = off)", gt=1)
    on_paper_mismatch: Literal["warn", "error", "ignore"] = _h("warn", "a method combined with settings its paper does not use (table: "
                                "rl/algorithms/policy_loss.PAPER_COMBINATIONS): warn (one log line) | error | ignore")
    epochs: int = _h(1, "passes over each rollout batch", ge=1)
    mini_batches: int = _h(1, "optimizer steps per epoch (the rollout batch is split this many ways)", ge=1)
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
    steps: int = _h(20, "rollout/update iterations", ge=1)
    prompts_per_step: int = _h(8, "prompts per rollout batch (rows = prompts_per_step * rollout.n)", ge=1)
    micro_batch_size: int = _h(8, "max rows per forward/backward on a rank", ge=1)
    lr: float = _h(1e-6, "peak learning rate", gt=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = _h("constant", "schedule after warmup")
    warmup_steps: int = _h(0, "optimizer steps of linear warmup", ge=0)
    weight_decay: float = _h(0.0, "AdamW weight decay", ge=0)
    betas: list[float] = _h([0.9, 0.999], "AdamW betas", ge=0, lt=1, min_len=2, max_len=2)
    adam_eps: float = _h(1e-8, "AdamW epsilon", gt=0)
    grad_clip: float = _h(1.0, "gradient norm clip (0 = off)", ge=0)
    zero_stage: int = _h(0, "DeepSpeed ZeRO stage", ge=0, le=3)
    offload_optimizer: bool = _h(False, "ZeRO optimizer-state offload to CPU")
    offload_params: bool = _h(False, "ZeRO-3 parameter offload to CPU")
    num_ranks: int = _h(1, "data-parallel trainer ranks (Ray actors)", ge=1)
    num_cpus_per_rank: float = _h(1.0, "Ray CPUs per trainer rank", ge=0)
    num_gpus_per_rank: float = _h(0.0, "Ray GPUs per trainer rank", ge=0)
    logprob_chunk: int = _h(4096, "tokens per chunk of the log-prob/entropy head pass: peak ~10 x chunk x vocab bytes "
                            "(never an [N,T,V] tensor)", ge=1)
    seed: int = _h(42, "seed of data order, sampling and init", ge=0)
    share_prompt_forward: bool = _h(True, "run each distinct prompt of a micro-batch once and give its keys/values to "
                                    "every completion of it (same values and gradients, less compute when G "
                                    "completions share a prompt; off under ZeRO-3 and gradient checkpointing: "
                                    "rl/prompt_sharing.py)")
    bf16_weights: bool = _h(False, "with model.dtype=bfloat16: keep the trained parameters in bf16 (DeepSpeed bf16; fp32 "
                            "master copy in the optimizer; gradients accumulate in bf16 at ZeRO-0, fp32 at ZeRO>=1). "
                            "False: fp32 parameters and gradients, bf16 compute by autocast (TRL's mixed precision: "
                            "small updates are not rounded away)")
    torch_threads: int = _h(0, "torch threads per trainer rank (0 = all cores on CPU, where rollout and training take "
                            "turns)", ge=0)
    on_nonfinite: Literal["skip", "stop"] = _h("skip", "a non-finite loss or gradient norm: the update is never applied "
                                               "(weights and optimizer state stay as they were); skip = log it and go on, "
                                               "stop = end the run with an error (the last checkpoint is intact)")


@dataclass
class ClusterConfig:
    address: str | None = _h(None, "Ray address; None starts a local Ray instance", any_value=True)
    num_cpus: int | None = _h(None, "CPUs of the local Ray instance (None = all)", ge=1)
    nodes: int = _h(1, "nodes the trainer ranks and rollout workers are spread over (one Ray placement-group bundle "
                    "per node: trainer.num_ranks/nodes ranks and rollout.num_workers/nodes workers on each)", ge=1)
    timeout_s: float = _h(600.0, "timeout of trainer-rank calls (start-up, a training step, sync, checkpoint)", gt=0)


@dataclass
class LoggingConfig:
    dir: str = _h("runs", "parent folder of run directories", min_len=1)
    run_name: str | None = _h(None, "run folder name (default: recipe name + time)", any_value=True)
    tensorboard: bool = _h(True, "write TensorBoard events")
    wandb_project: str | None = _h(None, "W&B project (None = off)", any_value=True)
    wandb_mode: Literal["online", "offline"] = _h("offline", "W&B mode")
    progress: bool = _h(True, "live progress bar on a terminal (off, or not a terminal: one line per step)")
    level: Literal["info", "debug", "warning"] = _h(
        "info", "console: info = phases, progress, summary (engine output only in RUN_DIR/logs/) | debug = also "
        "every engine's output, as `tokencredit train --verbose` | warning = only warnings, errors, the summary")
    save_batches: bool = _h(True, "save each step's tokens + credit for `tokencredit inspect`")


@dataclass
class CheckpointConfig:
    every: int = _h(0, "save every k steps (0 = only at the end)", ge=0)
    keep_last: int = _h(2, "keep the k newest checkpoints (0 = keep all)", ge=0)
    resume: str = _h("none", "none | auto (latest in the run dir) | a checkpoint path", min_len=1)
    export_hf: bool = _h(True, "export the final policy as an HF directory (safetensors + tokenizer)")
    export_hf_every: int = _h(0, "also export hf_model_step_N every k steps (0 = off; GRPO-family loop), e.g. to "
                              "evaluate intermediate policies from their saved weights", ge=0)
    save_final: bool = _h(True, "save a checkpoint after the last step")


@dataclass
class EvalConfig:
    every: int = _h(0, "evaluate every k steps (0 = only before and after training)", ge=0)
    num_prompts: int = _h(100, "held-out prompts used (no eval set: data.test_split='')", ge=1)
    pass_k: int = _h(4, "k of pass@k (sampled at rollout.temperature)", ge=1)
    at_start: bool = _h(True, "evaluate the base model before the first step")
    accuracy_reward: str | None = _h(None, "reward function (metric label) whose value decides correctness; None = the "
                                     "first", any_value=True)
    correct_threshold: float = _h(0.5, "a sample is correct when that function's value is >= this", any_value=True)


@dataclass
class Config:
    name: str = _h("run", "recipe name", min_len=1)
    description: str = _h("", "one line shown by `tokencredit recipes`", any_value=True)
    family: Family = _h("grpo", "training family: grpo (online RL, rl/loops/grpo.py) | dpo (preference losses: "
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


def _fail(source: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {msg}")


def validate(cfg: Config, source: str = "<config>") -> None:
    """Every field against its declared valid values (rl/fields.py), then the relations between fields;
    each error is one line naming the key(s) and the file."""
    try:
        check_fields(cfg)
        _section_checks(cfg)
    except ValueError as e:  # FieldError or a section's check(): one line naming the key(s)
        raise ConfigError(f"{source}: {e}") from None
    a, t, r = cfg.algorithm, cfg.trainer, cfg.rollout
    if cfg.data.source.startswith("builtin:"):
        from rl.tasks import check_task

        try:
            check_task(cfg.data.source.removeprefix("builtin:"), cfg.data.task)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
    if a.advantage in ("grpo", "dr_grpo", "rloo") and r.n < 2:
        raise _fail(source, "rollout.n", f"group-relative advantage {a.advantage!r} needs a group of at least 2")
    rows = t.prompts_per_step * r.n
    if rows % a.mini_batches:
        raise _fail(source, "algorithm.mini_batches",
                    f"rollout batch of {rows} rows (trainer.prompts_per_step * rollout.n) is not divisible by {a.mini_batches}")
    # micro_batch_size is an upper bound: uneven micro-batches are aggregated exactly (rl/engine.py).
    if rows // a.mini_batches < t.num_ranks:
        raise _fail(source, "trainer.num_ranks", f"{t.num_ranks} ranks but only {rows // a.mini_batches} rows per mini-batch")
    nodes = cfg.cluster.nodes
    for key, count in (("trainer.num_ranks", t.num_ranks), ("rollout.num_workers", r.num_workers)):
        if count % nodes:
            raise _fail(source, key, f"{count} does not split evenly over cluster.nodes={nodes}")
    if t.offload_params and t.zero_stage != 3:
        raise _fail(source, "trainer.offload_params", "parameter offload needs trainer.zero_stage=3")
    if t.offload_optimizer and t.zero_stage == 0:
        raise _fail(source, "trainer.offload_optimizer", "optimizer offload needs trainer.zero_stage >= 1")
    if r.max_tokens >= r.max_model_len:
        raise _fail(source, "rollout.max_tokens", f"{r.max_tokens} leaves no room for the prompt in rollout.max_model_len={r.max_model_len}")
    if cfg.data.max_prompt_tokens + r.max_tokens > r.max_model_len:
        raise _fail(source, "data.max_prompt_tokens",
                    f"{cfg.data.max_prompt_tokens} + rollout.max_tokens {r.max_tokens} exceeds rollout.max_model_len {r.max_model_len}")
    if a.policy_loss == "gspo" and a.credit:
        raise _fail(source, "algorithm.policy_loss",
                    "credit modules reweight tokens; with GSPO use policy_loss=gspo_token (arXiv 2507.18071)")
    if not cfg.rewards.functions and cfg.family == "grpo":  # the DPO family checks its own (validate_dpo)
        raise _fail(source, "rewards.functions", "at least one reward function is required")
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


def _section_checks(obj: Any, prefix: str = "") -> None:
    """Run ``check(key)`` of every section that has one (the relations between its own fields), so a newly
    mounted section's checks run with no change here."""
    import dataclasses

    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            key = f"{prefix}.{f.name}" if prefix else f.name
            if callable(getattr(value, "check", None)):
                value.check(key)
            _section_checks(value, key)


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
    raw: list[DictConfig] = []  # what the file and the overrides hold, to name the key of a bad list item
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
            raw.append(loaded)
            merged = OmegaConf.merge(merged, loaded)
        if overrides:
            source_o = f"{source} (command-line overrides)"
            try:
                raw.append(OmegaConf.from_dotlist(list(overrides)))
                merged = OmegaConf.merge(merged, raw[-1])
            except OmegaConfBaseException as e:
                raise _omegaconf_error(e, source_o, raw[-1:]) from None
            except yaml.YAMLError as e:  # a value that is not valid YAML (an unclosed [ or {)
                bad = next((o for o in overrides if _bad_yaml(o)), "?")
                raise ConfigError(f"{source_o}: {bad.split('=', 1)[0]}: {bad.partition('=')[2]!r} is not a valid "
                                  f"YAML value ({getattr(e, 'problem', None) or 'parse error'}); quote the whole "
                                  "override for the shell, e.g. 'key=[a, b]'") from None
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(f"{source}: {missing[0]}: a required value is missing")
        cfg = OmegaConf.to_object(merged)
    except ConfigError:
        raise
    except OmegaConfBaseException as e:  # before ValueError: OmegaConf's ValidationError is one too
        raise _omegaconf_error(e, source, raw) from None
    except ValueError as e:  # a section's own check (e.g. credit configs) names its key
        raise ConfigError(f"{source}: {e}") from None
    validate(cfg, source)
    return cfg


def _bad_yaml(override: str) -> bool:
    try:
        yaml.safe_load(override.partition("=")[2])
        return False
    except yaml.YAMLError:
        return True


def _omegaconf_error(e: OmegaConfBaseException, source: str, raw: list[DictConfig] = ()) -> ConfigError:
    key = _list_item_key(e, raw) or getattr(e, "full_key", None) or "?"
    return ConfigError(f"{source}: {key}: {omegaconf_message(e)}")


def _list_item_key(e: OmegaConfBaseException, raw: list[DictConfig]) -> str | None:
    """OmegaConf names a bad field of a list item (``rewards.functions[1].weight``) only by its own name:
    find the list and the item it came from."""
    import dataclasses

    from rl.fields import item_type, unwrap

    for key, _f, hint in walk_fields(Config):
        item = item_type(unwrap(hint)[0])
        if item is None or item is not getattr(e, "object_type", None) or not dataclasses.is_dataclass(item):
            continue
        for conf in raw:
            seq = OmegaConf.select(conf, key, default=None)
            for i, element in enumerate(seq if isinstance(seq, ListConfig) else []):
                try:
                    OmegaConf.merge(OmegaConf.structured(item), element)
                except OmegaConfBaseException as inner:
                    return f"{key}[{i}].{getattr(inner, 'full_key', None) or getattr(e, 'full_key', '?')}"
    return None


def omegaconf_message(e: OmegaConfBaseException) -> str:
    """OmegaConf's first line, in this project's words where it has some."""
    import re

    msg = str(e).splitlines()[0]
    if "Key" in msg and "not in" in msg:
        return "unknown key (check the spelling; `tokencredit config-keys` lists every key)"
    m = re.fullmatch(r"Invalid value (.*), expected one of (\[.*\])", msg)  # a Literal field
    if m:
        return f"{m.group(1)} is not one of {m.group(2)}"
    value = getattr(e, "value", None)
    if "is not a ListConfig" in msg:
        return f"{value!r} is not a list (write [a, b])"
    if msg.startswith("Cannot assign") and "Dict[" in msg:
        return f"{value!r} is not a mapping (write {{key: value}})"
    return msg


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def describe(cls=Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type and valid values, default, help) of every leaf: `tokencredit config-keys` and the README."""
    import dataclasses

    rows = []
    for key, f, hint in walk_fields(cls, prefix):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        rows.append((key, f"{type_name(hint)}: {valid_text(f.metadata, hint)}", repr(default),
                     f.metadata.get("help", "")))
    return rows
