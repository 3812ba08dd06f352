"""``PreferenceDataConfig``: where preference pairs come from and how they are read (rl/preference_data.py).

Kept apart from rl/preference_data.py (which imports trl/transformers) so that rl/config.py can mount it
as the ``preference_data:`` recipe section without the import cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rl.fields import help_field as _h


@dataclass
class PreferenceDataConfig:
    source: str = _h("", "local json/jsonl/parquet/csv file or directory, or a hub dataset name, holding pairs "
                     "(family=dpo needs one: rl/dpo_config.py)", any_value=True)
    subset: str | None = _h(None, "hub dataset configuration name", any_value=True)
    train_split: str = _h("train", "split used for training", min_len=1)
    test_split: str = _h("", "split used for evaluation ('' = none)", any_value=True)
    holdout_fraction: float = _h(0.0, "when the source lacks test_split: hold out this fraction of the train split",
                                 ge=0, lt=1)
    prompt_field: str = _h("prompt", "prompt column (text or messages); '' or absent = implicit prompt, the shared "
                           "start of chosen and rejected (TRL extract_prompt)", any_value=True)
    chosen_field: str = _h("chosen", "preferred response column (text or messages)", min_len=1)
    rejected_field: str = _h("rejected", "dispreferred response column (text or messages)", min_len=1)
    chosen_weight_field: str = _h("", "column of per-token values for the chosen response, one per response token "
                                  "incl. EOS ('' = 1 on every token)", any_value=True)
    rejected_weight_field: str = _h("", "column of per-token values for the rejected response (e.g. cDPO's p_CE)",
                                    any_value=True)
    extra_columns: list[str] = _h([], "more columns kept on each pair (answers, metadata)", any_value=True)
    apply_chat_template: bool = _h(False, "text rows: prompt as a user turn, responses as assistant turns, templated; "
                                   "conversational rows are always templated")
    max_prompt_length: int = _h(512, "prompts longer than this (tokens) are bad pairs (cDPO: 512); below max_length",
                                ge=1)
    max_length: int = _h(1024, "prompt + response tokens at most (cDPO: 1024), see truncation_mode", ge=2)
    truncation_mode: Literal["none", "keep_start"] = _h("none", "none (a longer pair is a bad pair) | keep_start (cut "
                                                        "the response's end)")
    on_bad_pair: Literal["drop", "error"] = _h("drop", "drop (count per kind and log) | error (name the file, row and "
                                               "field)")

    def check(self, prefix: str = "preference_data") -> None:
        """The relations between fields (each field's own valid values are declared on it, rl/fields.py)."""
        if self.max_prompt_length >= self.max_length:
            raise ValueError(f"{prefix}.max_prompt_length: {self.max_prompt_length} must be below {prefix}.max_length="
                             f"{self.max_length} (room for a response)")
        if self.chosen_field == self.rejected_field:
            raise ValueError(f"{prefix}.chosen_field/rejected_field: both are {self.chosen_field!r}; name two "
                             "different columns")
