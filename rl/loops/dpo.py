"""The offline DPO-family loop: epochs over a fixed set of pairs -> train on the ranks -> eval / checkpoint.

Losses: ``preference.loss`` = dpo (arXiv 2305.18290), ipo (2310.12036), tdpo1/tdpo2 (2404.11999), tgdpo
(2506.14574), cdpo (2411.19943), treg (2412.02685); the kernel S(y) = sum_t w_t (log pi_theta - log pi_ref)(y_t)
and every method's z / w are in rl/algorithms/preference.py, what each needs from the models in
rl/objectives/preference.py.

The driver holds pair token ids and scalars only. Each step draws ``dpo.pairs_per_step`` pairs (seeded order,
a new permutation each epoch; the order's position is checkpointed, so a resumed run draws what the
uninterrupted one would), sends each rank its whole pairs, and the ranks run the reference (and guidance /
T-REG) passes and the update. With ``dpo.reference_logp=precompute`` the reference log-probs are computed
once per pair before the first step and travel with each batch (stored per response token). Held-out pairs
give ``eval/reward_accuracy`` (chosen implicit reward beta * sum_t Delta_t above the rejected one),
``eval/reward_margin`` and ``eval/dpo_loss``; with ``dpo.eval_generation`` the rollout workers also measure
greedy accuracy and pass@k on ``data.test_split``. ``preference_data.source: builtin:self`` first builds the
pairs from the model's own samples (rl/pair_source.py).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from rl import checkpoint as ckpt
from rl.config import Config, to_yaml
from rl.tracking import Timer, Tracker, write_report

log = logging.getLogger(__name__)


@dataclass
class DPOComponents:
    run_dir: Path
    model_path: str
    tokenizer: object
    pairs: object  # PairSet
    eval_pairs: object | None  # PairSet
    steps: int
    trainers: object
    batcher: object  # PairBatcher
    pool: object | None = None  # rollout workers: builtin:self pairs, dpo.eval_generation (online: always)
    scorer: object | None = None
    test_set: object | None = None  # prompts for greedy accuracy / pass@k
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


def resolve_guidance(cfg: Config) -> None:
    """TGDPO's guidance model: a bundled name or a folder -> a local HF folder every rank can load."""
    if cfg.preference.loss == "tgdpo" and cfg.dpo.guidance_model:
        from rl.models import BUNDLED, resolve_model

        name = cfg.dpo.guidance_model
        if name not in BUNDLED and not (Path(name) / "config.json").is_file():
            raise FileNotFoundError(f"dpo.guidance_model: {name} is not a model folder (no config.json) nor a "
                                    f"bundled model {sorted(BUNDLED)}; TGDPO's pi_hat is a DPO-trained policy: "
                                    f"train one first (`tokencredit train dpo` exports RUN/hf_model)")
        cfg.dpo.guidance_model = resolve_model(name)


def load_pair_sets(cfg: Config, tokenizer, source_cfg):
    """(train pairs, held-out pairs or None) of ``source_cfg`` (``preference_data`` with builtin:self resolved)."""
    from rl.data import MissingSplitError
    from rl.preference_data import load_pairs

    pairs = load_pairs(source_cfg, tokenizer, section="preference_data")
    held_out = None
    if cfg.dpo.eval_pairs and source_cfg.test_split:
        try:
            held_out = load_pairs(source_cfg, tokenizer, split=source_cfg.test_split, limit=cfg.dpo.eval_pairs,
                                  section="preference_data", allow_empty=True)
        except MissingSplitError as e:
            log.warning("%s; no held-out pairs (set preference_data.holdout_fraction > 0 to hold out part of the "
                        "train split)", e)
    if held_out is not None and not len(held_out):
        held_out = None
    return pairs, held_out


def build_dpo_components(cfg: Config, recipe_path: str | None) -> DPOComponents:
    from transformers import AutoTokenizer

    from rewards import RewardScorer
    from rl.data import load_eval_prompts
    from rl.dpo_config import BUILTIN_CRITICAL, BUILTIN_SELF, needs_rollout
    from rl.log import attach_run_log
    from rl.models import resolve_model
    from rl.objectives.preference import PairBatcher
    from rl.pair_source import ensure_builtin_pairs, ensure_critical_pairs, resolved_data_config
    from rl.placement import make_placement
    from rl.setup import describe_trainer, init_ray, make_pool, make_run_dir, starting
    from rl.trainer_group import TrainerGroup

    run_dir = make_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    attach_run_log(run_dir)  # "run folder: ..."; logs/driver.log, and each Ray actor's logs/NAME.log
    model_path = resolve_model(cfg.model.name_or_path)
    resolve_guidance(cfg)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    init_ray(cfg)
    placement = make_placement(cfg, cfg.cluster.timeout_s)
    pool = scorer = trainers = None
    try:
        if needs_rollout(cfg):
            base_dir = str(Path(recipe_path).resolve().parent) if recipe_path else None
            scorer = RewardScorer([{"name": f.name, "weight": f.weight, "kwargs": dict(f.kwargs)}
                                   for f in cfg.rewards.functions],
                                  on_error=cfg.rewards.on_error, timeout_s=cfg.rewards.timeout_s, base_dir=base_dir)
        source = cfg.preference_data
        if source.source == BUILTIN_SELF:
            from rl.pair_source import builtin_pairs_path

            if not builtin_pairs_path(cfg, model_path).is_file() or cfg.dpo.eval_generation:
                pool = make_pool(cfg, model_path, placement)
            source = resolved_data_config(cfg, ensure_builtin_pairs(cfg, model_path, pool, scorer, tokenizer))
        elif source.source == BUILTIN_CRITICAL:  # its own workers, shut down before its SFT stages
            path = ensure_critical_pairs(cfg, model_path, lambda p: make_pool(cfg, p, placement))
            source = resolved_data_config(cfg, path)
            if cfg.dpo.eval_generation:
                pool = make_pool(cfg, model_path, placement)
        elif cfg.dpo.eval_generation:
            pool = make_pool(cfg, model_path, placement)
        pairs, held_out = load_pair_sets(cfg, tokenizer, source)
        test_set = load_eval_prompts(cfg.data, tokenizer, limit=cfg.eval.num_prompts) if cfg.dpo.eval_generation \
            else None
        if pool is not None and not cfg.dpo.eval_generation:  # it only built the pairs
            pool.shutdown()
            pool = None
        d = cfg.dpo
        steps = math.ceil(d.epochs * len(pairs) / d.pairs_per_step) if d.epochs > 0 else cfg.trainer.steps
        with starting(describe_trainer(cfg)):
            trainers = TrainerGroup(cfg, model_path, steps, placement)
        if pool is not None:
            trainers.attach_rollout(pool.sync_target())
    except BaseException:
        for part in (trainers, pool):
            if part is not None:
                part.shutdown()
        placement.remove()
        raise
    log.info("%d training pairs (%s), %s held-out pairs, %d steps of %d pairs", len(pairs), pairs.source,
             len(held_out) if held_out is not None else "no", steps, cfg.dpo.pairs_per_step)
    return DPOComponents(run_dir, model_path, tokenizer, pairs, held_out, steps, trainers,
                         PairBatcher(tokenizer, cfg.preference), pool, scorer, test_set, placement)


def precompute_reference(trainers, pairs, batcher, chunk_pairs: int = 64):
    """``dpo.reference_logp=precompute``: log pi_ref of every response token of every pair, once (rl/objectives/
    preference.py ``RefLogpStore``), computed on the ranks in chunks of whole pairs."""
    from rl.objectives.preference import RefLogpStore, blocked_order

    store = RefLogpStore()
    for start in range(0, len(pairs), chunk_pairs):
        positions = list(range(start, min(start + chunk_pairs, len(pairs))))
        collated = pairs.collate(positions)
        ref = trainers.reference_logp(batcher(collated))  # interleaved rows
        store.add(positions, ref[blocked_order(ref.shape[0])], collated["completion_mask"])
    return store


def pair_batch(c: DPOComponents, pairs, positions: list[int], store=None) -> dict:
    collated = pairs.collate(positions)
    ref = store.batch(positions, collated["completion_ids"].shape[1]) if store is not None else None
    return c.batcher(collated, ref)


def evaluate_pairs(cfg: Config, c: DPOComponents, step: int, held_out_store=None) -> dict[str, float]:
    """Held-out implicit-reward metrics (+ greedy accuracy / pass@k with dpo.eval_generation)."""
    out: dict[str, float] = {}
    if c.eval_pairs is not None:
        out.update(c.trainers.eval_pairs(pair_batch(c, c.eval_pairs, list(range(len(c.eval_pairs))), held_out_store)))
    if c.pool is not None and c.test_set is not None:
        from rl.evaluate import evaluate

        c.trainers.sync_weights(step)  # the rollout engines evaluate the current policy
        out.update(evaluate(c.pool, c.test_set, c.scorer, cfg, step, c.steps))
    return out


def train(cfg: Config, recipe_path: str | None = None) -> Path:
    from rl.sampler import PromptSampler

    c = build_dpo_components(cfg, recipe_path)
    run_dir, trainers, tracker, steps = c.run_dir, c.trainers, None, c.steps
    try:
        sampler = PromptSampler(len(c.pairs), cfg.dpo.pairs_per_step, cfg.trainer.seed, cfg.dpo.shuffle)
        start = 0
        resume_from = ckpt.resolve_resume(cfg.checkpoint.resume, run_dir)
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from, trainers)
            sampler.load_state_dict(state["sampler"])
            start = state["step"]
            log.info("resumed from %s at step %d", resume_from, start)
        store = held_out_store = None
        if cfg.dpo.reference_logp == "precompute":  # the reference is frozen: the same values on a resume
            store = precompute_reference(trainers, c.pairs, c.batcher)
            if c.eval_pairs is not None:
                held_out_store = precompute_reference(trainers, c.eval_pairs, c.batcher)
            log.info("reference log-probs precomputed for %d pairs", len(c.pairs))
        tracker = Tracker(run_dir, cfg, steps, start)
        if cfg.eval.at_start and start == 0:
            tracker.log(0, {**c.pairs.metrics(), **evaluate_pairs(cfg, c, 0, held_out_store)})

        for step in range(start, steps):
            timer, metrics = Timer(), {}
            trainers.received_bytes = 0
            positions = sampler.next_batch()
            with timer("train"):
                metrics.update(trainers.train_pairs(pair_batch(c, c.pairs, positions, store), step))
            metrics.update(timer.pop())
            metrics["data/epoch"] = sampler.epoch + sampler.position / len(c.pairs)
            metrics["driver/received_bytes"] = float(trainers.received_bytes)
            is_last = step + 1 == steps
            if (cfg.eval.every and (step + 1) % cfg.eval.every == 0) or is_last:
                metrics.update(evaluate_pairs(cfg, c, step + 1, held_out_store))
            tracker.log(step + 1, metrics)
            tracker.progress(step + 1, metrics)
            if (cfg.checkpoint.every and (step + 1) % cfg.checkpoint.every == 0) or (is_last and cfg.checkpoint.save_final):
                ckpt.save_checkpoint(run_dir, step + 1, trainers, {"sampler": sampler.state_dict()}, to_yaml(cfg),
                                     cfg.checkpoint.keep_last)

        if cfg.checkpoint.export_hf and start < steps:
            trainers.export_hf(str(run_dir / "hf_model"), c.model_path)
        return run_dir
    finally:
        if tracker is not None:
            tracker.close()
        write_report(run_dir, f"{cfg.name}: {run_dir.name}")
        c.close()
