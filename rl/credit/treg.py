"""T-REG self-generated token rewards (arXiv 2412.02685; official code not public; spec §5 [SEC]).

An evaluator pi_eval (spec Q7: the frozen reference) scores the SAME response y under two revision prompts,
x_better ("make it helpful, correct, ...") and x_worse ("... unhelpful, incorrect"):

    r_hat_t = sigmoid( log pi_eval(y_t | x_better, y_<t) - log pi_eval(y_t | x_worse, y_<t) ) - 0.5
            in (-0.5, 0.5)

The two passes use prompts of different lengths, so absolute positions differ between them and the policy
batch: each pass's log-probs must be taken at its own response positions and brought to the
completion-only layout ``[N, T]`` (token t = the t-th response token, right-padded) before they meet here,
i.e. aligned by response offset (spec §6.2). Computed once, without grad (pi_eval is frozen).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def treg_token_reward(
    better_logp: torch.Tensor, worse_logp: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """r_hat ``[N, T]`` from the two scoring passes (response-aligned), 0 on padding."""
    if better_logp.shape != worse_logp.shape or better_logp.shape != mask.shape:
        raise ValueError(f"treg_token_reward: better_logp {tuple(better_logp.shape)}, worse_logp "
                         f"{tuple(worse_logp.shape)} and mask {tuple(mask.shape)} must share one [N, T] "
                         "shape")
    m = mask.to(better_logp.dtype)
    diff = torch.where(m > 0, better_logp - worse_logp, torch.zeros_like(better_logp))  # padding may be junk
    return (torch.sigmoid(diff) - 0.5) * m
