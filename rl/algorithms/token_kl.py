"""TDPO's per-token forward KL over the full vocabulary, without an ``[M, V]`` tensor for all tokens.

TDPO (arXiv 2404.11999; official ``_tdpo_get_batch_logps``) needs, at every response position s_t,

    KL_t = sum_v pi_ref(v|s_t) (log pi_ref(v|s_t) - log pi_theta(v|s_t))

from the policy's and the reference's last hidden states h ``[M, d]`` and output heads W ``[V, d]`` (+ bias),
logits z = (W h + b) / tau, in float32 (float64 for float64 input). With lse = logsumexp(z):

    KL_t = sum_v p_ref,v (z_ref,v - lse_ref) - sum_v p_ref,v z_pol,v + lse_pol
    d KL_t / d z_pol = softmax(z_pol) - p_ref

``chunked_reference_kl`` walks the M tokens in chunks of ``chunk_tokens`` with a custom autograd function
(the pattern of rl/algorithms/logprobs.py): forward keeps the inputs and one float per token (lse_pol);
backward recomputes one chunk of both logits at a time, so peak extra memory is ~3 x chunk_tokens x V floats
plus a float32 ``[V, d]`` accumulator for grad W. The reference side is a constant: it never gets a gradient.
Under ZeRO-3 the heads must be the gathered parameters (see rl/algorithms/logprobs.py).
"""

from __future__ import annotations

import torch

from rl.algorithms.logprobs import _compute_dtype, _logits


def _chunk_kl(z_pol: torch.Tensor, z_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(KL per row, lse_pol per row) of one chunk of logits."""
    lse_pol = torch.logsumexp(z_pol, dim=-1)
    log_p_ref = torch.log_softmax(z_ref, dim=-1)
    kl = (log_p_ref.exp() * (log_p_ref - z_pol)).sum(-1) + lse_pol
    return kl, lse_pol


class _ChunkedReferenceKL(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_pol, w_pol, b_pol, h_ref, w_ref, b_ref, temperature, chunk):
        m = h_pol.shape[0]
        out_dtype = _compute_dtype(torch.promote_types(h_pol.dtype, w_pol.dtype))
        kl = torch.empty(m, dtype=out_dtype, device=h_pol.device)
        lse = torch.empty(m, dtype=out_dtype, device=h_pol.device)
        for s in range(0, m, chunk):
            e = min(s + chunk, m)
            kl_c, lse_c = _chunk_kl(_logits(h_pol[s:e], w_pol, b_pol, temperature),
                                    _logits(h_ref[s:e], w_ref, b_ref, temperature))
            kl[s:e], lse[s:e] = kl_c, lse_c
        ctx.save_for_backward(h_pol, w_pol, b_pol, h_ref, w_ref, b_ref, lse)
        ctx.temperature, ctx.chunk = temperature, chunk
        return kl

    @staticmethod
    def backward(ctx, g_kl):
        h_pol, w_pol, b_pol, h_ref, w_ref, b_ref, lse = ctx.saved_tensors
        tau, chunk = ctx.temperature, ctx.chunk
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        acc = _compute_dtype(w_pol.dtype)
        grad_h = torch.empty_like(h_pol) if need_h else None
        grad_w = torch.zeros(w_pol.shape, dtype=acc, device=w_pol.device) if need_w else None
        grad_b = torch.zeros(w_pol.shape[0], dtype=acc, device=w_pol.device) if need_b else None
        for s in range(0, h_pol.shape[0], chunk):
            e = min(s + chunk, h_pol.shape[0])
            g = g_kl[s:e].to(lse.dtype)
            # In place: z_pol -> softmax(z_pol) - p_ref -> times g / tau = d KL / d (W h + b).
            gz = _logits(h_pol[s:e], w_pol, b_pol, tau)
            gz.sub_(lse[s:e, None]).exp_()
            gz.sub_(torch.softmax(_logits(h_ref[s:e], w_ref, b_ref, tau), dim=-1))
            gz.mul_(g[:, None] / tau)
            if need_h:
                grad_h[s:e] = (gz.to(w_pol.dtype) @ w_pol).to(h_pol.dtype)
            if need_w:
                grad_w += gz.T @ h_pol[s:e].to(acc)
            if need_b:
                grad_b += gz.sum(0)
            del gz
        return (
            grad_h,
            grad_w.to(w_pol.dtype) if need_w else None,
            grad_b.to(b_pol.dtype) if need_b else None,
            None, None, None, None, None,
        )


def chunked_reference_kl(
    h_policy: torch.Tensor,
    w_policy: torch.Tensor,
    h_ref: torch.Tensor,
    w_ref: torch.Tensor,
    *,
    bias_policy: torch.Tensor | None = None,
    bias_ref: torch.Tensor | None = None,
    temperature: float = 1.0,
    chunk_tokens: int = 1024,
) -> torch.Tensor:
    """KL_t(pi_ref || pi_theta) ``[M]``, differentiable w.r.t. h_policy, w_policy and bias_policy.

    ``h_policy[t]`` and ``h_ref[t]`` must be the states that predict response token t (the same token for
    both); each head is ``[V, d]`` with its own hidden size d. See the module doc for memory.
    """
    if h_policy.dim() != 2 or w_policy.dim() != 2 or w_policy.shape[1] != h_policy.shape[1]:
        raise ValueError(f"chunked_reference_kl: need h_policy [M, d] and w_policy [V, d], got "
                         f"{tuple(h_policy.shape)} and {tuple(w_policy.shape)}")
    if h_ref.dim() != 2 or h_ref.shape[0] != h_policy.shape[0]:
        raise ValueError(f"chunked_reference_kl: h_ref must be [{h_policy.shape[0]}, d], got "
                         f"{tuple(h_ref.shape)}")
    if w_ref.dim() != 2 or w_ref.shape != (w_policy.shape[0], h_ref.shape[1]):
        raise ValueError(f"chunked_reference_kl: w_ref must be [{w_policy.shape[0]}, {h_ref.shape[1]}] "
                         f"(same vocabulary as the policy), got {tuple(w_ref.shape)}")
    if temperature <= 0:
        raise ValueError(f"chunked_reference_kl: temperature must be > 0, got {temperature}")
    if chunk_tokens < 1:
        raise ValueError(f"chunked_reference_kl: chunk_tokens must be >= 1, got {chunk_tokens}")
    return _ChunkedReferenceKL.apply(h_policy, w_policy, bias_policy, h_ref.detach(), w_ref.detach(),
                                     None if bias_ref is None else bias_ref.detach(), float(temperature),
                                     int(chunk_tokens))
