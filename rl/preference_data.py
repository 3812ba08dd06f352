"""Preference pairs for the DPO family: load, template, tokenize, check, collate.

Sources are those of rl/data.py (``load_split``): a local json/jsonl/parquet/csv file or a
directory of them, or a hub dataset name (unreachable hub = a quick error naming the key).
Built-in tasks are prompt sets without pairs; ``rl.build_pairs`` makes pairs from them.

Row forms (TRL's, handled with ``trl.data_utils``):

* standard: ``prompt``, ``chosen``, ``rejected`` are text. The prompt is used as written
  (no template) unless ``apply_chat_template``: then the prompt becomes a user turn and
  each response an assistant turn. Files written by ``build_pairs`` hold the already
  templated prompt, so they are read with ``apply_chat_template=false`` (the default).
* conversational: any of them is a list of ``{"role", "content"}`` messages; text parts are
  wrapped as above and the chat template is applied (``trl.data_utils.apply_chat_template``).
* implicit prompt: ``prompt_field`` is '' or not a column of the source; the prompt is the
  shared start of chosen and rejected (``maybe_extract_prompt``), text or conversations. A
  text prompt beside full conversations (not starting with an assistant turn) is TRL's
  redundant-prompt case: extracted too; beside assistant turns it is the user turn.

Tokenisation (spec §0 and §6). ``prompt_ids`` = the prompt text's tokens (templated text
has no added special tokens; plain text gets the tokenizer's, as in rl/data.py). A response's
ids are the tokens of prompt+response after the prompt's tokens when those are a prefix
of them; when they are not (a prompt ending in a space merges with the response's first
word), the response is tokenized alone, so that ``prompt_ids`` stay the tokens the policy is
sampled from; ``PairSet.prefix_mismatch`` counts such responses. Then EOS: a templated
response ends right after its last EOS token (the "\\n" templates write after the turn is
not something the policy generates), a text response gets EOS appended unless it ends with
one. EOS is a response token: inside ``completion_mask`` and weighted like the others.

Per-token weights (``chosen_weight_field`` / ``rejected_weight_field``): one value per
response token, EOS included, i.e. ``len(weights) == len(chosen_ids)``. Response-token
offsets are the alignment key: score ``PairRow.chosen_ids`` (not the text), store the
values at the same offsets. A side without a column weighs 1 on every token.

Lengths: a prompt longer than ``max_prompt_length`` is a bad pair. A pair whose
prompt+response exceeds ``max_length`` is a bad pair with ``truncation_mode=none`` (cDPO
filters, spec §3.2); with ``keep_start`` the response keeps its first tokens (its EOS is
cut, ``*_truncated`` is set) and its weights are cut at the same offset.

Bad pairs (``BAD_KINDS``): a missing or empty field, malformed messages, chosen equal to
rejected (also after truncation), a prompt or pair too long, a weight column that is
missing, not numbers or of the wrong length. ``on_bad_pair=drop`` counts them per kind
(``PairSet.dropped``, ``PairSet.metrics()``, one warning); ``error`` raises a DataError
naming the source (and file), split, row and key, as rl/data.py does.

Collation (``collate_pairs``): B pairs -> 2B rows, chosen in [0:B], rejected in [B:2B]
(TRL's layout, spec §0), in the project's tensor contract (rl/experience.py).
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from trl.data_utils import apply_chat_template, is_conversational, maybe_extract_prompt

from rl.data import _MISSING, BUILTIN_PREFIX, DataError, _lookup, load_split, tokenize_prompts
from rl.experience import build_completion_mask, left_pad, right_pad
from rl.preference_data_config import PreferenceDataConfig  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

BAD_KINDS = ("missing", "empty", "malformed", "identical", "too_long", "bad_weight")
_SOURCE_KEYS = re.compile(r"\bdata\.(source|subset|train_split|test_split|holdout_fraction)\b")


@dataclass
class PairRow:
    index: int  # row index in the source split
    prompt: str  # prompt text after templating (what prompt_ids encode)
    chosen: str  # response texts after templating, before the EOS rule
    rejected: str
    prompt_ids: list[int]
    chosen_ids: list[int]  # response tokens, EOS included unless truncated
    rejected_ids: list[int]
    chosen_weight: list[float] | None = None  # one per response token; None when no weight column is set
    rejected_weight: list[float] | None = None
    chosen_truncated: bool = False
    rejected_truncated: bool = False
    columns: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairSet:
    rows: list[PairRow]
    dropped: dict[str, int]  # bad-pair kind -> count
    source: str
    split: str
    pad_token_id: int
    prefix_mismatch: int = 0  # responses tokenized alone (prompt tokens not a prefix of prompt+response)
    truncated: int = 0  # responses cut by truncation_mode=keep_start

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> PairRow:
        return self.rows[i]

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        return collate_pairs([self.rows[i] for i in indices], self.pad_token_id)

    def metrics(self) -> dict[str, float]:
        out = {"data/pairs": len(self.rows), "data/pairs/dropped": sum(self.dropped.values()),
               "data/pairs/response_tokenized_alone": self.prefix_mismatch,
               "data/pairs/responses_truncated": self.truncated}
        out.update({f"data/pairs/dropped/{k}": v for k, v in self.dropped.items()})
        return out


def collate_pairs(rows: Sequence[PairRow], pad_token_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> the trainer's batch of 2B rows: chosen rows [0:B], rejected rows [B:2B].

    prompt_ids/prompt_mask [2B,P] left-padded; completion_ids [2B,T] right-padded with
    completion_mask (float) 1 on response tokens incl. EOS; truncated [2B]; pair_index [B]
    (source row of each pair); weight [2B,T] (0 on padding) when the rows carry weights.
    """
    completions = [r.chosen_ids for r in rows] + [r.rejected_ids for r in rows]
    prompt_ids, prompt_mask = left_pad([r.prompt_ids for r in rows] * 2, pad_token_id)
    completion_ids = right_pad(completions, pad_token_id)
    out = {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
        "completion_mask": build_completion_mask(torch.tensor([len(c) for c in completions]),
                                                 completion_ids.shape[1]),
        "truncated": torch.tensor([r.chosen_truncated for r in rows] + [r.rejected_truncated for r in rows]),
        "pair_index": torch.tensor([r.index for r in rows], dtype=torch.long),
    }
    if rows and rows[0].chosen_weight is not None:
        weights = [r.chosen_weight for r in rows] + [r.rejected_weight for r in rows]
        out["weight"] = right_pad(weights, 0.0, dtype=torch.float32)[:, : completion_ids.shape[1]]
    return out


class _BadPair(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def load_pairs(cfg: PreferenceDataConfig, tokenizer, split: str | None = None, limit: int | None = None, *,
               section: str = "preference", allow_empty: bool = False) -> PairSet:
    """Pairs of ``split`` (default ``cfg.train_split``) of ``cfg.source``, tokenized and checked.

    ``section`` is where the config is mounted; messages name keys as ``<section>.<field>``.
    ``limit`` keeps the first source rows. No surviving pair is an error unless ``allow_empty``.
    """
    _check_cfg(cfg, section)
    if tokenizer.eos_token_id is None:
        raise DataError(f"{section}: the tokenizer has no eos_token_id; responses must end in EOS")
    split = split or cfg.train_split
    raw, indices, available, origin = _load(cfg, split, section)
    if limit is not None and limit < len(indices):
        raw = raw[:limit] if isinstance(raw, list) else raw.select(range(limit))
        indices = indices[:limit]
    where = f"{section}.source={cfg.source!r}{origin} split {split!r}"
    reader = _Reader(cfg, tokenizer, section, available, where)
    dropped: Counter[str] = Counter()

    def bad(i: int, e: _BadPair) -> None:
        if cfg.on_bad_pair == "error":
            raise DataError(f"{where} row {i}: {e} ({section}.on_bad_pair=error; set it to 'drop' to skip such "
                            f"pairs)") from None
        dropped[e.kind] += 1

    texts = {}
    for pos, row in enumerate(raw):
        try:
            texts[pos] = reader.render(row, indices[pos])
        except _BadPair as e:
            bad(indices[pos], e)
    tokens = reader.tokenize(list(texts.values()))
    rows = []
    for (pos, text), tok in zip(texts.items(), tokens):
        try:
            rows.append(reader.pair(raw[pos], indices[pos], text, tok))
        except _BadPair as e:
            bad(indices[pos], e)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = PairSet(rows, dict(dropped), cfg.source, split, pad, reader.prefix_mismatch, reader.truncated)
    _report(out, where, len(indices), allow_empty)
    return out


def _report(ps: PairSet, where: str, total: int, allow_empty: bool) -> None:
    kinds = ", ".join(f"{k}: {v}" for k, v in ps.dropped.items())
    if ps.dropped:
        log.warning("%s: dropped %d of %d pairs (%s)", where, sum(ps.dropped.values()), total, kinds)
    if ps.prefix_mismatch:
        log.warning("%s: %d responses tokenized alone: the prompt's tokens are not a prefix of prompt+response "
                    "(typically a prompt ending in a space)", where, ps.prefix_mismatch)
    if not ps.rows and not allow_empty:
        raise DataError(f"{where}: all {total} pairs were dropped ({kinds})" if total else f"{where}: no rows")


def _check_cfg(cfg: PreferenceDataConfig, section: str) -> None:
    """The fields' declared valid values and their relations (rl/config.py checks the same for a recipe;
    this covers configs built in code)."""
    from rl.fields import check_fields

    try:
        check_fields(cfg, section)
        cfg.check(section)
    except ValueError as e:
        raise DataError(str(e)) from None
    if not cfg.source:
        raise DataError(f"{section}.source is empty: name a file, a directory or a hub dataset")


def _load(cfg: PreferenceDataConfig, split: str, section: str):
    if cfg.source.startswith(BUILTIN_PREFIX):
        raise DataError(f"{section}.source={cfg.source!r} is a built-in prompt set without chosen/rejected "
                        f"responses; make pairs from it with `tokencredit build-pairs` (rl.build_pairs)")
    try:
        return load_split(cfg, split)
    except DataError as e:  # rl/data.py names its keys data.*; name them where this config is mounted
        raise type(e)(_SOURCE_KEYS.sub(lambda m: f"{section}.{m.group(1)}", str(e))) from e


def _is_messages(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in v)


def _blank(v: Any) -> bool:
    return not v.strip() if isinstance(v, str) else all(not m["content"].strip() for m in v)


def _turns(v: Any, role: str) -> list[dict]:
    return [{"role": role, "content": v}] if isinstance(v, str) else v


class _Reader:
    """Per-row steps of load_pairs; raises _BadPair for a bad pair, DataError for a setup problem."""

    def __init__(self, cfg: PreferenceDataConfig, tokenizer, section: str, available: list[str], where: str):
        self.cfg, self.tok, self.section, self.available, self.where = cfg, tokenizer, section, available, where
        self.eos = tokenizer.eos_token_id
        self.implicit = not cfg.prompt_field or cfg.prompt_field.split(".")[0] not in available
        self.prefix_mismatch = 0
        self.truncated = 0

    def key(self, name: str) -> str:
        return f"{self.section}.{name}={getattr(self.cfg, name)!r}"

    def value(self, row: dict, name: str) -> Any:
        v = _lookup(row, getattr(self.cfg, name))
        if v is _MISSING or v is None:
            raise _BadPair("missing", f"{self.key(name)} is missing (available columns: {self.available})")
        if isinstance(v, list) and not v or isinstance(v, str) and not v.strip():
            raise _BadPair("empty", f"{self.key(name)} is empty")
        if not isinstance(v, str) and not _is_messages(v):
            raise _BadPair("malformed", f"{self.key(name)} must be a string or a non-empty list of "
                                        f"{{'role': str, 'content': str}} messages, got {str(v)[:120]!r}")
        if _blank(v):
            raise _BadPair("empty", f"{self.key(name)} is empty")
        return [{"role": m["role"], "content": m["content"]} for m in v] if isinstance(v, list) else v

    def render(self, row: dict, index: int) -> tuple[str, str, str, bool]:
        """(prompt, chosen, rejected) texts after prompt extraction and templating, and whether templated."""
        names = ("chosen_field", "rejected_field") if self.implicit else ("prompt_field", "chosen_field",
                                                                           "rejected_field")
        ex = dict(zip(("chosen", "rejected") if self.implicit else ("prompt", "chosen", "rejected"),
                      (self.value(row, n) for n in names)))
        if ex["chosen"] == ex["rejected"]:
            raise _BadPair("identical", f"{self.key('rejected_field')} is identical to {self.key('chosen_field')}")
        # TRL's redundant-prompt case: a text prompt beside conversations that start with it (not an assistant turn)
        redundant = (not self.implicit and isinstance(ex["prompt"], str) and is_conversational({"chosen": ex["chosen"]})
                     and ex["chosen"][0]["role"] != "assistant")
        if self.implicit or redundant:
            if isinstance(ex["chosen"], str) != isinstance(ex["rejected"], str):
                raise _BadPair("malformed", f"{self.key('chosen_field')} and {self.key('rejected_field')} must "
                                            f"both be text or both messages")
            ex = maybe_extract_prompt(ex)  # no prompt key, or a text prompt beside conversations: extracted
            for slot, name in (("prompt", "prompt_field"), ("chosen", "chosen_field"), ("rejected", "rejected_field")):
                if not ex[slot] or _blank(ex[slot]):
                    raise _BadPair("empty", f"{self.key(name)} is empty after extracting the shared prompt of "
                                            f"{self.key('chosen_field')} and {self.key('rejected_field')}")
        conversational = any(isinstance(v, list) for v in ex.values()) or self.cfg.apply_chat_template
        if not conversational:
            return ex["prompt"], ex["chosen"], ex["rejected"], False
        if not getattr(self.tok, "chat_template", None):
            raise DataError(f"{self.where} row {index}: conversational pair (or {self.section}.apply_chat_template="
                            f"true) but the tokenizer {getattr(self.tok, 'name_or_path', '')!r} has no chat template")
        msgs = {"prompt": _turns(ex["prompt"], "user"), "chosen": _turns(ex["chosen"], "assistant"),
                "rejected": _turns(ex["rejected"], "assistant")}
        try:
            out = apply_chat_template(msgs, self.tok)
        except ValueError as e:  # e.g. a prompt whose last turn is a system message
            raise _BadPair("malformed", f"{self.key('prompt_field')}: the chat template failed: {e}") from None
        return out["prompt"], out["chosen"], out["rejected"], True

    def tokenize(self, texts: list[tuple[str, str, str, bool]]) -> list[tuple[list[int], list[int], list[int]]]:
        """Batched: (prompt ids, chosen response ids, rejected response ids) with the prefix check and EOS rule."""
        flat = [s for p, c, r, _ in texts for s in (p, p + c, p + r)]
        enc = tokenize_prompts(self.tok, flat, [t for *_, t in texts for _ in range(3)])
        out = []
        for k, (_, c, r, templated) in enumerate(texts):
            p_ids, pc_ids, pr_ids = enc[3 * k: 3 * k + 3]
            out.append((p_ids, *(self._response(p_ids, joint, alone, templated)
                                  for joint, alone in ((pc_ids, c), (pr_ids, r)))))
        return out

    def _response(self, p_ids: list[int], joint: list[int], alone: str, templated: bool) -> list[int]:
        if joint[: len(p_ids)] == p_ids:
            ids = joint[len(p_ids):]
        else:
            self.prefix_mismatch += 1
            ids = list(self.tok(alone, add_special_tokens=False)["input_ids"])
        if templated and self.eos in ids:
            return ids[: len(ids) - ids[::-1].index(self.eos)]
        return ids if ids and ids[-1] == self.eos else ids + [self.eos]

    def pair(self, row: dict, index: int, text: tuple, tokens: tuple) -> PairRow:
        (prompt, chosen, rejected, _), (p_ids, c_ids, r_ids) = text, tokens
        cfg = self.cfg
        if len(p_ids) > cfg.max_prompt_length:
            raise _BadPair("too_long", f"prompt is {len(p_ids)} tokens, more than "
                                       f"{self.section}.max_prompt_length={cfg.max_prompt_length}")
        weighted = bool(cfg.chosen_weight_field or cfg.rejected_weight_field)
        c_w = self.weights(row, "chosen_weight_field", len(c_ids)) if weighted else None
        r_w = self.weights(row, "rejected_weight_field", len(r_ids)) if weighted else None
        (c_ids, c_w, c_cut), (r_ids, r_w, r_cut) = (self.fit(len(p_ids), ids, w, side) for ids, w, side in
                                                    ((c_ids, c_w, "chosen"), (r_ids, r_w, "rejected")))
        if c_ids == r_ids:
            raise _BadPair("identical", f"{self.key('rejected_field')} is identical to {self.key('chosen_field')} "
                                        f"after truncation to {self.section}.max_length={cfg.max_length}")
        columns = {}
        for name in cfg.extra_columns:
            v = _lookup(row, name)
            if v is _MISSING or v is None:
                raise _BadPair("missing", f"{self.section}.extra_columns: {name!r} is missing "
                                          f"(available columns: {self.available})")
            columns[name] = v
        self.truncated += c_cut + r_cut
        return PairRow(index, prompt, chosen, rejected, p_ids, c_ids, r_ids, c_w, r_w, c_cut, r_cut, columns)

    def weights(self, row: dict, name: str, n: int) -> list[float]:
        if not getattr(self.cfg, name):
            return [1.0] * n
        v = _lookup(row, getattr(self.cfg, name))
        if v is _MISSING or v is None or not isinstance(v, (list, tuple)):
            raise _BadPair("bad_weight", f"{self.key(name)} is missing or not a list (got {str(v)[:80]!r})")
        if len(v) != n:
            raise _BadPair("bad_weight", f"{self.key(name)} has {len(v)} values for {n} response tokens "
                                         f"(one per response token, EOS included)")
        for j, x in enumerate(v):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise _BadPair("bad_weight", f"{self.key(name)} value {j} is not a finite number: {x!r}")
        return [float(x) for x in v]

    def fit(self, p_len: int, ids: list[int], w: list[float] | None, side: str):
        """(ids, weights, truncated) within max_length, cut identically; a bad pair when truncation is off."""
        room = self.cfg.max_length - p_len
        if len(ids) <= room:
            return ids, w, False
        if self.cfg.truncation_mode == "none":
            raise _BadPair("too_long", f"prompt + {side} response is {p_len + len(ids)} tokens, longer than "
                                       f"{self.section}.max_length={self.cfg.max_length} "
                                       f"({self.section}.truncation_mode=none)")
        return ids[:room], (w[:room] if w is not None else None), True
