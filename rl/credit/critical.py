"""cDPO critical tokens (arXiv 2411.19943, "Critical Tokens Matter"; specs/dpo_methods.md §3): pure math.

* ``contrastive_token_probs`` - the contrastive-estimation score of every response token (official
  ``Pipeline.calculate_ce_score``), from a model fine-tuned on correct answers (pos) and one fine-tuned on
  incorrect answers (neg), teacher-forced on the same token ids:

      p_CE,t = softmax_v[ (1 + beta_CE) log p_pos(v|s_t) - beta_CE log p_neg(v|s_t) ] at v = y_t

  A probability in [0, 1], not a raw log-ratio (spec §7.1: the code form; beta_CE = 1 hard-coded there,
  exposed here as ``preference.cdpo_beta_ce``). Low p_CE marks a critical token; cDPO weights rejected
  tokens by 1 - p_CE (rl/credit/cdpo.py). Computed in float32 (float64 for float64 input) from chunks of
  tokens, so at most ~3 x chunk_tokens x V floats exist at once (the official script softmaxes bf16 logits
  over the whole sequence: coarser, spec §6.6). No gradient: the scores are constants of the loss.

* ``critical_index`` - the rollout verification rule (``analyse_all_token``, spec §3.3) over c_i, the number
  of correct continuations (of 64) sampled from the response prefix ending at token i:
  scan the prefixes by increasing length; the first i with c_i == 0 becomes the candidate; a later prefix
  with c_j > 3 discards it (it is remembered) and the scan goes on looking for a new candidate; the result
  is the candidate standing at the end, else the last discarded one, else None ("not find" in the code:
  no prefix ever reached 0 correct). A diagnostic, not a training signal (spec §7.4).

* ``pass_at_k`` - unbiased Pass@k = 1 - C(n-c, k) / C(n, k) (``get_pass_at_k``), k clamped to n as there.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb

import torch

from rl.algorithms.logprobs import _compute_dtype, _logits


@torch.no_grad()
def contrastive_token_probs(
    h_pos: torch.Tensor,
    w_pos: torch.Tensor,
    h_neg: torch.Tensor,
    w_neg: torch.Tensor,
    labels: torch.Tensor,
    beta_ce: float = 1.0,
    *,
    bias_pos: torch.Tensor | None = None,
    bias_neg: torch.Tensor | None = None,
    chunk_tokens: int = 1024,
) -> torch.Tensor:
    """p_CE ``[M]`` of ``labels`` ``[M]``; ``h_*[t]`` is the state that predicts ``labels[t]``."""
    m = labels.shape[0]
    if labels.dim() != 1 or h_pos.shape[0] != m or h_neg.shape[0] != m:
        raise ValueError(f"contrastive_token_probs: need labels [M] and h_pos, h_neg [M, d], got "
                         f"{tuple(labels.shape)}, {tuple(h_pos.shape)}, {tuple(h_neg.shape)}")
    if w_pos.shape[0] != w_neg.shape[0]:
        raise ValueError(f"contrastive_token_probs: the two heads need one vocabulary, got {w_pos.shape[0]} "
                         f"and {w_neg.shape[0]} rows")
    if beta_ce < 0:
        raise ValueError(f"contrastive_token_probs: beta_ce must be >= 0, got {beta_ce}")
    if chunk_tokens < 1:
        raise ValueError(f"contrastive_token_probs: chunk_tokens must be >= 1, got {chunk_tokens}")
    labels = labels.long()
    out = torch.empty(m, dtype=_compute_dtype(w_pos.dtype), device=h_pos.device)  # _logits' dtype
    for s in range(0, m, chunk_tokens):
        e = min(s + chunk_tokens, m)
        score = torch.log_softmax(_logits(h_pos[s:e], w_pos, bias_pos, 1.0), -1).mul_(1.0 + beta_ce)
        neg = torch.log_softmax(_logits(h_neg[s:e], w_neg, bias_neg, 1.0), -1)
        score.sub_(neg.to(score.dtype), alpha=beta_ce)
        del neg
        out[s:e] = score.gather(1, labels[s:e, None]).squeeze(1) - torch.logsumexp(score, -1)
        del score
    return out.exp_()


def critical_index(correct_counts: Sequence[int | None], zero: int = 0, recover: int = 3) -> int | None:
    """Index of the critical token under the official rule (module doc); None when no prefix hit ``zero``.

    ``correct_counts[i]`` counts correct rollouts from the prefix ending at response token i; None marks a
    prefix without rollouts, which is skipped (the code skips prefixes missing from its table).
    A count ``<= zero`` starts a candidate, a count ``> recover`` discards it.
    """
    if not 0 <= zero <= recover:
        raise ValueError(f"critical_index: need 0 <= zero <= recover, got zero={zero}, recover={recover}")
    candidate, discarded = None, None
    for i, c in enumerate(correct_counts):
        if c is None:
            continue
        if candidate is None and c <= zero:
            candidate = i
        elif candidate is not None and c > recover:
            discarded, candidate = candidate, None
    return candidate if candidate is not None else discarded


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased Pass@k from n samples with c correct: 1 - C(n-c, k) / C(n, k); k > n is clamped to n."""
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got {k}")
    k = min(k, n)
    return 1.0 - comb(n - c, k) / comb(n, k)  # comb(a, b) = 0 for b > a: a correct sample is certain
