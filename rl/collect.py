"""Generate and score one rollout batch, with DAPO dynamic sampling (arXiv 2503.14476).

With ``algorithm.dynamic_sampling.enable`` groups without a learning signal are dropped and more
prompts are generated until ``trainer.prompts_per_step`` groups are collected or ``max_rounds``
extra rounds were spent. Which groups are dropped (``dynamic_sampling.criterion``):

* ``accuracy`` (default, DAPO's constraint 0 < #correct < G; verl ``filter_groups.metric=acc``):
  a group is kept iff some but not all of its completions are correct by the accuracy label
  (``eval.accuracy_reward`` >= ``eval.correct_threshold``, the label used for every accuracy
  metric). Shaping terms such as the overlong penalty make the total reward of an all-wrong group
  vary with length; that variance is not a correctness signal and does not keep the group.
* ``reward_variance``: a group is kept iff its total reward is not constant (zero group-relative
  advantage otherwise); keeps shaped all-correct / all-wrong groups.

A short batch is trained on as it is and reported (``batch/groups``, ``batch/extra_rounds``,
``batch/short``). A batch with no group at all is returned empty (see ``Collected``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rl.evaluate import accuracy_label, correctness, score_groups
from rollout.types import Completion, SamplingSpec


@dataclass
class Collected:
    """One step's scored rollout groups, rows ordered group by group.

    Contract with the loop: ``groups`` may be EMPTY - dynamic sampling dropped every group of every
    round (all correct / all wrong) up to ``max_rounds``, or the sampler gave no prompt. Then
    ``metrics["batch/skipped"] == 1.0`` and ``skip_reason`` says why in one line; the loop must skip
    the step's update (no Experience is built, no optimizer step, no weight sync), log ``metrics``
    and ``skip_reason``, and go on to the next step. ``collect`` itself never raises for it.
    Otherwise ``metrics["batch/skipped"] == 0.0`` and ``skip_reason == ""``.
    """

    prompt_ids: list[list[int]]
    groups: list[list[Completion]]
    rewards: list[float]  # [rows] total reward
    correct: list[bool]  # [rows] the accuracy label (eval.accuracy_reward >= eval.correct_threshold)
    per_function: dict[str, list]
    metrics: dict[str, float]
    skip_reason: str = ""

    @property
    def skipped(self) -> bool:
        return not self.groups


def keeps_group(rewards: list[float], correct: list[bool], ds) -> bool:
    """Dynamic sampling's filter for one group (always True when it is off); see the module doc."""
    if not ds.enable:
        return True
    if ds.criterion == "accuracy":
        return 0 < sum(correct) < len(correct)
    if ds.criterion == "reward_variance":
        return max(rewards) - min(rewards) >= 1e-8
    raise ValueError(f"algorithm.dynamic_sampling.criterion: {ds.criterion!r} is not one of "
                     "['accuracy', 'reward_variance']")


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
            if len(kept.groups) >= want:
                break  # surplus of the last round: neither kept nor counted as dropped
            rewards = [result.total[j] for j in idx]
            if not idx or not keeps_group(rewards, [ok[j] for j in idx], ds):
                dropped += 1
                continue
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
        "batch/skipped": float(not kept.groups),
    })
    if not kept.groups:
        if not generated_groups:
            why = "no group was generated"
        elif ds.enable:
            what = "all correct or all wrong" if ds.criterion == "accuracy" else "of constant total reward"
            why = f"every group was {what} (algorithm.dynamic_sampling.criterion={ds.criterion})"
        else:
            why = "every group was empty"
        limit = f" (algorithm.dynamic_sampling.max_rounds={ds.max_rounds})" if ds.enable else ""
        kept.skip_reason = (f"kept 0 of {generated_groups} groups in {rounds + 1} generation "
                            f"round(s){limit}: {why}; the step is skipped")
    if kept.rewards:
        r = torch.tensor(kept.rewards).view(len(kept.groups), -1)
        kept.metrics["batch/mixed_groups_frac"] = float(((r.max(1).values - r.min(1).values) > 1e-8).float().mean())
    return kept
