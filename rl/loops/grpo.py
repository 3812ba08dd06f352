"""The GRPO-family loop: generate -> reward -> train on the ranks -> sync -> log / eval / checkpoint.

The driver holds prompts, token ids, rewards and scalars only. Advantages, the old/reference
passes, the credit chain and the update run on the trainer ranks over their own whole groups
(rl/trainer_rank.py); weights go from trainer rank 0 straight to the rollout workers.
RMT (``algorithm.rmt.enable``) rides on the same loop: its prompts are document positions and
its NTP term joins each optimizer step (rl/midtrain.py, rl/objectives/ntp.py).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rl import checkpoint as ckpt
from rl.batch import build_experience, rollout_batch
from rl.collect import collect
from rl.config import Config, to_yaml
from rl.evaluate import evaluate
from rl.faults import RunInterrupted, StopSignals, check_nonfinite, note_run_dir
from rl.inspect_dump import save_batch
from rl.setup import Components, build_components
from rl.tracking import Timer, Tracker, write_report
from rollout import remote

log = logging.getLogger(__name__)


def train(cfg: Config, recipe_path: str | None = None) -> Path:
    stop = StopSignals().install()  # SIGINT / SIGTERM: the policy is in rl/faults.py
    try:
        c: Components = build_components(cfg, recipe_path)
    except BaseException:
        stop.restore()
        raise
    run_dir, trainers, pool, tracker = c.run_dir, c.trainers, c.pool, None
    stop.on_request = lambda: setattr(pool, "stopping", True)  # engines killed by the signal stay dead
    try:
        steps, start = cfg.trainer.steps, 0
        resume_from = ckpt.resolve_resume(cfg.checkpoint.resume, run_dir)
        if resume_from is not None:
            state = ckpt.load_checkpoint(resume_from, trainers)
            c.sampler.load_state_dict(state["sampler"])
            start = state["step"]
            log.info("resumed from %s at step %d", resume_from, start)
        sync_weights(trainers, pool, start)  # rollout engines = trainer weights
        tracker = Tracker(run_dir, cfg, steps, start)
        mid = c.midtrain
        test_set = (lambda s: mid.eval_set(s, steps)) if mid is not None else (lambda s: c.test_set)
        if cfg.eval.at_start and start == 0 and (held_out := test_set(0)) is not None:
            tracker.log(0, evaluate(pool, held_out, c.scorer, cfg, 0, steps))

        write_cluster_map(run_dir, trainers, pool)
        stop.begin_steps()  # from here a first signal lets the step finish (again after ray.init's own handler)
        for step in range(start, steps):
            timer, ntp, metrics = Timer(), None, {}
            received = trainers.received_bytes + remote.received_bytes
            if mid is not None:  # RMT: this step's prompts are positions of its documents
                with timer("rmt_positions"):
                    prompt_set, ntp, metrics = mid.prepare(step, steps, trainers)
                sampler = iter([list(range(len(prompt_set)))])
            else:
                prompt_set, sampler = c.train_set, c.sampler
            with timer("generation"):
                got = collect(pool, prompt_set, sampler, c.scorer, cfg, step, steps)
            metrics.update(got.metrics)
            if not got.skipped:
                exp = build_experience(got.prompt_ids, got.groups, got.rewards, c.pad_id, got.correct)
                inspect = cfg.logging.save_batches
                with timer("train"):
                    trained, payload = trainers.train_step(rollout_batch(exp), ntp, step, steps, inspect)
                metrics.update(trained)
                with timer("sync"):
                    metrics["timing/sync_transfer"] = sync_weights(trainers, pool, step + 1)
                if inspect:
                    save_batch(run_dir, step + 1, exp, payload, c.tokenizer)
            else:  # dynamic sampling found no group with a learning signal: nothing to train on
                log.warning("step %d: %s", step + 1, got.skip_reason)
            metrics.update(timer.pop())
            metrics["driver/received_bytes"] = float(trainers.received_bytes + remote.received_bytes - received)
            is_last = step + 1 == steps
            if (cfg.eval.every and (step + 1) % cfg.eval.every == 0) or is_last:
                held_out = test_set(step + 1)
                if held_out is not None:
                    metrics.update(evaluate(pool, held_out, c.scorer, cfg, step + 1, steps))
            tracker.log(step + 1, metrics)
            tracker.progress(step + 1, metrics)
            # an update dropped for a non-finite loss / grad norm: logged, or the run stops (trainer.on_nonfinite)
            check_nonfinite(cfg.trainer.on_nonfinite, step + 1, metrics, ckpt.latest_checkpoint(run_dir))
            due = (cfg.checkpoint.every and (step + 1) % cfg.checkpoint.every == 0) or (is_last and cfg.checkpoint.save_final)
            if due or stop.requested:  # a stop always leaves a checkpoint of the step it finished
                ckpt.save_checkpoint(run_dir, step + 1, trainers, {"sampler": c.sampler.state_dict()},
                                     to_yaml(cfg), cfg.checkpoint.keep_last)
            if cfg.checkpoint.export_hf_every and (step + 1) % cfg.checkpoint.export_hf_every == 0:
                trainers.export_hf(str(run_dir / f"hf_model_step_{step + 1}"), c.model_path)
            if stop.requested and not is_last:
                raise RunInterrupted(stop.signum, f"stopped after step {step + 1} of {steps}; its checkpoint "
                                                  f"{ckpt.latest_checkpoint(run_dir)} is complete", run_dir)

        if cfg.checkpoint.export_hf and start < steps:
            trainers.export_hf(str(run_dir / "hf_model"), c.model_path)
        return run_dir
    except BaseException as e:
        if stop.requested and not isinstance(e, RunInterrupted):  # a signal to every process took the engines
            raise RunInterrupted(stop.signum, f"the engines stopped with the signal ({type(e).__name__}: "
                                              f"{str(e).splitlines()[0] if str(e) else ''}); the step was abandoned",
                                 run_dir) from e
        note_run_dir(e, run_dir)  # the command line prints the last checkpoint and the resume command
        raise
    finally:
        stop.shutting_down()  # a signal now is waited out once: an interrupted shut-down leaves processes behind
        if tracker is not None:
            tracker.close()
        write_report(run_dir, f"{cfg.name}: {run_dir.name}")
        c.close()
        stop.restore()


def sync_weights(trainers, pool, step: int) -> float:
    """Trainer rank 0 -> every rollout worker; a worker found dead or hung on the way is restarted (it gets
    the weights as it starts, rollout.max_restarts) instead of ending the run."""
    from rl.trainer_group import TrainerError
    from rollout.errors import RolloutError

    try:
        return trainers.sync_weights(step)
    except TrainerError as e:
        cause = e.__cause__
        if isinstance(cause, RolloutError) and pool.recover(cause):
            return 0.0  # the restart re-sent these same weights to every worker (pool.on_restart)
        raise


def write_cluster_map(run_dir: Path, trainers, pool) -> None:
    """``cluster.json``: which node each trainer rank and rollout worker runs on."""
    workers = [{"worker": w.info.index, "node": w.info.node, "pid": w.info.pid, "node_id": w.node_id}
               for w in pool.workers]
    (run_dir / "cluster.json").write_text(json.dumps({"trainer_ranks": trainers.nodes, "rollout_workers": workers},
                                                     indent=1))
