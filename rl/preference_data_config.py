"""``PreferenceDataConfig``: where preference pairs come from and how they are read (rl/preference_data.py).

Kept apart from rl/preference_data.py (which imports trl/transformers) so that rl/config.py can mount it
as the ``preference_data:`` recipe section without the import cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from rl.fields import help_field as _h


@dataclass
class PreferenceDataConfig:
    source: str = _h("", "local json/jsonl/parquet/csv file or directory, or a hub dataset name, holding pairs")
    subset: str | None = _h(None, "hub dataset configuration name")
    train_split: str = _h("train", "split used for training")
    test_split: str = _h("", "split used for evaluation ('' = none)")
    holdout_fraction: float = _h(0.0, "when the source lacks test_split: hold out this fraction of the train split")
    prompt_field: str = _h("prompt", "prompt column (text or messages); '' or absent = implicit prompt, the shared "
                           "start of chosen and rejected (TRL extract_prompt)")
    chosen_field: str = _h("chosen", "preferred response column (text or messages)")
    rejected_field: str = _h("rejected", "dispreferred response column (text or messages)")
    chosen_weight_field: str = _h("", "column of per-token values for the chosen response, one per response token "
                                  "incl. EOS ('' = 1 on every token)")
    rejected_weight_field: str = _h("", "column of per-token values for the rejected response (e.g. cDPO's p_CE)")
    extra_columns: list[str] = _h([], "more columns kept on each pair (answers, metadata)")
    apply_chat_template: bool = _h(False, "text rows: prompt as a user turn, responses as assistant turns, templated; "
                                   "conversational rows are always templated")
    max_prompt_length: int = _h(512, "prompts longer than this (tokens) are bad pairs (cDPO: 512)")
    max_length: int = _h(1024, "prompt + response tokens at most (cDPO: 1024), see truncation_mode")
    truncation_mode: str = _h("none", "none (a longer pair is a bad pair) | keep_start (cut the response's end)")
    on_bad_pair: str = _h("drop", "drop (count per kind and log) | error (name the file, row and field)")
