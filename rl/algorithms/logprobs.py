"""Log-probabilities and entropy of sampled tokens without an ``[N, T, V]`` logits tensor.

Given last hidden states h ``[N, T, d]`` aligned so that ``h[:, t]`` produces the logits of
completion token t, the output head W ``[V, d]`` (+ bias b) and temperature tau:

    z_t    = (W h_t + b) / tau                        (computed in float32, or float64 for float64 input)
    logp_t = z_t[y_t] - logsumexp(z_t)                (TRL/verl divide by the sampling temperature too)
    H_t    = logsumexp(z_t) - sum_v softmax(z_t)_v z_t,v   over the FULL vocabulary (no grad)

``chunked_logprobs`` walks over the N*T tokens in chunks of ``chunk_tokens`` with a custom
autograd function, so at most one chunk's logits exist at a time:

* forward keeps only the inputs and one float32 log-normaliser per token (``[N*T]``); peak extra
  memory ~ 2 x chunk_tokens x V x 4 bytes (logits + softmax when entropy is asked for);
* backward recomputes each chunk's logits, turns them in place into
  d logp / d z = (onehot(y) - softmax(z)) * g / tau, and accumulates grad h = G W and
  grad W = G^T h chunk by chunk: peak ~ 2 x chunk_tokens x V x 4 bytes plus a float32 [V, d]
  accumulator for grad W.

Under ZeRO-3 the head weight must be the gathered (full) parameter, e.g. inside
``deepspeed.zero.GatheredParameters``; with tied embeddings it is the embedding matrix.

This is the same total work as autograd over full logits (one extra matmul per chunk for the
recompute), at a fraction of the memory. ``selective_log_softmax`` is the small-input version.
"""

from __future__ import annotations

import torch


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, temperature: float) -> torch.Tensor:
    z = h.to(weight.dtype) @ weight.T  # in the model's dtype, like the HF lm_head
    if bias is not None:
        z = z + bias
    return z.to(_compute_dtype(z.dtype)) / temperature


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = logsumexp(z) - sum softmax(z) * z over the last dim, in float32 (or float64)."""
    z = logits.to(_compute_dtype(logits.dtype))
    lse = torch.logsumexp(z, dim=-1)
    return lse - (torch.softmax(z, dim=-1) * z).sum(-1)


def selective_log_softmax(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels] for small inputs ``[..., V]`` / ``[...]``, in float32 (or float64)."""
    z = logits.to(_compute_dtype(logits.dtype))
    return z.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)


class _ChunkedLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, bias, labels, temperature, chunk, want_entropy):
        m = h.shape[0]
        out_dtype = _compute_dtype(torch.promote_types(h.dtype, weight.dtype))
        logp = torch.empty(m, dtype=out_dtype, device=h.device)
        lse = torch.empty(m, dtype=out_dtype, device=h.device)
        ent = torch.empty(m if want_entropy else 0, dtype=out_dtype, device=h.device)
        for s in range(0, m, chunk):
            e = min(s + chunk, m)
            z = _logits(h[s:e], weight, bias, temperature)
            lse_c = torch.logsumexp(z, dim=-1)
            lse[s:e] = lse_c
            logp[s:e] = z.gather(1, labels[s:e, None]).squeeze(1) - lse_c
            if want_entropy:
                p = torch.exp(z - lse_c[:, None])
                ent[s:e] = lse_c - (p * z).sum(-1)
                del p
            del z
        ctx.save_for_backward(h, weight, bias, labels, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        ctx.mark_non_differentiable(ent)
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, _g_ent):
        h, weight, bias, labels, lse = ctx.saved_tensors
        tau, chunk = ctx.temperature, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(h) if need_h else None
        acc = _compute_dtype(weight.dtype)
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=acc, device=weight.device) if need_b else None
        for s in range(0, h.shape[0], chunk):
            e = min(s + chunk, h.shape[0])
            g = g_logp[s:e].to(lse.dtype)
            # In place: logits -> softmax -> d logp / d z -> d logp / d (W h + b).
            gz = _logits(h[s:e], weight, bias, tau)
            gz.sub_(lse[s:e, None]).exp_().mul_(-g[:, None])
            gz[torch.arange(e - s, device=gz.device), labels[s:e]] += g
            gz.div_(tau)
            if need_h:
                grad_h[s:e] = (gz.to(weight.dtype) @ weight).to(h.dtype)
            if need_w:
                grad_w += gz.T @ h[s:e].to(acc)
            if need_b:
                grad_b += gz.sum(0)
            del gz
        return (
            grad_h,
            grad_w.to(weight.dtype) if need_w else None,
            grad_b.to(bias.dtype) if need_b else None,
            None,
            None,
            None,
            None,
        )


def chunked_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
    with_entropy: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logp [N, T], entropy [N, T] or None); logp is differentiable w.r.t. hidden, weight, bias.

    ``hidden[:, t]`` must be the state that predicts ``labels[:, t]``; see module doc for memory.
    """
    if hidden.dim() != 3 or labels.shape != hidden.shape[:2]:
        raise ValueError(
            f"chunked_logprobs: hidden must be [N, T, d] and labels [N, T], got {tuple(hidden.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"chunked_logprobs: weight must be [V, {hidden.shape[2]}], got {tuple(weight.shape)}")
    if temperature <= 0:
        raise ValueError(f"chunked_logprobs: temperature must be > 0, got {temperature}")
    if chunk_tokens < 1:
        raise ValueError(f"chunked_logprobs: chunk_tokens must be >= 1, got {chunk_tokens}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= weight.shape[0]):
        raise ValueError(
            f"chunked_logprobs: labels must lie in [0, {weight.shape[0]}), got range "
            f"[{int(labels.min())}, {int(labels.max())}] (replace ignore-index padding by the pad token id)"
        )
    n, t, d = hidden.shape
    logp, ent = _ChunkedLogProb.apply(
        hidden.reshape(n * t, d), weight, bias, labels.reshape(n * t).long(), float(temperature),
        int(chunk_tokens), with_entropy,
    )
    return logp.view(n, t), (ent.view(n, t) if with_entropy else None)
