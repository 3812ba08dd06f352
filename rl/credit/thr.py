"""THR: Token Hidden Reward (arXiv 2510.03669) and its special case NTHR (arXiv 2505.18830). Spec §3.

Score. For a token j (response y, position k') with old-policy prediction-error vector
g_j = e_{y_j} - pi_old(.|x, y_<k') and last hidden state h_j, against the correct
responses P of its group:

    s_j = sum_{i in P} sum_k <g_{i,k}, g_j> <h_{i,k}, h_j> = g_j^T M+ h_j,   M+ = sum_{i in P, k} g_{i,k} h_{i,k}^T

(NTHR Eq. 7, extended to every token). M+ is [V, d]; it is built and used one vocabulary
chunk C at a time: s_j = sum_C ( (M+_C h_j)[y_j] - sum_{v in C} q_j[v] (M+_C h_j)[v] ),
M+_C = sum_k (onehot(y_k)[C] - q_k[C]) h_k^T, so no pairwise loop and no [T, V] tensor. FP32.
The same sum in Gram form, s_j = sum_k <h_k, h_j> <g_k, g_j> over the P correct tokens, costs
less while P is below about 2d; ``token_hidden_scores(method="auto")`` picks per group.
Padding is masked out of every sum; the tokens of correct responses are all in M+ (their
likelihood depends on every one of them), whatever ``token_mask`` says.

Threshold. tau = tau_beta * min_{i in P} mean_k s_{i,k} (NTHR, beta = 1), per group.

THR mode. THR_j = A_j * s_j and A'_j = A_j * (1 + p * sign(THR_j)) where |s_j| > |tau|,
else A_j (``below_tau=keep``), 0 (``zero``: dominant-token training) or out of the loss (``mask``).
NTHR mode. Tokens of incorrect responses with s_j > tau get A'_j = eta * A_j.
Groups without a mixed outcome (0 < |P| < G fails) keep plain GRPO advantages.

Interpretations flagged by the spec (config ``algorithm.thr``):
* Sign convention THR = A * s: ``sign=advantage`` [I, recommended] | ``score`` (THR = s) (Q4).
* tau gates the reweighting on the unsigned score |s| > |tau|: ``gate=True`` (Q4).
* Range of p unknown (sweep |p| in {0.2, 0.5, 1}): ``p=0.5`` (Q4).
* Vocabulary: ``vocab=group`` restricts g to the token ids that occur in the group's
  completions, using the full-vocabulary softmax without renormalising (the note's
  approximation); ``vocab=full`` is exact (Q4).
* NTHR eta: ``eta=0``, ``eta_mode=constant`` (v1) | ``balance``: eta = 2|0.5 - frac_correct| (Q5).
* Correct responses P: ``positive_set=accuracy`` (default) takes the accuracy label ``exp.correct``
  (``eval.accuracy_reward`` >= ``eval.correct_threshold``, the label of every accuracy metric and of
  DAPO's filter); ``reward`` (total reward > ``correct_threshold``) drifts from "correct" under
  shaping terms or KL-as-reward; ``advantage`` (A > 0).
* The optional 1/sum|y| scaling of the score is omitted: it changes neither sign(THR) nor
  the |s| > |tau| comparison (both sides scale alike).
h and q come from the old (rollout) policy: ``exp.hidden`` and ``ctx.policy``, computed once
per rollout batch and fixed for all its mini-batch updates.
"""

from __future__ import annotations

import torch

from rl.algorithms.registry import register_credit
from rl.credit.base import CreditContext, CreditModule, PolicySnapshot
from rl.credit.config import THRConfig
from rl.credit.entropy import streaming_lse_entropy
from rl.experience import Experience


def token_hidden_scores(
    hidden: torch.Tensor,
    token_ids: torch.Tensor,
    positive: torch.Tensor,
    policy: PolicySnapshot,
    vocab: str = "group",
    vocab_chunk: int = 8192,
    token_chunk: int = 1024,
    method: str = "auto",
) -> torch.Tensor:
    """s_j = g_j^T M+ h_j for the M tokens of one group.

    hidden [M, d], token_ids [M] (the sampled tokens y_j), positive [M] bool (token belongs
    to a correct response). ``vocab="group"`` restricts g to the distinct ids in
    ``token_ids`` (no renormalisation); ``"full"`` uses the whole vocabulary. -> [M] float32.

    Two exact evaluations of the same sum; ``method="auto"`` takes the cheaper for the
    group's sizes (in units of d x |V| multiply-adds, P = positive tokens):
    ``factorised`` (M+ = sum g h^T, streamed over the vocabulary): ~ 3M + 2P;
    ``gram`` (s_j = sum_k <h_k, h_j> <g_k, g_j>, with <g_k, g_j> = [y_k = y_j] - q_j[y_k]
    - q_k[y_j] + <q_k, q_j>): ~ 2M + P + P*M/d, cheaper while P is below about 2d.
    """
    if vocab == "group":
        sub_ids, y_pos = torch.unique(token_ids, return_inverse=True)  # y_pos: index of y_j in sub_ids
    elif vocab == "full":
        sub_ids, y_pos = None, token_ids
    else:
        raise ValueError(f"token_hidden_scores: vocab={vocab!r} is not one of ['group', 'full']")
    if method == "auto":
        m, p, d = hidden.shape[0], int(positive.sum()), hidden.shape[1]
        method = "gram" if 2 * m + p + p * m / d < 3 * m + 2 * p else "factorised"
    if method not in ("gram", "factorised"):
        raise ValueError(f"token_hidden_scores: method={method!r} is not one of ['auto', 'gram', 'factorised']")
    with torch.no_grad():
        lse, _ = streaming_lse_entropy(hidden, policy, vocab_chunk, token_chunk)
        n_sub = policy.vocab_size if sub_ids is None else sub_ids.numel()
        fn = _scores_gram if method == "gram" else _scores_factorised
        return fn(hidden, y_pos, positive, policy, lse, sub_ids, n_sub, vocab_chunk, token_chunk)


def _probs_fn(hidden: torch.Tensor, policy: PolicySnapshot, lse: torch.Tensor, cols):
    def probs(rows: torch.Tensor) -> torch.Tensor:  # q[rows, cols] under the full softmax
        return torch.exp(policy.logits(hidden[rows], cols) - lse[rows, None])
    return probs


def _scores_factorised(hidden, y_pos, positive, policy, lse, sub_ids, n_sub, vocab_chunk, token_chunk):
    h = hidden.float()
    pos_idx = positive.nonzero()[:, 0]
    scores = torch.zeros(h.shape[0], dtype=torch.float32, device=h.device)
    for c0 in range(0, n_sub, vocab_chunk):
        c1 = min(c0 + vocab_chunk, n_sub)
        probs = _probs_fn(hidden, policy, lse, slice(c0, c1) if sub_ids is None else sub_ids[c0:c1])
        m_plus = torch.zeros(c1 - c0, h.shape[1], dtype=torch.float32, device=h.device)  # M+_C
        for t0 in range(0, pos_idx.numel(), token_chunk):
            rows = pos_idx[t0 : t0 + token_chunk]
            m_plus -= probs(rows).T @ h[rows]
            local = y_pos[rows] - c0
            inside = (local >= 0) & (local < c1 - c0)
            m_plus.index_add_(0, local[inside], h[rows][inside])
        for t0 in range(0, h.shape[0], token_chunk):
            rows = torch.arange(t0, min(t0 + token_chunk, h.shape[0]), device=h.device)
            u = h[rows] @ m_plus.T  # (M+_C h_j)[v], [rows, C]
            contrib = -(probs(rows) * u).sum(-1)
            local = y_pos[rows] - c0
            inside = (local >= 0) & (local < c1 - c0)
            contrib[inside] += u[inside, local[inside]]
            scores[rows] += contrib
    return scores


def _scores_gram(hidden, y_pos, positive, policy, lse, sub_ids, n_sub, vocab_chunk, token_chunk):
    h = hidden.float()
    m = h.shape[0]
    pos_idx = positive.nonzero()[:, 0]
    if pos_idx.numel() == 0:
        return torch.zeros(m, dtype=torch.float32, device=h.device)
    y_cols = y_pos if sub_ids is None else sub_ids[y_pos]  # vocabulary id of each y_j
    kernel = h[pos_idx] @ h.T  # <h_k, h_j>, [P, M]
    same = (y_pos[pos_idx][:, None] == y_pos[None, :]).float()  # [y_k = y_j]
    q_j_at_yk = _probs_fn(hidden, policy, lse, y_cols[pos_idx])(torch.arange(m, device=h.device)).T  # [P, M]
    q_k_at_yj = _probs_fn(hidden, policy, lse, y_cols)(pos_idx)  # [P, M]
    qq = torch.zeros(pos_idx.numel(), m, dtype=torch.float32, device=h.device)  # <q_k, q_j> over the vocabulary
    for c0 in range(0, n_sub, vocab_chunk):
        c1 = min(c0 + vocab_chunk, n_sub)
        probs = _probs_fn(hidden, policy, lse, slice(c0, c1) if sub_ids is None else sub_ids[c0:c1])
        q_pos = probs(pos_idx)
        for t0 in range(0, m, token_chunk):
            rows = torch.arange(t0, min(t0 + token_chunk, m), device=h.device)
            qq[:, rows] += q_pos @ probs(rows).T
    return (kernel * (same - q_j_at_yk - q_k_at_yj + qq)).sum(0)


def score_threshold(scores: torch.Tensor, row_of_token: torch.Tensor, positive_rows: torch.Tensor,
                    tau_beta: float) -> torch.Tensor:
    """tau = tau_beta * min over correct rows i of the mean score of row i's tokens (0-d tensor)."""
    means = [scores[row_of_token == r].mean() for r in positive_rows.tolist()]
    return tau_beta * torch.stack(means).min()


def thr_factor(adv: torch.Tensor, scores: torch.Tensor, tau: torch.Tensor, cfg: THRConfig
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """THR mode: (factor with A' = A * factor, gate) per token.

    THR = A*s (``sign=advantage``) or s (``score``); above the gate |s| > |tau| the factor is
    1 + p*sign(THR), below it 1 (``below_tau=keep``/``mask``) or 0 (``zero``).
    """
    thr = adv * scores if cfg.sign == "advantage" else scores
    gate = scores.abs() > tau.abs() if cfg.gate else torch.ones_like(scores, dtype=torch.bool)
    below_value = 0.0 if cfg.below_tau == "zero" else 1.0
    return torch.where(gate, 1.0 + cfg.p * torch.sign(thr), torch.full_like(scores, below_value)), gate


def nthr_factor(scores: torch.Tensor, positive: torch.Tensor, tau: torch.Tensor, eta: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """NTHR mode: tokens of incorrect responses with s > tau get A' = eta * A. -> (factor, flagged)."""
    flagged = ~positive & (scores > tau)
    return torch.where(flagged, torch.full_like(scores, eta), torch.ones_like(scores)), flagged


@register_credit("thr")
class THR(CreditModule):
    name = "thr"
    needs = frozenset({"hidden", "policy"})

    def __init__(self, cfg: THRConfig) -> None:
        super().__init__(cfg)
        cfg.check()

    def _positive_rows(self, exp: Experience, rows: torch.Tensor, row_adv: torch.Tensor) -> torch.Tensor:
        if self.cfg.positive_set == "advantage":
            return row_adv > 0
        if self.cfg.positive_set == "reward":
            return exp.rewards[rows].float() > self.cfg.correct_threshold
        return exp.correct[rows].bool()

    def apply(self, exp: Experience, ctx: CreditContext) -> dict[str, float]:
        cfg = self.cfg
        cfg.check()
        if exp.advantages is None:
            raise ValueError("credit module thr: exp.advantages is None; run the advantage estimator first")
        if cfg.positive_set == "accuracy" and exp.correct is None:
            raise ValueError("credit module thr: exp.correct is None but algorithm.thr.positive_set=accuracy "
                             "reads the per-row accuracy label; build the Experience with "
                             "correct=Collected.correct (rl/batch.build_experience) or set "
                             "algorithm.thr.positive_set=reward")
        if exp.hidden is None or ctx.policy is None:
            raise ValueError("credit module thr: needs exp.hidden and ctx.policy (old-policy hidden states and "
                             "output head); the trainer must provide them")
        n, t = exp.completion_mask.shape
        adv = exp.advantages.float()
        adv = (adv[:, None].expand(n, t) if adv.dim() == 1 else adv).clone()
        cmask = exp.completion_mask > 0
        factor = torch.ones(n, t, device=adv.device)  # A' = A * factor
        changed = torch.zeros(n, t, dtype=torch.bool, device=adv.device)  # reweighted (thr) / flagged (nthr)
        below = torch.zeros(n, t, dtype=torch.bool, device=adv.device)  # under the gate (thr)
        score_map = torch.zeros(n, t, device=adv.device)
        n_groups = n_mixed = 0
        abs_thr_sum, abs_thr_count = 0.0, 0
        for gid in torch.unique(exp.group_id):
            n_groups += 1
            rows = (exp.group_id == gid).nonzero()[:, 0]
            row_adv = (adv[rows] * cmask[rows]).sum(-1) / cmask[rows].sum(-1).clamp(min=1)
            pos_rows = self._positive_rows(exp, rows, row_adv)
            if not 0 < int(pos_rows.sum()) < rows.numel():
                continue  # no mixed outcome: plain GRPO
            r_idx, t_idx = cmask[rows].nonzero(as_tuple=True)
            if r_idx.numel() == 0:
                continue
            n_mixed += 1
            tok_rows, positive = rows[r_idx], pos_rows[r_idx]
            s = token_hidden_scores(exp.hidden[tok_rows, t_idx], exp.completion_ids[tok_rows, t_idx],
                                    positive, ctx.policy, cfg.vocab, cfg.vocab_chunk, cfg.token_chunk)
            score_map[tok_rows, t_idx] = s
            tau = score_threshold(s, r_idx, pos_rows.nonzero()[:, 0], cfg.tau_beta)
            if cfg.mode == "nthr":
                eta = cfg.eta if cfg.eta_mode == "constant" else 2.0 * abs(0.5 - float(pos_rows.float().mean()))
                f, flagged = nthr_factor(s, positive, tau, eta)
                factor[tok_rows, t_idx] = f
                changed[tok_rows, t_idx] = flagged
                continue
            a = adv[tok_rows, t_idx]
            f, gate = thr_factor(a, s, tau, cfg)
            thr = a * s if cfg.sign == "advantage" else s
            abs_thr_sum += float(thr.abs().sum())
            abs_thr_count += thr.numel()
            factor[tok_rows, t_idx] = f
            changed[tok_rows, t_idx] = gate
            below[tok_rows, t_idx] = ~gate

        live = exp.loss_mask() > 0
        n_live = max(1, int(live.sum()))
        exp.advantages = adv * factor
        if cfg.mode == "thr" and cfg.below_tau == "mask" and below.any():
            exp.token_mask = exp.token_mask * (~below).to(exp.token_mask.dtype)
        exp.extras["thr_score"] = score_map

        def frac(m: torch.Tensor) -> float:
            return float((m & live).sum()) / n_live

        metrics = {"thr/groups_mixed": float(n_mixed), "thr/groups_mixed_frac": n_mixed / max(1, n_groups)}
        if cfg.mode == "nthr":
            metrics["thr/frac_flagged"] = frac(changed)
        else:
            metrics["thr/frac_up"] = frac(changed & (factor > 1.0))
            metrics["thr/frac_down"] = frac(changed & (factor < 1.0))
            metrics["thr/frac_below_tau"] = float((below & cmask).sum()) / max(1, int(cmask.sum()))
            metrics["thr/mean_abs_thr"] = abs_thr_sum / abs_thr_count if abs_thr_count else 0.0
        return metrics
