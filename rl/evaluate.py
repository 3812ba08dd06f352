"""Held-out evaluation: greedy accuracy and pass@k, plus per-sample correctness for training logs."""

from __future__ import annotations

from rollout.types import SamplingSpec


def accuracy_label(scorer, eval_cfg) -> str:
    labels = list(scorer.labels)
    if eval_cfg.accuracy_reward is None:
        return labels[0]
    if eval_cfg.accuracy_reward not in labels:
        raise ValueError(f"eval.accuracy_reward: {eval_cfg.accuracy_reward!r} is not one of the reward labels {labels}")
    return eval_cfg.accuracy_reward


def correctness(result, label: str, threshold: float) -> list[bool]:
    return [v is not None and v >= threshold for v in result.per_function[label]]


def score_groups(scorer, prompt_set, rows, groups, trainer_state):
    """Flatten groups of completions and score them; returns (result, flat prompt indices)."""
    flat_idx = [i for i, comps in enumerate(groups) for _ in comps]
    texts = [c.text for comps in groups for c in comps]
    cols = prompt_set.columns_for([rows[i] for i in flat_idx])
    result = scorer.score([rows[i].text for i in flat_idx], texts, cols,
                          [c.token_ids for comps in groups for c in comps], trainer_state)
    return result, flat_idx


def evaluate(pool, prompt_set, scorer, cfg, step: int, total_steps: int) -> dict[str, float]:
    rows = prompt_set.rows[: cfg.eval.num_prompts]
    if not rows:
        return {}
    label = accuracy_label(scorer, cfg.eval)
    state = {"step": step, "total_steps": total_steps}
    ids = [r.ids for r in rows]
    r = cfg.rollout
    greedy = pool.generate(ids, SamplingSpec(n=1, temperature=0.0, max_tokens=r.max_tokens, stop=list(r.stop)))
    res, _ = score_groups(scorer, prompt_set, rows, greedy, state)
    greedy_ok = correctness(res, label, cfg.eval.correct_threshold)
    k = cfg.eval.pass_k
    sampled = pool.generate(ids, SamplingSpec(n=k, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                              max_tokens=r.max_tokens, stop=list(r.stop), seed=r.seed + 31 * step))
    res_k, flat = score_groups(scorer, prompt_set, rows, sampled, state)
    ok_k = correctness(res_k, label, cfg.eval.correct_threshold)
    solved = [False] * len(rows)
    for i, ok in zip(flat, ok_k):
        solved[i] = solved[i] or ok
    return {
        "eval/greedy_acc": sum(greedy_ok) / len(rows),
        "eval/pass_at_k": sum(solved) / len(rows),
        "eval/sample_acc": sum(ok_k) / max(len(ok_k), 1),
        "eval/greedy_len": sum(len(g[0].token_ids) for g in greedy) / len(rows),
    }
