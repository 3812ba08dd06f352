"""DPO-family preference losses on one token-weighted kernel (specs/dpo_methods.md §0).

Contract (``PreferenceInputs``): every tensor is ``[2B, T]`` over response tokens only (no prompt),
right-padded; rows [0:B] are the chosen responses y^w, rows [B:2B] the rejected y^l of the same B pairs.
``mask`` is 1 on response tokens up to and including EOS (a truncated row simply has no EOS).
Per-token log-ratio Delta_t = log pi_theta(y_t|s_t) - log pi_ref(y_t|s_t); the kernel is

    S(y) = sum_t w_t Delta_t        h = S(y^w) - S(y^l)        (w: constants, no grad; 1 = plain DPO)

Every loss is ``fn(x: PreferenceInputs, cfg: PreferenceConfig) -> (per_pair_loss [B], metrics)``; it does
not average: the caller sums the per-pair losses over its micro-batches and ranks and divides by the global
pair count (so gradient accumulation is exact). Padding may hold anything finite or not: it is masked with
``where``, never multiplied in. ``x.weight`` (optional) multiplies whatever weights a method builds.

With s(.) the logistic sigmoid and eps = ``label_smoothing``, every sigmoid loss is
``-(1-eps) log s(beta z) - eps log s(-beta z)`` (conservative DPO; eps = 0 is plain) for its own z:

* ``dpo`` - DPO, arXiv 2305.18290: z = h with w = 1. Sums over tokens (TRL), beta = 0.1.
* ``ipo`` - IPO, arXiv 2310.12036 Eq. 17: (h' - 1/(2 tau))^2 with tau = beta and h' the difference of
  length-normalised log-ratios S(y)/|y| (TRL's ``ipo``: the IPO authors' normalisation, spec §1.2).
* ``tdpo1`` / ``tdpo2`` - TDPO, arXiv 2404.11999 (official ``tdpo_loss``): with the full-vocabulary
  SeqKL(y) = sum_t KL_t(pi_ref || pi_theta) (``x.ref_kl``, rl/algorithms/token_kl.py, carries grad),
      tdpo1: z = h - (SeqKL(y^l) - SeqKL(y^w))
      tdpo2: z = h - alpha (SeqKL(y^l) - sg[SeqKL(y^w)])      alpha = ``tdpo_alpha`` = 0.5
  The official README recommends tdpo2 (tdpo1 for a low learning rate).
* ``tgdpo`` - TGDPO, arXiv 2506.14574 (official ``dpo_loss``): z = h with w = 1 + alpha r_hat on chosen and
  1 - alpha r_hat on rejected tokens, r_hat = beta_g (log pi_hat - log pi_ref) from the guidance model
  (``x.guidance_logp``); rl/credit/tgdpo.py. alpha = ``tgdpo_alpha`` = 0.5.
* ``cdpo`` - cDPO, arXiv 2411.19943 (official ``CDPOTrainer.dpo_loss``): z = h with w = 1 - p_CE on
  rejected tokens and 1 on chosen ones (``x.ce_prob`` from rl/credit/critical.py); rl/credit/cdpo.py.
* ``treg`` - T-REG, arXiv 2412.02685 (DPO-REG; code not public, spec §5 [SEC]):
      loss = -log s(beta h) + alpha w (L_REG(y^w) + L_REG(y^l))
      L_REG(y) = -sum_t beta r_hat_t log pi_theta(y_t)
      w = s(r_DPO(y^l) - r_DPO(y^w)) = s(-beta h),  r_DPO = beta S
  r_hat is the self-generated token reward (``x.token_reward``, rl/credit/treg.py). alpha = ``treg_alpha``.

Interpretations (spec §6/§7), each a ``PreferenceConfig`` field set to the recommended default:

* cDPO p_CE is the code form, a vocabulary softmax of (1+b) log p_pos - b log p_neg at y_t, not a raw
  log-score; b = ``cdpo_beta_ce`` = 1 (hard-coded in the code) (Q1).
* cDPO weights only rejected tokens: ``cdpo_only_neg`` = True; False weights chosen tokens by p_CE (Q2).
* cDPO's EOS has weight 1 on both sides in the code: ``cdpo_eos_weight`` = 'one' (needs ``x.eos_mask``);
  'score' weights EOS by its p_CE (§6.5).
* cDPO's data (pos/neg models and pairs sampled from the base model, LoRA on the base, no SFT) is a
  pipeline choice, not a loss option (Q3); the critical-token rule is a diagnostic (Q4,
  rl/credit/critical.py ``critical_index(zero=0, recover=3)``).
* TGDPO's r_hat uses the run's beta and the run's reference, like the code: ``tgdpo_guidance_beta`` = None
  (Q5; set it to pi_hat's own beta to deviate); beta = 0.1 from the official yaml, sweep {0.01, 0.1} (Q6).
* TGDPO's weights are not clamped in the code: ``tgdpo_clamp`` = False; negative weights are counted in
  ``tgdpo_negative_weights`` either way and clamped at 0 when True (a deviation, §6.8).
* T-REG: pi_eval = pi_ref (frozen; whoever computes ``x.token_reward`` decides), L_REG summed over tokens
  (``treg_token_reduction`` = 'sum'), w a constant (``treg_detach_weight`` = True), alpha = 0.25 (Q7).
* Label smoothing applies to every sigmoid loss (TRL 0.9.6 and cDPO's code smooth this way; TGDPO's and
  TDPO's code have none, so keep it 0 there for parity); IPO rejects it.

Metrics (detached scalars over this call's pairs): ``pairs`` (B, to weight means across micro-batches),
``reward_chosen`` / ``reward_rejected`` (means of beta * sum_t Delta_t, unweighted, as TRL and the official
token methods log them), ``reward_margin``, ``reward_accuracy`` (fraction with chosen reward > rejected),
``logp_chosen`` / ``logp_rejected`` (mean summed policy log-prob), and per method: ``tdpo_seq_kl_chosen`` /
``_rejected``; ``tgdpo_negative_weights`` / ``tgdpo_clamped`` (token counts); ``cdpo_rejected_weight``
(mean over rejected tokens); ``treg_weight`` (mean w), ``treg_reg`` (mean L_REG(y^w) + L_REG(y^l)).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from rl.algorithms.preference_config import PreferenceConfig
from rl.algorithms.registry import register_preference_loss
from rl.credit.cdpo import cdpo_weights
from rl.credit.tgdpo import tgdpo_weights

Metrics = dict[str, torch.Tensor]


@dataclass
class PreferenceInputs:
    """Per-token tensors of B pairs, ``[2B, T]`` each (module doc). Only policy_logp and ref_kl carry grad."""

    policy_logp: torch.Tensor  # log pi_theta(y_t), with grad
    ref_logp: torch.Tensor  # log pi_ref(y_t), no grad
    mask: torch.Tensor  # 1 on response tokens incl. EOS
    weight: torch.Tensor | None = None  # extra per-token weights (no grad); None = 1
    guidance_logp: torch.Tensor | None = None  # TGDPO: log pi_hat(y_t)
    token_reward: torch.Tensor | None = None  # T-REG: r_hat_t in (-0.5, 0.5)
    ce_prob: torch.Tensor | None = None  # cDPO: p_CE,t in [0, 1]
    ref_kl: torch.Tensor | None = None  # TDPO: KL_t(pi_ref || pi_theta), with grad
    eos_mask: torch.Tensor | None = None  # cDPO: 1 at each row's EOS token (none on a truncated row)

    def __post_init__(self) -> None:
        shape = tuple(self.policy_logp.shape)
        if len(shape) != 2 or shape[0] == 0 or shape[0] % 2:
            raise ValueError(f"PreferenceInputs: policy_logp must be [2B, T] with an even, non-zero number "
                             f"of rows (chosen then rejected), got {shape}")
        for f in fields(self):
            t = getattr(self, f.name)
            if t is not None and tuple(t.shape) != shape:
                raise ValueError(f"PreferenceInputs.{f.name}: shape {tuple(t.shape)} != policy_logp's "
                                 f"{shape}")

    @property
    def num_pairs(self) -> int:
        return self.policy_logp.shape[0] // 2

    def require(self, name: str, loss: str, why: str = "") -> torch.Tensor:
        t = getattr(self, name)
        if t is None:
            raise ValueError(f"preference loss {loss!r} needs PreferenceInputs.{name}{why}")
        return t


def _masked(x: PreferenceInputs, t: torch.Tensor) -> torch.Tensor:
    return torch.where(x.mask > 0, t, torch.zeros_like(t))


def _combine(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if a is None or b is None:
        return b if a is None else a
    return a * b


def token_logratio(x: PreferenceInputs) -> torch.Tensor:
    """Delta_t = log pi_theta - log pi_ref on response tokens, 0 on padding ``[2B, T]``."""
    return _masked(x, x.policy_logp - x.ref_logp.detach())


def sequence_scores(x: PreferenceInputs, weight: torch.Tensor | None = None) -> torch.Tensor:
    """S(y) = sum_t w_t Delta_t ``[2B]`` (w constant, 1 when None): the kernel of spec §0."""
    delta = token_logratio(x)
    if weight is not None:
        delta = delta * _masked(x, weight.detach().to(delta.dtype))
    return delta.sum(-1)


def _pair_margin(s: torch.Tensor) -> torch.Tensor:
    b = s.shape[0] // 2
    return s[:b] - s[b:]


def sigmoid_loss(z: torch.Tensor, beta: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """-(1-eps) log s(beta z) - eps log s(-beta z), per pair."""
    loss = -F.logsigmoid(beta * z)
    if label_smoothing:
        loss = (1.0 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-beta * z)
    return loss


def _metrics(x: PreferenceInputs, beta: float) -> Metrics:
    with torch.no_grad():
        r = beta * sequence_scores(x).detach()
        logp = _masked(x, x.policy_logp.detach()).sum(-1)
        b = x.num_pairs
        r_w, r_l = r[:b], r[b:]
        return {
            "pairs": r.new_tensor(float(b)),
            "reward_chosen": r_w.mean(),
            "reward_rejected": r_l.mean(),
            "reward_margin": (r_w - r_l).mean(),
            "reward_accuracy": (r_w > r_l).to(r.dtype).mean(),
            "logp_chosen": logp[:b].mean(),
            "logp_rejected": logp[b:].mean(),
        }


@register_preference_loss("dpo")
def dpo_loss(x: PreferenceInputs, cfg: PreferenceConfig) -> tuple[torch.Tensor, Metrics]:
    """DPO (arXiv 2305.18290), token-weighted by ``x.weight`` when given; see module doc."""
    h = _pair_margin(sequence_scores(x, x.weight))
    return sigmoid_loss(h, cfg.beta, cfg.label_smoothing), _metrics(x, cfg.beta)


@register_preference_loss("ipo")
def ipo_loss(x: PreferenceInputs, cfg: PreferenceConfig) -> tuple[torch.Tensor, Metrics]:
    """IPO (arXiv 2310.12036 Eq. 17) with TRL's per-sequence length normalisation; tau = beta."""
    s = sequence_scores(x, x.weight) / x.mask.to(x.policy_logp.dtype).sum(-1).clamp_min(1.0)
    h = _pair_margin(s)
    return (h - 1.0 / (2.0 * cfg.beta)) ** 2, _metrics(x, cfg.beta)


def _tdpo(x: PreferenceInputs, cfg: PreferenceConfig, name: str, alpha: float, detach_chosen: bool):
    kl = x.require("ref_kl", name, " (rl/algorithms/token_kl.py chunked_reference_kl)")
    seq_kl = _masked(x, kl).sum(-1)
    b = x.num_pairs
    kl_w, kl_l = seq_kl[:b], seq_kl[b:]
    if detach_chosen:
        kl_w = kl_w.detach()
    z = _pair_margin(sequence_scores(x, x.weight)) - alpha * (kl_l - kl_w)
    metrics = _metrics(x, cfg.beta)
    metrics["tdpo_seq_kl_chosen"] = kl_w.detach().mean()
    metrics["tdpo_seq_kl_rejected"] = kl_l.detach().mean()
    return sigmoid_loss(z, cfg.beta, cfg.label_smoothing), metrics


@register_preference_loss("tdpo1")
def tdpo1_loss(x: PreferenceInputs, cfg: PreferenceConfig) -> tuple[torch.Tensor, Metrics]:
    """TDPO1 (arXiv 2404.11999): z = h - (SeqKL(y^l) - SeqKL(y^w))."""
    return _tdpo(x, cfg, "tdpo1", 1.0, detach_chosen=False)


@register_preference_loss("tdpo2")
def tdpo2_loss(x: PreferenceInputs, cfg: PreferenceConfig) -> tuple[torch.Tensor, Metrics]:
    """TDPO2 (arXiv 2404.11999): z = h - alpha (SeqKL(y^l) - sg[SeqKL(y^w)])."""
    return _tdpo(x, cfg, "tdpo2", cfg.tdpo_alpha, detach_chosen=True)


@register_preference_loss("tgdpo")
def tgdpo_loss(x: PreferenceInputs, cfg: PreferenceConfig) -> tuple[torch.Tensor, Metrics]:
    """TGDPO (arXiv 2506.14574): guidance-weighted tokens, 1 +/- alpha r_hat; see module doc."""
    guidance = x.require("guidance_logp", "tgdpo", " (log pi_hat of the response tokens)")
    beta_g = cfg.beta if cfg.tgdpo_guidance_beta is None else cfg.tgdpo_guidance_beta
    w, n_negative = tgdpo_weights(guidance, x.ref_logp, x.mask, beta_g, cfg.tgdpo_alpha, cfg.tgdpo_clamp)
    h = _pair_margin(sequence_scores(x, _combine(x.weight, w)))
    metrics = _metrics(x, cfg.beta)
    metrics["tgdpo_negative_weights"] = n_negative.to(h.dtype)
    metrics["tgdpo_clamped"] = n_negative.to(h.dtype) if cfg.tgdpo_clamp else h.new_zeros(())
    return sigmoid_loss(h, cfg.beta, cfg.label_smoothing), metrics


@register_preference_loss("cdpo")
def cdpo_loss(x: PreferenceInputs, cfg: PreferenceConfig) -> tuple[torch.Tensor, Metrics]:
    """cDPO (arXiv 2411.19943): rejected tokens weighted by 1 - p_CE; see module doc."""
    ce = x.require("ce_prob", "cdpo", " (p_CE from rl/credit/critical.py contrastive_token_probs)")
    eos = None
    if cfg.cdpo_eos_weight == "one":
        eos = x.require("eos_mask", "cdpo", " with preference.cdpo_eos_weight='one' (official: EOS weight 1)")
    w = cdpo_weights(ce, x.mask, only_neg=cfg.cdpo_only_neg, eos_mask=eos)
    h = _pair_margin(sequence_scores(x, _combine(x.weight, w)))
    metrics = _metrics(x, cfg.beta)
    b, m = x.num_pairs, x.mask[x.num_pairs:].to(w.dtype)
    metrics["cdpo_rejected_weight"] = (w[b:] * m).sum() / m.sum().clamp_min(1.0)
    return sigmoid_loss(h, cfg.beta, cfg.label_smoothing), metrics


@register_preference_loss("treg")
def treg_loss(x: PreferenceInputs, cfg: PreferenceConfig) -> tuple[torch.Tensor, Metrics]:
    """T-REG (arXiv 2412.02685), DPO-REG: DPO + alpha w (L_REG(y^w) + L_REG(y^l)); see module doc."""
    # masked before it multiplies log pi: junk padding times a zero upstream gradient would still be NaN
    r_hat = _masked(x, x.require("token_reward", "treg", " (rl/credit/treg.py treg_token_reward)").detach())
    h = _pair_margin(sequence_scores(x, x.weight))
    seq_w = torch.sigmoid(-cfg.beta * h)  # s(r_DPO(y^l) - r_DPO(y^w)): the DPO gradient's own magnitude
    if cfg.treg_detach_weight:
        seq_w = seq_w.detach()
    reg = _masked(x, -cfg.beta * r_hat.to(x.policy_logp.dtype) * x.policy_logp).sum(-1)
    if cfg.treg_token_reduction == "mean":
        reg = reg / x.mask.to(reg.dtype).sum(-1).clamp_min(1.0)
    b = x.num_pairs
    reg_pair = reg[:b] + reg[b:]
    metrics = _metrics(x, cfg.beta)
    metrics["treg_weight"] = seq_w.detach().mean()
    metrics["treg_reg"] = reg_pair.detach().mean()
    return sigmoid_loss(h, cfg.beta, cfg.label_smoothing) + cfg.treg_alpha * seq_w * reg_pair, metrics
