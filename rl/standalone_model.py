"""A transformers causal LM read outside the DeepSpeed trainer (critical-token scoring, SFT, pair
inspection): its device, its LM head as (W, b) for chunked log-probabilities, and its last hidden states
aligned to completion tokens the way the trainer aligns them (rl/engine.py ``hidden``)."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}  # the dtype fields' Literal names -> torch


def torch_device(name: str) -> torch.device:
    """``auto`` = CUDA when there is one, else CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def output_head(model) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight [V, d], bias) of the LM head; refuses heads whose logits are not ``W h + b``."""
    cfg = getattr(base_model(model), "config", None)
    for name in ("final_logit_softcapping", "logit_scale"):
        if getattr(cfg, name, None) not in (None, 1.0):
            raise ValueError(f"{type(base_model(model)).__name__}: config.{name}={getattr(cfg, name)} changes the logits "
                             f"after the head; the chunked scores assume logits = W h + b")
    head = base_model(model).get_output_embeddings()
    return head.weight, getattr(head, "bias", None)


def response_hidden(model, batch: dict, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Last hidden states [N, T, d] aligned to the completion tokens (``h[:, t]`` predicts token t) for a
    ``collate_pairs`` batch (left-padded prompts, right-padded responses), as the trainer computes them
    (rl/engine.py ``hidden``): positions restart at each row's first real token."""
    from rl.prompt_sharing import completion_hidden

    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return completion_hidden(base_model(model).get_decoder(), batch, share_prompts=False, device=device)[0]
