"""Turn prompts + completions + rewards into an ``Experience``, and the tensors the trainer ranks receive."""

from __future__ import annotations

import torch

from rl.experience import Experience, build_completion_mask, left_pad, right_pad
from rollout.types import Completion

# What the driver sends the trainer ranks of a rollout batch: token ids, masks, rewards, labels.
ROLLOUT_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "group_id", "rewards",
                "sampler_logp", "truncated", "correct")


def build_experience(prompt_ids: list[list[int]], groups: list[list[Completion]], rewards: list[float],
                     pad_id: int, correct: list[bool] | None = None) -> Experience:
    """Rows are ordered group by group; ``group_id`` is the prompt's position in ``prompt_ids``.

    ``correct`` (``Collected.correct``) is the per-row accuracy label; it becomes ``exp.correct``,
    which THR's default ``positive_set=accuracy`` reads."""
    rows_prompt, rows_tokens, rows_logp, gid, truncated = [], [], [], [], []
    for g, (p_ids, comps) in enumerate(zip(prompt_ids, groups)):
        for c in comps:
            rows_prompt.append(p_ids)
            rows_tokens.append(c.token_ids)
            rows_logp.append(c.logprobs or [0.0] * len(c.token_ids))
            gid.append(g)
            truncated.append(c.finish_reason == "length")
    p_ids_t, p_mask = left_pad(rows_prompt, pad_id)
    c_ids = right_pad(rows_tokens, pad_id)
    lengths = torch.tensor([len(t) for t in rows_tokens], dtype=torch.long)
    if correct is not None and len(correct) != len(rows_tokens):
        raise ValueError(f"build_experience: {len(correct)} correct labels for {len(rows_tokens)} rows")
    return Experience(
        prompt_ids=p_ids_t, prompt_mask=p_mask, completion_ids=c_ids,
        completion_mask=build_completion_mask(lengths, c_ids.shape[1]),
        group_id=torch.tensor(gid, dtype=torch.long), rewards=torch.tensor(rewards, dtype=torch.float32),
        sampler_logp=right_pad(rows_logp, 0.0, dtype=torch.float32),
        truncated=torch.tensor(truncated, dtype=torch.bool),
        correct=torch.tensor(correct, dtype=torch.bool) if correct is not None else None,
    )


def rollout_batch(exp: Experience) -> dict[str, torch.Tensor]:
    """The rollout batch as the trainer ranks receive it (nothing computed by a model but the samples)."""
    return {k: getattr(exp, k) for k in ROLLOUT_KEYS if getattr(exp, k) is not None}
