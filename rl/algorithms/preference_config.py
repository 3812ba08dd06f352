"""``PreferenceConfig``: the options of the DPO-family losses (rl/algorithms/preference.py), one field each.

Every interpretation that specs/dpo_methods.md §7 flags is a field whose default is the spec's
recommendation; the help names the paper. ``check()`` runs on construction and names the recipe key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from rl.fields import check_fields, help_field

_h = help_field

# T-REG's contrastive prompts (arXiv 2412.02685 §3; the paper's exact wording is not public, spec §5):
# the same response is scored by the reference under both, aligned by response-token offset.
TREG_BETTER = ("Write a response to the request below that is helpful, correct, coherent and concise.\n\n"
               "{prompt}")
TREG_WORSE = ("Write a response to the request below that is unhelpful, incorrect, incoherent and verbose.\n\n"
              "{prompt}")

# The registered names (rl/algorithms/preference.py); a test keeps the two in step.
PreferenceLoss = Literal["dpo", "ipo", "tdpo1", "tdpo2", "tgdpo", "cdpo", "treg"]
PREFERENCE_LOSS_NAMES = get_args(PreferenceLoss)


@dataclass
class PreferenceConfig:
    """DPO 2305.18290, IPO 2310.12036, TDPO 2404.11999, TGDPO 2506.14574, cDPO 2411.19943, T-REG 2412.02685"""

    loss: PreferenceLoss = _h("dpo", "preference loss (rl/algorithms/preference.py)")
    beta: float = _h(0.1, "DPO beta (2305.18290; TRL default 0.1); IPO's tau; TDPO/TGDPO/cDPO/T-REG beta", gt=0)
    label_smoothing: float = _h(0.0, "conservative DPO eps: -(1-eps) log s(beta h) - eps log s(-beta h), "
                                     "for every sigmoid loss (not IPO); 0 = plain DPO", ge=0, lt=0.5)
    tdpo_alpha: float = _h(0.5, "TDPO2 (2404.11999): weight of SeqKL(y_l) - sg(SeqKL(y_w)) (tdpo.yaml 0.5)", ge=0)
    tgdpo_alpha: float = _h(0.5, "TGDPO (2506.14574): token weights 1 +/- alpha * r_hat (official 0.5)", ge=0)
    tgdpo_guidance_beta: float | None = _h(None, "TGDPO: r_hat = beta_g (log pi_hat - log pi_ref); None = "
                                                 "the run's beta (official code, spec Q5)", gt=0)
    tgdpo_clamp: bool = _h(False, "TGDPO: clamp negative token weights at 0 (a deviation; the official code "
                                  "does not; spec §6.8); the count is logged either way")
    cdpo_only_neg: bool = _h(True, "cDPO (2411.19943): weight only rejected tokens by 1 - p_CE (official, "
                                   "spec Q2); False also weights chosen tokens by p_CE (ablation)")
    cdpo_beta_ce: float = _h(1.0, "cDPO: p_CE = softmax((1+b) log p_pos - b log p_neg)[y_t] (code form, "
                                  "b=1 hard-coded there, spec Q1)", ge=0)
    cdpo_eos_weight: Literal["one", "score"] = _h("one", "cDPO: EOS weight 'one' on both sides (official code; needs eos_mask) | "
                                     "'score' (EOS weighted by its p_CE like any token)")
    treg_alpha: float = _h(0.25, "T-REG (2412.02685): weight of the token regulariser (tuned in "
                                 "{0.1, 0.25, 0.5}; spec Q7)", ge=0)
    treg_token_reduction: Literal["sum", "mean"] = _h("sum", "T-REG: L_REG summed over tokens ('sum', spec Q7) | "
                                                      "'mean'")
    treg_detach_weight: bool = _h(True, "T-REG: sequence weight w = s(r_l - r_w) is a constant (spec Q7)")
    treg_evaluator: Literal["reference", "policy"] = _h("reference", "T-REG: the model scoring the response under both prompts: 'reference' "
                                          "(frozen, spec Q7) | 'policy' (the current policy, no grad)")
    treg_better_template: str = _h(TREG_BETTER, "T-REG: the 'better' revision prompt; {prompt} stands for the "
                                                "pair's prompt tokens (templates unpublished, spec §5)",
                                      placeholders=("prompt",))
    treg_worse_template: str = _h(TREG_WORSE, "T-REG: the 'worse' revision prompt; {prompt} as above",
                                  placeholders=("prompt",))
    chunk_tokens: int = _h(1024, "TDPO KL / cDPO p_CE: tokens per chunk of the full-vocabulary passes", ge=1)

    def __post_init__(self) -> None:
        self.check()

    def check(self, prefix: str = "preference") -> None:
        """The fields' declared valid values (rl/fields.py), then the relation between two of them."""
        check_fields(self, prefix)
        if self.loss == "ipo" and self.label_smoothing:
            raise ValueError(f"{prefix}.label_smoothing: {self.label_smoothing} applies to sigmoid losses; "
                             f"{prefix}.loss=ipo has no label smoothing")
