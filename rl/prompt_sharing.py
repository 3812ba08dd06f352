"""Hidden states of the completion tokens, with each distinct prompt of a micro-batch run once.

GRPO-family batches hold G completions of every prompt, and on short-answer tasks the prompt is most
of each row (the quickstart: ~40 prompt tokens, <= 16 completion tokens). The plain forward runs
every row's prompt again; here each distinct prompt runs once, its per-layer keys and values are
indexed out to the rows that share it, and the completions run on top of them (a KV cache with
gradients). The result is the same function of the weights (tests/rl/test_shared_prompt_forward.py
checks hidden states and gradients against the plain forward): autograd sums each shared prompt's
gradient over its rows through the index. It pays off when rows of a micro-batch share prompts, so
the trainer keeps a prompt's rows adjacent when it cuts micro-batches.

Not used under gradient checkpointing (transformers turns the cache off there) nor under ZeRO-3
(two forwards per micro-batch under partitioned parameters: not checked there); the engine then
runs the plain forward.
"""

from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left-padded rows start at position 0 on their first real token, as in vLLM."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def shared_prompt_rows(prompt: torch.Tensor, pmask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(one row index per distinct prompt, each row's distinct-prompt index), or None when no two rows share one."""
    distinct, rows = torch.unique(torch.cat([prompt, pmask], 1), dim=0, return_inverse=True)
    n = prompt.shape[0]
    if distinct.shape[0] == n:
        return None
    firsts = torch.full((distinct.shape[0],), n, device=prompt.device).scatter_reduce(
        0, rows, torch.arange(n, device=prompt.device), "amin")
    return firsts, rows


def completion_hidden(backbone, batch: dict, share_prompts: bool,
                      device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
    """(last hidden states aligned to completion tokens [N, T, d], whether prompts were shared).

    ``h[:, t]`` is the state that predicts completion token t. ``backbone`` is the transformer without
    its output head (``model.model``); call it inside the caller's autocast. A model whose cache cannot
    be indexed by row (not transformers' ``DynamicCache``) gets the plain forward."""
    dev = device if device is not None else next(backbone.parameters()).device
    prompt, comp = batch["prompt_ids"].to(dev), batch["completion_ids"].to(dev)
    pmask, cmask = batch["prompt_mask"].long().to(dev), batch["completion_mask"].long().to(dev)
    attn = torch.cat([pmask, cmask], 1)
    pos = position_ids_from_mask(attn)
    p, t = prompt.shape[1], comp.shape[1]
    shared = shared_prompt_rows(prompt, pmask) if share_prompts and prompt.shape[0] > 1 else None
    if shared is not None:
        firsts, rows = shared
        head = backbone(input_ids=prompt[firsts], attention_mask=pmask[firsts], position_ids=pos[firsts, :p],
                        use_cache=True)
        cache = head.past_key_values
        if hasattr(cache, "batch_select_indices"):
            cache.batch_select_indices(rows)  # every row gets its prompt's keys and values (a differentiable gather)
            tail = backbone(input_ids=comp, attention_mask=attn, position_ids=pos[:, p:], past_key_values=cache,
                            use_cache=True)
            last_prompt_state = head.last_hidden_state[rows, -1:]  # predicts the first completion token
            return torch.cat([last_prompt_state, tail.last_hidden_state[:, : t - 1]], 1), True
    out = backbone(input_ids=torch.cat([prompt, comp], 1), attention_mask=attn, position_ids=pos, use_cache=False)
    return out.last_hidden_state[:, p - 1 : p + t - 1], False
