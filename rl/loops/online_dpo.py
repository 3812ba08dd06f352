"""The online DPO-family loop: sample -> reward -> pair -> train on the ranks -> sync -> log / eval / checkpoint.

As the GRPO loop (rl/loops/grpo.py), but the rollout batch becomes pairs: each step the rollout workers sample
``rollout.n`` responses for each of ``trainer.prompts_per_step`` prompts from the current policy, the reward
functions score them (a sample is correct when ``eval.accuracy_reward`` >= ``eval.correct_threshold``), and
rl/pairs.py picks at most one (chosen, rejected) pair per prompt by ``dpo.pair_rule`` (default: a correct vs an
incorrect sample; cdpo: the most frequent correct vs incorrect answer, arXiv 2411.19943), seeded per step and
prompt. The pairs are trained on with ``preference.loss`` (DPO 2305.18290 and its token-level variants, with
token weights: TRL's online DPO has none), then the weights go from trainer rank 0 to the rollout workers.
Prompts without a pair (all correct, all wrong, blank or truncated samples) are skipped and counted; a step
without any pair makes no update. The sampled token ids are trained as they are (no re-tokenization).
"""

from __future__ import annotations

import logging
from pathlib import Path

from rl import checkpoint as ckpt
from rl.config import Config, to_yaml
from rl.tracking import Timer, Tracker, write_report

log = logging.getLogger(__name__)


def select_online_pairs(got, cfg: Config, step: int) -> tuple[list, dict[str, float]]:
    """(PairRows of this step's sampled groups, pair metrics). ``got``: rl/collect.py ``Collected``."""
    from rl.build_pairs import final_answer
    from rl.pairs import Sample, select_pairs
    from rl.preference_data import PairRow

    groups, offset = [], 0
    for comps in got.groups:
        samples = []
        for k, c in enumerate(comps):
            ok = got.correct[offset + k]
            if c.token_ids and c.text.strip() and (cfg.dpo.keep_truncated or c.finish_reason != "length"):
                samples.append((Sample(c.text, list(c.token_ids), ok, final_answer(c.text)), c))
        offset += len(comps)
        groups.append(samples)
    seed = cfg.dpo.build_seed * 1_000_003 + step  # per step; rl/pairs.py seeds each prompt from it
    picked = select_pairs([[s for s, _ in g] for g in groups], cfg.dpo.pair_rule, seed)
    rows = []
    for i, (pair, g) in enumerate(zip(picked, groups)):
        if pair is None:
            continue
        (chosen, c_comp), (rejected, r_comp) = g[pair.chosen], g[pair.rejected]
        if chosen.token_ids == rejected.token_ids:
            continue
        rows.append(PairRow(i, "", chosen.text, rejected.text, list(got.prompt_ids[i]), chosen.token_ids,
                            rejected.token_ids, chosen_truncated=c_comp.finish_reason == "length",
                            rejected_truncated=r_comp.finish_reason == "length"))
    n = max(len(groups), 1)
    return rows, {"batch/pairs_selected": float(len(rows)), "batch/prompts_with_pair": len(rows) / n,
                  "batch/candidates": float(sum(len(g) for g in groups))}


def train(cfg: Config, recipe_path: str | None = None) -> Path:
    from rl.collect import collect
    from rl.evaluate import evaluate
    from rl.loops.dpo import resolve_guidance
    from rl.objectives.preference import PairBatcher
    from rl.preference_data import collate_pairs
    from rl.setup import Components, build_components

    resolve_guidance(cfg)
    c: Components = build_components(cfg, recipe_path)
    run_dir, trainers, pool, tracker = c.run_dir, c.trainers, c.pool, None
    batcher = PairBatcher(c.tokenizer, cfg.preference)
    try:
        steps, start = cfg.trainer.steps, 0
        resume_from = ckpt.resolve_resume(cfg.checkpoint.resume, run_dir)
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from, trainers)
            c.sampler.load_state_dict(state["sampler"])
            start = state["step"]
            log.info("resumed from %s at step %d", resume_from, start)
        trainers.sync_weights(start)  # rollout engines = trainer weights
        tracker = Tracker(run_dir, cfg, steps, start)
        if cfg.eval.at_start and start == 0 and c.test_set is not None:
            tracker.log(0, evaluate(pool, c.test_set, c.scorer, cfg, 0, steps))

        for step in range(start, steps):
            timer = Timer()
            trainers.received_bytes = 0
            with timer("generation"):
                got = collect(pool, c.train_set, c.sampler, c.scorer, cfg, step, steps)
            metrics = dict(got.metrics)
            rows, pair_metrics = select_online_pairs(got, cfg, step) if not got.skipped else ([], {})
            metrics.update(pair_metrics)
            if rows:
                with timer("train"):
                    metrics.update(trainers.train_pairs(batcher(collate_pairs(rows, c.pad_id)), step))
                with timer("sync"):
                    metrics["timing/sync_transfer"] = trainers.sync_weights(step + 1)
            else:
                log.warning("step %d: no prompt gave a (correct, incorrect) pair; no update", step + 1)
            metrics["batch/skipped"] = float(not rows)
            metrics.update(timer.pop())
            metrics["driver/received_bytes"] = float(trainers.received_bytes)
            is_last = step + 1 == steps
            if ((cfg.eval.every and (step + 1) % cfg.eval.every == 0) or is_last) and c.test_set is not None:
                metrics.update(evaluate(pool, c.test_set, c.scorer, cfg, step + 1, steps))
            tracker.log(step + 1, metrics)
            tracker.progress(step + 1, metrics)
            if (cfg.checkpoint.every and (step + 1) % cfg.checkpoint.every == 0) or (is_last and cfg.checkpoint.save_final):
                ckpt.save_checkpoint(run_dir, step + 1, trainers, {"sampler": c.sampler.state_dict()},
                                     to_yaml(cfg), cfg.checkpoint.keep_last)

        if cfg.checkpoint.export_hf and start < steps:
            trainers.export_hf(str(run_dir / "hf_model"), c.model_path)
        return run_dir
    finally:
        if tracker is not None:
            tracker.close()
        write_report(run_dir, f"{cfg.name}: {run_dir.name}")
        c.close()
