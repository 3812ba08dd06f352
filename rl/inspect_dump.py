"""Save each step's tokens and credit (masks, weights, advantages) for ``tokencredit inspect``."""

from __future__ import annotations

from pathlib import Path

import torch

from rl.experience import Experience


def save_batch(run_dir: Path, step: int, exp: Experience, credit: dict, tokenizer, keep_last: int = 5) -> Path:
    """``exp`` is the driver's rollout batch (tokens, rewards); ``credit`` the per-token maps the
    trainer ranks computed for it (advantages, loss mask, weights, entropy, module extras)."""
    folder = run_dir / "batches"
    folder.mkdir(exist_ok=True)
    payload = {
        "step": step,
        "completion_ids": exp.completion_ids, "completion_mask": exp.completion_mask,
        "group_id": exp.group_id, "rewards": exp.rewards, "advantages": credit["advantages"],
        "token_mask": credit["token_mask"], "token_weight": credit["token_weight"],
        "entropy": credit["entropy"],
        "extras": {k: v for k, v in credit["extras"].items() if isinstance(v, torch.Tensor)},
        "prompts": tokenizer.batch_decode(exp.prompt_ids, skip_special_tokens=True),
        "tokens": [tokenizer.convert_ids_to_tokens(row[: int(n)].tolist())
                   for row, n in zip(exp.completion_ids, exp.completion_mask.sum(-1))],
    }
    path = folder / f"step_{step:06d}.pt"
    torch.save(payload, path)
    for old in sorted(folder.glob("step_*.pt"))[:-keep_last]:
        old.unlink()
    return path
