"""Config dataclasses of the credit modules (one field per option, help names the paper)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class D3SConfig:
    """D3S, arXiv 2509.22115. Defaults follow specs/grpo_methods.md Open question 1."""

    n_init: float = 0.25  # intra-group samples kept at p=0, as a fraction of G (<=1) or a count (>1)
    n_final: float = 1.0  # ... at p=1
    k_init: float = 0.2  # fraction of tokens kept at p=0
    k_final: float = 1.0  # ... at p=1
    cross_group: bool = True  # second max-variance selection over the whole batch
    n_batch: int | None = None  # rows kept by the cross-group step; None = sum of per-group N_s
    token_scope: str = "global"  # "global" top-K over the batch (recommended) | "response"
    schedule: str = "linear"  # "linear" | "constant" (uses the *_init values throughout)


@dataclass
class THRConfig:
    """THR, arXiv 2510.03669 (NTHR special case: arXiv 2505.18830)."""

    mode: str = "thr"  # "thr" (sign reweighting) | "nthr" (down-weight negative tokens like positives)
    p: float = 0.5  # >0 exploitation (greedy acc), <0 exploration (pass@k)
    tau_beta: float = 1.0  # tau = tau_beta * min_i mean-score of correct response i
    gate: bool = True  # only reweight tokens with |score| > tau
    below_tau: str = "keep"  # "keep" Â below tau | "zero" (dominant-token-only variant)
    vocab: str = "group"  # "group": restrict to the group's token ids (note's approximation) | "full" (exact)
    vocab_chunk: int = 8192
    eta: float = 0.0  # NTHR: advantage scale of flagged negative tokens (v1: 0)
    eta_mode: str = "constant"  # "constant" | "balance" (eta = 2|0.5 - frac_correct|)
    correct_threshold: float = 0.5  # reward > this counts as a correct response


@dataclass
class TWConfig:
    """TW-GRPO, arXiv 2505.24718 (official code longmalongma/TW-GRPO)."""

    alpha: float = 1.7  # weights lie in [1, alpha]
    detach: bool = False  # official code lets gradients flow through the weights
    include_padding: bool = True  # official code includes padded (uniform) positions in the min-max
    clamp: float = 11.0
    vocab_chunk: int = 8192


@dataclass
class RMTConfig:
    """RMT, arXiv 2509.24375."""

    budget_init: int = 800  # B_0
    budget_min: int = 1  # B_min
    gamma: float = 0.2  # B_t = max(B_min, floor(B_0 * gamma^(t/T)))
    length_weight: float = 0.2  # w in r = (1-w) r_pos + w r_len
    r_max: float = 1.0
    ntp_coef: float = 0.1  # lambda for the next-token-prediction loss on the other tokens
    t1: float = 0.3
    t2: float = 0.7
    p_t1: list[float] = field(default_factory=lambda: [0.6, 0.3, 0.1])  # easy, medium, hard
    p_t2: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.6])
