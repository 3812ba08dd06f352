"""Config dataclasses of the credit modules: one field per option, each help names the paper.

Every interpretation that specs/grpo_methods.md flags is a field here whose default is
the spec's recommendation. Each field declares its valid values (rl/fields.py: Literal types, ranges);
``check()`` checks them and the relations between fields, on construction (so a recipe with a bad value
fails while it is loaded) and again when a module is built; errors name the recipe key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rl.fields import check_fields, help_field

_h = help_field


@dataclass
class D3SConfig:
    """D3S, arXiv 2509.22115. Defaults follow specs/grpo_methods.md Open questions 1-3."""

    n_init: float = _h(0.25, "D3S (2509.22115): rows kept per group at progress 0 (N_init); spec Q1: G/4 "
                       "(fraction: <= 1; count: >= 1)", gt=0)
    n_final: float = _h(1.0, "D3S: rows kept per group at progress 1 (N_final); spec Q1: G", gt=0)
    n_unit: Literal["fraction", "count"] = _h("fraction", "D3S: n_init/n_final/n_batch are a 'fraction' (of the "
                                              "group size; of sum N_s) or a row 'count'")
    k_init: float = _h(0.2, "D3S: fraction of tokens kept at progress 0 (K_init); spec Q1: 20%", gt=0, le=1)
    k_final: float = _h(1.0, "D3S: fraction of tokens kept at progress 1 (K_final); spec Q1: 100%", gt=0, le=1)
    schedule: Literal["linear", "constant"] = _h("linear", "D3S: 'linear' in training progress p | 'constant' (the "
                                                 "*_init values throughout)")
    cross_group: bool = _h(True, "D3S: second max-variance selection over the whole batch (D1S-Cross)")
    n_batch: float | None = _h(None, "D3S: rows kept by the cross-group step (fraction of sum N_s, or a count); "
                               "None = sum of N_s (spec Q1): the step keeps all, a no-op. The shipped D3S recipes use 0.5",
                               gt=0)
    token_scope: Literal["global", "response"] = _h("global", "D3S: top-K of |A|*H 'global' over the batch (spec Q2) "
                                                    "| per 'response'")
    zero_tol: float = _h(1e-6, "D3S: |A| <= this counts as a zero advantage (never kept while non-zero rows remain)",
                         ge=0)
    schedule_steps: int | None = _h(None, "D3S: optimizer steps over which the linear schedule relaxes, p = "
                                    "min(1, step / (schedule_steps - 1)); None = trainer.steps. Set it to run D3S "
                                    "longer than its schedule (e.g. to an equal trainer-time budget)", ge=1)

    def __post_init__(self) -> None:
        self.check()

    def check(self, prefix: str = "algorithm.d3s") -> None:
        check_fields(self, prefix)
        for name in ("n_init", "n_final") + (("n_batch",) if self.n_batch is not None else ()):
            v = getattr(self, name)
            if self.n_unit == "fraction" and v > 1:
                raise ValueError(f"{prefix}.{name}: {v} is out of range with {prefix}.n_unit=fraction (valid: in (0, 1])")
            if self.n_unit == "count" and v < 1:
                raise ValueError(f"{prefix}.{name}: {v} rows; with {prefix}.n_unit=count it must be >= 1")


@dataclass
class THRConfig:
    """THR, arXiv 2510.03669 (NTHR special case: arXiv 2505.18830). Spec §3 and Open questions 4-5."""

    mode: Literal["thr", "nthr"] = _h("thr", "THR (2510.03669): 'thr' sign reweighting | 'nthr' (2505.18830) scale "
                                      "negative tokens like positives by eta")
    p: float = _h(0.5, "THR: A' = A*(1 + p*sign(THR)); >0 exploitation (greedy acc), <0 exploration (pass@k); range "
                  "unknown", any_value=True)
    sign: Literal["advantage", "score"] = _h("advantage", "THR: sign convention, THR = A*s ('advantage', spec [I]) | "
                                             "THR = s ('score')")
    tau_beta: float = _h(1.0, "THR/NTHR: tau = tau_beta * min over correct responses of their mean token score "
                         "(beta=1); any sign (a large negative value flags every token)", any_value=True)
    gate: bool = _h(True, "THR: reweight only tokens with |s| > |tau| (spec [I]); False reweights every token")
    below_tau: Literal["keep", "zero", "mask"] = _h("keep", "THR: tokens under the gate keep A ('keep') | get A=0 "
                                                    "('zero', THR-only) | leave the loss ('mask')")
    vocab: Literal["group", "full"] = _h("group", "THR: g over the group's token ids V* ('group', the note's "
                                         "approximation) | exact 'full' vocabulary")
    vocab_chunk: int = _h(8192, "THR: vocabulary chunk of the streamed scores", ge=1)
    token_chunk: int = _h(1024, "THR: token chunk of the streamed scores", ge=1)
    eta: float = _h(0.0, "NTHR: advantage scale of flagged negative tokens (v1: 0)", ge=0)
    eta_mode: Literal["constant", "balance"] = _h("constant", "NTHR: 'constant' eta | 'balance' eta = 2|0.5 - "
                                                  "frac_correct| (third-party note)")
    positive_set: Literal["accuracy", "reward", "advantage"] = _h(
        "accuracy", "THR/NTHR: correct responses are those with the accuracy label (exp.correct, 'accuracy') | "
        "reward > correct_threshold ('reward') | A > 0 ('advantage')")
    correct_threshold: float = _h(0.5, "THR/NTHR: with positive_set=reward, a total reward above this counts as "
                                  "correct", any_value=True)

    def __post_init__(self) -> None:
        self.check()

    def check(self, prefix: str = "algorithm.thr") -> None:
        check_fields(self, prefix)


@dataclass
class TWConfig:
    """TW-GRPO, arXiv 2505.24718 (official code longmalongma/TW-GRPO). Spec §4 and Open question 6."""

    alpha: float = _h(1.7, "TW-GRPO (2505.24718): token weights lie in [1, alpha] (scripts/tw-grpo.sh: 1.7)", ge=1)
    detach: bool = _h(True, "TW-GRPO: weights are constants (deviation: the official code backpropagates through them)")
    include_padding: bool = _h(True, "TW-GRPO: ended responses count as uniform -log V rows (official) | False: only live rows")
    positions: Literal["group", "batch"] = _h("group", "TW-GRPO: min-max over positions up to the group's longest "
                                              "response ('group') | all T ('batch')")
    temperature_scaled: bool = _h(False, "TW-GRPO: log-probs from logits/temperature (True) | raw logits like the official code")
    clamp: float = _h(11.0, "TW-GRPO: |Delta| clamp inside exp(Delta) - Delta - 1 (official: 11)", gt=0)
    eps: float = _h(1e-8, "TW-GRPO: added to max - min in the min-max normalisation (official: 1e-8)", gt=0)
    vocab_chunk: int = _h(8192, "TW-GRPO: vocabulary chunk of the streamed divergence", ge=1)
    token_chunk: int = _h(64, "TW-GRPO: positions per chunk (memory is G * token_chunk * vocab_chunk floats)", ge=1)

    def __post_init__(self) -> None:
        self.check()

    def check(self, prefix: str = "algorithm.tw") -> None:
        check_fields(self, prefix)


@dataclass
class RMTConfig:
    """RMT, arXiv 2509.24375. Spec §5 and Open question 7 (most values were not published)."""

    enable: bool = _h(False, "RMT mid-training: data.source holds documents (data.prompt_field = the text); RL prompts "
                      "are curriculum-sampled positions, NTP loss on the other tokens (rl/midtrain.py)")
    docs_per_step: int = _h(4, "RMT: documents drawn per step; trainer.prompts_per_step positions are sampled among "
                            "them", ge=1)
    max_doc_tokens: int = _h(256, "RMT: documents are cut to this many tokens (the NTP loss and positions live in this "
                             "window)", ge=1)
    context_tokens: int = _h(64, "RMT: at most this many document tokens before the position go into its prompt", ge=1)
    min_context: int = _h(4, "RMT: positions need at least this many preceding document tokens", ge=1)
    prompt_template: str = _h(
        "Continue the text below by one token. Think inside <think></think> using exactly {budget} tokens, then "
        "write only the next token.\n\nText: {context}",
        "RMT: instruction around the prefix; {budget} = B_t, {context} = the document prefix (str.format: write "
        "other braces doubled)", placeholders=("budget", "context"))
    budget_init: int = _h(800, "RMT (2509.24375): initial think-token budget B_0", ge=1)
    budget_min: int = _h(1, "RMT: smallest budget B_min", ge=1)
    gamma: float = _h(0.2, "RMT: B_t = max(B_min, floor(B_0 * gamma^(t / T^budget_k)))", gt=0, le=1)
    budget_k: float = _h(1.0, "RMT: exponent k of T in t/T^k (paper note: 1; the themoonlight review writes T^k)",
                         gt=0)
    ntp_coef: float = _h(0.1, "RMT: lambda in L = L_RL + lambda * L_NTP", ge=0)
    ntp_reduction: Literal["mean", "sum"] = _h("mean", "RMT: L_NTP over the other tokens as a 'mean' (usual CE) | "
                                               "'sum' (the note's formula)")
    ntp_schedule: Literal["split", "every"] = _h(
        "split", "RMT: the step's documents are spread over the mini-batches of each epoch ('split') | all of them "
        "join every optimizer step ('every'); the paper does not say")
    t1: float = _h(0.3, "RMT: curriculum transition t_1 as a fraction of training", ge=0, le=1)
    t2: float = _h(0.7, "RMT: curriculum transition t_2 as a fraction of training", ge=0, le=1)
    p_t1: list[float] = _h([0.6, 0.3, 0.1], "RMT: (easy, medium, hard) tier probabilities before t_1, summing to 1 "
                           "(spec Q7)", ge=0, le=1, min_len=3, max_len=3)
    p_t2: list[float] = _h([0.1, 0.3, 0.6], "RMT: (easy, medium, hard) tier probabilities after t_2, summing to 1 "
                           "(spec Q7)", ge=0, le=1, min_len=3, max_len=3)
    tier_bounds: list[float] | None = _h(None, "RMT: two increasing entropy thresholds between tiers; None = batch "
                                         "terciles (spec Q7)", min_len=2, max_len=2)
    entropy_model: Literal["reference", "policy"] = _h("reference", "RMT: model whose entropy ranks difficulty: "
                                                       "'reference' (spec Q7) | 'policy'")

    def __post_init__(self) -> None:
        self.check()

    def check(self, prefix: str = "algorithm.rmt") -> None:
        check_fields(self, prefix)
        if self.budget_init < self.budget_min:
            raise ValueError(f"{prefix}.budget_init/budget_min: need budget_init >= budget_min >= 1, "
                             f"got {self.budget_init}, {self.budget_min}")
        if self.min_context >= self.max_doc_tokens:
            raise ValueError(f"{prefix}.min_context: {self.min_context} leaves no position in documents of "
                             f"{prefix}.max_doc_tokens={self.max_doc_tokens} tokens")
        if self.t1 > self.t2:
            raise ValueError(f"{prefix}.t1/t2: need 0 <= t1 <= t2 <= 1, got {self.t1}, {self.t2}")
        for name in ("p_t1", "p_t2"):
            probs = list(getattr(self, name))
            if abs(sum(probs) - 1.0) > 1e-6:
                raise ValueError(f"{prefix}.{name}: {probs} must be 3 non-negative probabilities summing to 1")
        if self.tier_bounds is not None and self.tier_bounds[0] > self.tier_bounds[1]:
            raise ValueError(f"{prefix}.tier_bounds: {self.tier_bounds} must be two increasing entropy thresholds")
