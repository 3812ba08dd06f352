"""The driver: generate -> reward -> advantages -> credit -> update -> sync -> log/eval/checkpoint.

Everything runs on one Ray instance (local by default, ``cluster.address`` for a
cluster); the trainer ranks and rollout workers are Ray actors, this process only
orchestrates and runs the cheap whole-batch pieces (advantages, credit chain).
"""

from __future__ import annotations

from pathlib import Path

import torch

from rl import checkpoint as ckpt
from rl.batch import build_experience, train_tensors
from rl.collect import collect
from rl.config import Config, to_yaml
from rl.credit.chain import build_chain
from rl.credit_step import assign_credit
from rl.evaluate import evaluate
from rl.inspect_dump import save_batch
from rl.setup import Components, build_components
from rl.tracking import Timer, Tracker, write_report


def train(cfg: Config, recipe_path: str | None = None) -> Path:
    c: Components = build_components(cfg, recipe_path)
    run_dir, trainers, pool, tracker = c.run_dir, c.trainers, c.pool, None
    try:
        chain = build_chain(list(cfg.algorithm.credit), cfg.algorithm)
        steps, start = cfg.trainer.steps, 0
        resume_from = ckpt.resolve_resume(cfg.checkpoint.resume, run_dir)
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from, trainers)
            c.sampler.load_state_dict(state["sampler"])
            start = state["step"]
            print(f"[tokencredit] resumed from {resume_from} at step {start}", flush=True)
        pool.sync_weights(trainers.named_weights(), start)  # rollout engines = trainer weights
        tracker = Tracker(run_dir, cfg, steps, start)
        mid = c.midtrain
        test_set = (lambda s: mid.eval_set(s, steps)) if mid is not None else (lambda s: c.test_set)
        if cfg.eval.at_start and start == 0 and (held_out := test_set(0)) is not None:
            tracker.log(0, evaluate(pool, held_out, c.scorer, cfg, 0, steps))

        for step in range(start, steps):
            timer = Timer()
            ntp, metrics = None, {}
            if mid is not None:  # RMT: this step's prompts are positions of its documents
                with timer("rmt_positions"):
                    prompt_set, ntp, metrics = mid.prepare(step, steps, trainers)
                sampler = iter([list(range(len(prompt_set)))])
            else:
                prompt_set, sampler = c.train_set, c.sampler
            with timer("generation"):
                got = collect(pool, prompt_set, sampler, c.scorer, cfg, step, steps)
            exp = build_experience(got.prompt_ids, got.groups, got.rewards, c.pad_id)
            metrics.update(got.metrics)

            metrics.update(assign_credit(trainers, exp, cfg, chain, step, steps, timer))

            with timer("update"):
                metrics.update(update_policy(trainers, exp, cfg, ntp))
            with timer("sync"):
                metrics["timing/sync_transfer"] = pool.sync_weights(trainers.named_weights(), step + 1)

            metrics.update(timer.pop())
            if cfg.logging.save_batches:
                save_batch(run_dir, step + 1, exp, c.tokenizer)
            is_last = step + 1 == steps
            if (cfg.eval.every and (step + 1) % cfg.eval.every == 0) or is_last:
                held_out = test_set(step + 1)
                if held_out is not None:
                    metrics.update(evaluate(pool, held_out, c.scorer, cfg, step + 1, steps))
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


def update_policy(trainers, exp, cfg: Config, ntp: dict | None = None) -> dict[str, float]:
    """``algorithm.epochs`` passes over the rollout batch, each split into ``mini_batches`` optimizer steps.

    Rows that no longer carry any loss token (dropped by a credit module or a filter)
    are left out of the forward/backward entirely: that is where D3S saves compute.
    ``ntp`` (RMT): document rows whose lambda * L_NTP joins every optimizer step.
    """
    a = cfg.algorithm
    n = exp.num_rows
    out: dict[str, float] = {}
    steps_done = 0
    gen = torch.Generator().manual_seed(cfg.trainer.seed)
    for _ in range(a.epochs):
        order = torch.randperm(n, generator=gen) if a.mini_batches > 1 else torch.arange(n)
        for chunk in order.chunk(a.mini_batches):
            rows = chunk[exp.active_rows()[chunk]]
            if len(rows) == 0:
                continue
            m = trainers.train_mini_batch(train_tensors(exp, rows), ntp)
            for k, v in m.items():
                out[k] = out.get(k, 0.0) + v
            steps_done += 1
    out = {k: v / max(steps_done, 1) for k, v in out.items()}
    out["train/optimizer_steps"] = steps_done
    out["train/rows_in_backward"] = float(exp.active_rows().sum())
    return out
