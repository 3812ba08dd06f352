"""The DPO family's run options (recipe section ``dpo:``) and the cross-section checks of a DPO recipe.

A recipe trains the DPO family when ``family: dpo``. The three sections it reads:

* ``preference:`` (rl/algorithms/preference_config.py ``PreferenceConfig``): the loss and its options;
* ``preference_data:`` (rl/preference_data_config.py ``PreferenceDataConfig``): where offline pairs come
  from; ``source: builtin:self`` makes them from the policy's own samples on the ``data:`` prompts
  (sampled with ``rollout:``, scored with ``rewards:``, paired by ``dpo.pair_rule``; cached, rl/pair_source.py),
  ``builtin:critical`` runs `tokencredit critical-tokens` on them (cDPO pairs + p_CE columns, cached);
* ``dpo:`` (this file): offline or online, batch, epochs, the reference pass, the guidance model.

``validate_dpo`` runs from rl/config.py's ``validate``; every message names the key(s) it is about.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, get_args

from rl.fields import help_field as _h

log = logging.getLogger(__name__)

Family = Literal["grpo", "dpo"]  # the type of Config.family
PairRule = Literal["default", "cdpo"]  # rl/pairs.py RULES (a test keeps them in step)
FAMILIES = get_args(Family)
PAIR_RULES = get_args(PairRule)
BUILTIN_SELF = "builtin:self"  # pairs from the model's own samples on data: (rl/pair_source.py)
BUILTIN_CRITICAL = "builtin:critical"  # the same + cDPO's p_CE columns (rl/critical_tokens.py)
BUILTIN_PAIRS = (BUILTIN_SELF, BUILTIN_CRITICAL)


@dataclass
class DPOLoopConfig:
    mode: Literal["offline", "online"] = _h(
        "offline", "offline (epochs over a fixed set of pairs) | online (each step samples rollout.n responses per "
        "prompt from the current policy, pairs them by dpo.pair_rule, updates, syncs)")
    pairs_per_step: int = _h(8, "offline: pairs per optimizer step (online: trainer.prompts_per_step prompts, "
                             "at most one pair each)", ge=1)
    epochs: float = _h(0.0, "offline: > 0 sets trainer.steps = ceil(epochs * pairs / pairs_per_step); 0 = use "
                       "trainer.steps", ge=0)
    shuffle: bool = _h(True, "offline: a fresh seeded pair order each epoch (trainer.seed; resumes repeat it)")
    reference_logp: Literal["on_the_fly", "precompute"] = _h(
        "on_the_fly", "on_the_fly (a no-grad reference pass every step, as TRL) | precompute (once per pair before "
        "training, kept per response token; offline only)")
    guidance_model: str | None = _h(None, "TGDPO (2506.14574): the guidance model pi_hat (a DPO-trained policy; "
                                    "bundled name or HF folder), loaded frozen only when preference.loss=tgdpo",
                                    any_value=True)
    pair_rule: PairRule = _h("default", "online and builtin:self pairs (rl/pairs.py): default (a correct vs an "
                             "incorrect sample) | cdpo (most frequent correct vs incorrect answer, 2411.19943)")
    build_seed: int = _h(0, "builtin:self: seed of the pair sampling and selection", ge=0)
    build_limit: int | None = _h(None, "builtin:self: use at most this many prompts of data.train_split", ge=1)
    keep_truncated: bool = _h(False, "online and builtin:self: allow responses cut at rollout.max_tokens "
                              "(they have no EOS)")
    eval_pairs: int = _h(256, "held-out pairs for eval/reward_accuracy (preference_data.test_split or "
                         "holdout_fraction; online: none); 0 = off", ge=0)
    eval_generation: bool = _h(False, "offline: also greedy accuracy / pass@k on data.test_split with the "
                               "rollout workers (online always does, as the GRPO loop)")


def online(cfg) -> bool:
    return cfg.family == "dpo" and cfg.dpo.mode == "online"


def needs_rollout(cfg) -> bool:
    """Whether a DPO run needs rollout workers (and reward functions)."""
    d = cfg.dpo
    return d.mode == "online" or d.eval_generation or cfg.preference_data.source in BUILTIN_PAIRS


def validate_dpo(cfg, source: str, fail) -> None:
    """Checks of ``family: dpo`` recipes; ``fail(source, key, msg)`` builds the error to raise."""
    d, p, pd, t = cfg.dpo, cfg.preference, cfg.preference_data, cfg.trainer
    # the fields' own valid values (choices, ranges) are declared on them and checked before this
    if cfg.family != "dpo":
        return
    if t.micro_batch_size < 2:
        raise fail(source, "trainer.micro_batch_size",
                   f"{t.micro_batch_size}: a preference micro-batch holds whole pairs (2 rows each); use >= 2")
    if p.loss == "tgdpo" and not d.guidance_model:
        raise fail(source, "dpo.guidance_model", "preference.loss=tgdpo needs the guidance model pi_hat "
                   "(a DPO-trained policy, arXiv 2506.14574); set dpo.guidance_model")
    if d.guidance_model and p.loss != "tgdpo":
        log.warning("%s: dpo.guidance_model is set but preference.loss=%s does not use it; it is not loaded",
                    source, p.loss)
    if d.mode == "online":
        if p.loss == "cdpo":
            raise fail(source, "preference.loss", "cdpo weights rejected tokens by p_CE from the pair data's "
                       "weight columns (preference_data.rejected_weight_field); online pairs have none: use "
                       "dpo.mode=offline with `tokencredit build-pairs` + p_CE scores")
        if d.reference_logp == "precompute":
            raise fail(source, "dpo.reference_logp", "precompute needs a fixed set of pairs; online pairs are new "
                       "every step (use on_the_fly)")
        if cfg.rollout.n < 2:
            raise fail(source, "rollout.n", "online DPO pairs two of a prompt's samples: needs rollout.n >= 2")
    else:
        if not pd.source:
            raise fail(source, "preference_data.source", "empty: name a pairs file/folder, a hub dataset, or "
                       f"{BUILTIN_SELF!r} (pairs from the model's own samples on data.source)")
        if pd.source.startswith("builtin:") and pd.source not in BUILTIN_PAIRS:
            raise fail(source, "preference_data.source", f"{pd.source!r}: the built-in pair sources are "
                       f"{list(BUILTIN_PAIRS)} (pairs from the model's own samples on the data: prompts; the "
                       "second with cDPO's p_CE columns)")
        if pd.source == BUILTIN_CRITICAL and p.loss != "cdpo" and (pd.chosen_weight_field or pd.rejected_weight_field):
            raise fail(source, "preference_data.rejected_weight_field", f"the weight columns of {BUILTIN_CRITICAL} "
                       f"are cDPO's p_CE, read by preference.loss=cdpo; with preference.loss={p.loss} they would "
                       "multiply the token weights: clear preference_data.*_weight_field")
        if pd.holdout_fraction > 0 and not pd.test_split:
            raise fail(source, "preference_data.test_split", f"'' with preference_data.holdout_fraction="
                       f"{pd.holdout_fraction}: name the held-out split (e.g. test; held out only when the source "
                       "has no such split)")
        if p.loss == "cdpo":
            if not pd.rejected_weight_field:
                raise fail(source, "preference_data.rejected_weight_field",
                           "preference.loss=cdpo reads p_CE of each rejected token from this column "
                           "(rl/credit/critical.py scores); set it")
            if not p.cdpo_only_neg and not pd.chosen_weight_field:
                raise fail(source, "preference_data.chosen_weight_field",
                           "preference.cdpo_only_neg=false weights chosen tokens by p_CE: set this column too")
    if needs_rollout(cfg) and not cfg.rewards.functions:
        what = "online DPO" if d.mode == "online" else (
            f"preference_data.source={pd.source}" if pd.source in BUILTIN_PAIRS else "dpo.eval_generation")
        raise fail(source, "rewards.functions", f"{what} scores samples: at least one reward function is required")
    if cfg.algorithm.kl.coef > 0 or cfg.algorithm.credit:
        raise fail(source, "algorithm.kl.coef" if cfg.algorithm.kl.coef > 0 else "algorithm.credit",
                   "GRPO-family settings have no effect with family=dpo (the DPO losses have their own "
                   "reference term; token credit is preference.loss)")
