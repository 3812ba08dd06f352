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
(two forwards per micro-batch would change the order of its parameter gathers); the engine then
runs the plain forward.
"""

from __future__ import annotations

import torch


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Left-padded rows start at position 0 on their first real token, as in vLLM."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def completion_hidden(backbone, batch: dict, share_prompts: bool,
                      device: torch.device | None = None) -> tuple[torch.Tensor, bool]:
    """(last hidden states aligned to completion tokens [N, T, d], whether prompts were shared).

    ``h[:, t]`` is the state that predicts completion token t. ``backbone`` is the transformer without
    its output head (``model.model``); call it inside the caller's autocast. A model whose cache cannot
    be indexed by row (not transformers' ``DynamicCache``) gets the plain forward."""
    prompt, comp = batch["prompt_ids"], batch["completion_ids"]
    dev = device if device is not None else next(backbone.parameters()).device
    pmask, cmask = batch["prompt_mask"].long().to(dev), batch["completion_mask"].long().to(dev)
    prompt, comp = prompt.to(dev), comp.to(dev)
    attn = torch.cat([pmask, cmask], 1)
    pos = position_ids_from_mask(attn)
    p, t = prompt.shape[1], comp.shape[1]
    rows = None
    if share_prompts and prompt.shape[0] > 1:
        distinct, rows = torch.unique(torch.cat([prompt, pmask], 1), dim=0, return_inverse=True)
        if distinct.shape[0] == prompt.shape[0]:
            rows = None  # nothing shared: one pass is cheaper
    if rows is not None:
        firsts = torch.full((distinct.shape[0],), prompt.shape[0], device=dev).scatter_reduce(
            0, rows, torch.arange(prompt.shape[0], device=dev), "amin")  # one row of each distinct prompt
        head = backbone(input_ids=prompt[firsts], attention_mask=pmask[firsts], position_ids=pos[firsts, :p],
                        use_cache=True)
        cache = head.past_key_values
        if not hasattr(cache, "batch_select_indices"):
            rows = None
    if rows is None:
        out = backbone(input_ids=torch.cat([prompt, comp], 1), attention_mask=attn, position_ids=pos,
                       use_cache=False)
        return out.last_hidden_state[:, p - 1 : p + t - 1], False
    cache.batch_select_indices(rows)  # every row gets its prompt's keys and values (a differentiable gather)
    tail = backbone(input_ids=comp, attention_mask=attn, position_ids=pos[:, p:], past_key_values=cache,
                    use_cache=True)
    last_prompt_state = head.last_hidden_state[rows, -1:]  # predicts the first completion token
    return torch.cat([last_prompt_state, tail.last_hidden_state[:, : t - 1]], 1), True
