"""Turn prompts + completions + rewards into an ``Experience``, and split it for the trainer."""

from __future__ import annotations

import torch

from rl.experience import Experience, build_completion_mask, left_pad, right_pad
from rollout.types import Completion

# Tensors the trainer ranks need for a GRPO update (everything else stays on the driver).
TRAIN_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "old_logp", "advantages",
              "token_weight", "loss_mask", "ref_logp", "sampler_logp")


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


def forward_inputs(exp: Experience) -> dict:
    return {"prompt_ids": exp.prompt_ids, "prompt_mask": exp.prompt_mask,
            "completion_ids": exp.completion_ids, "completion_mask": exp.completion_mask}


def train_tensors(exp: Experience, rows: torch.Tensor) -> dict:
    """The rows' tensors for ``TrainerGroup.train_mini_batch``, trimmed to their longest completion."""
    sub = exp.select(rows)
    width = max(int(sub.completion_mask.sum(-1).max().item()), 1)
    out = {"loss_mask": sub.loss_mask()[:, :width]}
    for k in TRAIN_KEYS:
        v = getattr(sub, k, None)
        if isinstance(v, torch.Tensor):  # None (e.g. old_logp without an old-policy pass) is left out
            out[k] = v[:, :width] if v.dim() == 2 and k not in ("prompt_ids", "prompt_mask") else v
    return out
