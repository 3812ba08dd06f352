"""Build everything a run needs from the resolved config: run folder, data, rewards, Ray actors."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from rl.config import Config, to_yaml

log = logging.getLogger(__name__)


@dataclass
class Components:
    run_dir: Path
    model_path: str
    tokenizer: object
    pad_id: int
    train_set: object
    test_set: object | None
    scorer: object
    sampler: object
    trainers: object
    pool: object
    midtrain: object | None = None  # RMT: documents -> per-step prompts (rl/midtrain.py)
    placement: object | None = None

    def close(self) -> None:
        for part in (self.trainers, self.pool, self.placement):
            try:
                if part is not None:
                    part.remove() if part is self.placement else part.shutdown()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        from rl.log import detach_run_log

        detach_run_log()  # close logs/driver.log; later Ray actors of this process no longer log into this run


def make_run_dir(cfg: Config) -> Path:
    """``logging.dir/run_name``; a fresh (non-resuming) run never reuses a folder that has data."""
    base = Path(cfg.logging.dir) / (cfg.logging.run_name or cfg.name)
    if cfg.checkpoint.resume != "none" or not base.exists() or not any(base.iterdir()):
        return base
    i = 1
    while (base.parent / f"{base.name}-{i}").exists():
        i += 1
    return base.parent / f"{base.name}-{i}"


def init_ray(cfg: Config) -> None:
    import ray

    from rl.log import adopt_library_loggers, ray_runtime_env

    if ray.is_initialized():
        return
    adopt_library_loggers()  # Ray's own driver messages go to logs/driver.log (errors also to the console)
    env = ray_runtime_env()  # tells every actor to write its output to the run folder's logs/ (rollout/logs.py)
    extra = {"runtime_env": env} if env else {}
    if cfg.cluster.address:
        from rl.cluster_wait import use_token_auth_if_present

        use_token_auth_if_present()
        ray.init(address=cfg.cluster.address, log_to_driver=True, **extra)
    else:
        need = cfg.trainer.num_ranks * cfg.trainer.num_cpus_per_rank + cfg.rollout.num_workers * cfg.rollout.num_cpus_per_worker
        cpus = cfg.cluster.num_cpus or max(int(need + 0.999), os.cpu_count() or 1)
        from rollout.local_ray import init_local_ray

        init_local_ray(cpus, **extra)  # every Ray port on 127.0.0.1, no dashboard (rollout/local_ray.py)
    from rl.faults import after_ray_init

    after_ray_init()  # the run's SIGINT / SIGTERM handling again, over the one ray.init set (rl/faults.py)


def build_components(cfg: Config, recipe_path: str | None) -> Components:
    from transformers import AutoTokenizer

    from rewards import RewardScorer
    from rl.data import load_eval_prompts, load_train_prompts
    from rl.log import attach_run_log
    from rl.models import resolve_model
    from rl.placement import make_placement
    from rl.sampler import PromptSampler
    from rl.trainer_group import TrainerGroup

    run_dir = make_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    attach_run_log(run_dir)  # "run folder: ..."; logs/driver.log, and each Ray actor's logs/NAME.log
    model_path = resolve_model(cfg.model.name_or_path)
    log.info("model: %s", describe_model(cfg, model_path))
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    midtrain = None
    if cfg.algorithm.rmt.enable:
        midtrain, train_set, test_set = _midtraining(cfg, tokenizer, pad_id), None, None
        sampler = midtrain.sampler
    else:
        train_set = load_train_prompts(cfg.data, tokenizer)
        if not train_set.rows:
            raise ValueError(f"data.source: {cfg.data.source} split {cfg.data.train_split!r} has no usable prompts")
        test_set = load_eval_prompts(cfg.data, tokenizer, limit=cfg.eval.num_prompts)
        sampler = PromptSampler(len(train_set.rows), cfg.trainer.prompts_per_step, cfg.trainer.seed, cfg.data.shuffle)
        log.info("data: %d training prompts, %s held-out (%s)", len(train_set.rows),
                 len(test_set.rows) if test_set is not None else "no", cfg.data.source)
    base_dir = str(Path(recipe_path).resolve().parent) if recipe_path else None
    scorer = RewardScorer([{"name": f.name, "weight": f.weight, "kwargs": dict(f.kwargs)} for f in cfg.rewards.functions],
                          on_error=cfg.rewards.on_error, timeout_s=cfg.rewards.timeout_s, base_dir=base_dir)
    init_ray(cfg)
    a = cfg.algorithm
    total_opt_steps = cfg.trainer.steps * a.epochs * a.mini_batches
    placement = make_placement(cfg, cfg.cluster.timeout_s)
    trainers = pool = None
    try:
        with starting(describe_trainer(cfg)):
            trainers = TrainerGroup(cfg, model_path, total_opt_steps, placement)
        with starting(describe_rollout(cfg)):
            pool = make_pool(cfg, model_path, placement)
        trainers.attach_rollout(pool.sync_target())  # weights go rank 0 -> workers, not through here
        # a restarted worker (rollout.max_restarts) gets rank 0's current weights before its request is retried
        pool.on_restart = lambda p: trainers.resync_rollout(p.sync_target())
    except BaseException:
        for part in (trainers, pool):
            if part is not None:
                part.shutdown()
        placement.remove()
        raise
    return Components(run_dir, model_path, tokenizer, pad_id, train_set, test_set, scorer, sampler, trainers, pool,
                      midtrain, placement)


class starting:
    """``with starting("the trainer: 1 DeepSpeed rank"):`` logs "starting ..." and then "... ready (24 s)"."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        log.info("starting %s ...", self.what)
        self.t0 = time.monotonic()

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            log.info("%s ready (%.0f s)", self.what.split(":")[0], time.monotonic() - self.t0)


def describe_model(cfg: Config, model_path: str) -> str:
    where = "" if model_path == cfg.model.name_or_path else f" ({model_path})"
    return f"{cfg.model.name_or_path}{where}, {cfg.model.dtype}"


def describe_trainer(cfg: Config) -> str:
    t = cfg.trainer
    device = "GPU" if t.num_gpus_per_rank > 0 else "CPU"
    ranks = f"{t.num_ranks} DeepSpeed rank{'s' if t.num_ranks > 1 else ''}"
    return f"the trainer: {ranks} (ZeRO stage {t.zero_stage}, {device})"


def describe_rollout(cfg: Config) -> str:
    r = cfg.rollout
    device = "GPU" if r.num_gpus_per_worker > 0 else "CPU"
    engine = {"vllm": "vLLM", "hf": "transformers"}.get(r.backend, r.backend)
    return f"the rollout engines: {r.num_workers} {engine} worker{'s' if r.num_workers > 1 else ''} ({device})"


def make_pool(cfg: Config, model_path: str, placement):
    """The rollout workers of ``rollout.*`` (vLLM or HF engines as Ray actors) in ``placement``."""
    from rollout.pool import RolloutPool

    r = cfg.rollout
    return RolloutPool(model_path, num_workers=r.num_workers, backend=r.backend, dtype=cfg.model.dtype,
                       max_model_len=r.max_model_len, memory_fraction=r.memory_fraction, seed=r.seed,
                       num_cpus_per_worker=r.num_cpus_per_worker, num_gpus_per_worker=r.num_gpus_per_worker,
                       sync_backend=r.sync_backend, sync_bucket_mb=r.sync_bucket_mb,
                       sync_timeout_s=r.sync_timeout_s, generate_timeout_s=r.generate_timeout_s,
                       start_timeout_s=r.start_timeout_s, placement=placement.worker, max_restarts=r.max_restarts)


def _midtraining(cfg: Config, tokenizer, pad_id: int):
    from rl.data import MissingSplitError
    from rl.midtrain import MidTraining, load_documents
    from rl.sampler import PromptSampler

    train = load_documents(cfg, tokenizer, cfg.data.train_split)
    test = None
    if cfg.data.test_split:
        try:
            test = load_documents(cfg, tokenizer, cfg.data.test_split)
        except MissingSplitError as e:
            log.warning("%s; no evaluation set", e)
    sampler = PromptSampler(len(train.ids), cfg.algorithm.rmt.docs_per_step, cfg.trainer.seed, cfg.data.shuffle)
    return MidTraining(cfg, tokenizer, pad_id, sampler, train, test)
