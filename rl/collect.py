"""Generate and score one rollout batch, with DAPO dynamic sampling (arXiv 2503.14476).

With ``algorithm.dynamic_sampling.enable`` groups whose rewards are all equal (no
learning signal under group-relative advantages) are dropped and more prompts are
generated until ``trainer.prompts_per_step`` groups are collected or
``max_rounds`` extra rounds were spent; a short batch is trained on as it is and
reported (``batch/groups``, ``batch/extra_rounds``, ``batch/short``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rl.evaluate import accuracy_label, correctness, score_groups
from rollout.types import Completion, SamplingSpec


@dataclass
class Collected:
    prompt_ids: list[list[int]]
    groups: list[list[Completion]]
    rewards: list[float]
    correct: list[bool]
    per_function: dict[str, list]
    metrics: dict[str, float]


def sampling_spec(rollout_cfg) -> SamplingSpec:
    r = rollout_cfg
    return SamplingSpec(n=r.n, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                        max_tokens=r.max_tokens, stop=list(r.stop))


def collect(pool, prompt_set, sampler, scorer, cfg, step: int, total_steps: int) -> Collected:
    want = cfg.trainer.prompts_per_step
    ds = cfg.algorithm.dynamic_sampling
    label = accuracy_label(scorer, cfg.eval)
    state = {"step": step, "total_steps": total_steps}
    spec = sampling_spec(cfg.rollout)
    kept = Collected([], [], [], [], {}, {})
    reward_metrics: dict[str, list[float]] = {}
    generated_groups = dropped = rounds = 0
    while len(kept.groups) < want:
        rows = [prompt_set.rows[i] for i in next(sampler)]
        # a seed per (step, round): a resumed run draws exactly the samples the uninterrupted one drew
        spec.seed = cfg.rollout.seed + 1_000_003 * (step + 1) + 7919 * rounds
        groups = pool.generate([r.ids for r in rows], spec)
        result, flat = score_groups(scorer, prompt_set, rows, groups, state)
        for k, v in result.metrics.items():
            reward_metrics.setdefault(k, []).append(v)
        ok = correctness(result, label, cfg.eval.correct_threshold)
        generated_groups += len(groups)
        for g, comps in enumerate(groups):
            idx = [j for j, i in enumerate(flat) if i == g]
            rewards = [result.total[j] for j in idx]
            if ds.enable and max(rewards) - min(rewards) < 1e-8:
                dropped += 1
                continue
            if len(kept.groups) >= want:
                break
            kept.prompt_ids.append(rows[g].ids)
            kept.groups.append(comps)
            kept.rewards += rewards
            kept.correct += [ok[j] for j in idx]
            for name, vals in result.per_function.items():
                kept.per_function.setdefault(name, []).extend(vals[j] for j in idx)
        if not ds.enable or rounds >= ds.max_rounds:
            break
        if len(kept.groups) < want:
            rounds += 1
    n_tokens = [len(c.token_ids) for g in kept.groups for c in g]
    kept.metrics = {k: sum(v) / len(v) for k, v in reward_metrics.items()}
    kept.metrics.update({
        "train/accuracy": sum(kept.correct) / max(len(kept.correct), 1),
        "batch/groups": len(kept.groups),
        "batch/generated_groups": generated_groups,
        "batch/dropped_groups": dropped,
        "batch/extra_rounds": rounds,
        "batch/short": float(len(kept.groups) < want),
        "batch/completion_len": sum(n_tokens) / max(len(n_tokens), 1),
        "batch/truncated_frac": sum(c.finish_reason == "length" for g in kept.groups for c in g) / max(len(n_tokens), 1),
        "batch/generated_tokens": float(sum(len(c.token_ids) for g in kept.groups for c in g)),
    })
    if kept.rewards:
        r = torch.tensor(kept.rewards).view(len(kept.groups), -1)
        kept.metrics["batch/mixed_groups_frac"] = float(((r.max(1).values - r.min(1).values) > 1e-8).float().mean())
    return kept
