"""Prompt datasets: load, map columns, apply the chat template, tokenize, filter by length.

``data.source`` is one of

* ``builtin:arithmetic`` / ``builtin:countdown``: generated from ``data.task`` (rl.tasks);
* a local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` file, or a directory of them
  (splits are inferred from file names the way HF ``datasets`` does: ``train.jsonl``,
  ``test.jsonl``, ``data/train-*.parquet`` ...); a single file is one split, ``train``;
* a hub dataset name (``data.subset`` picks its configuration). Reachability of the hub
  is probed first with a short timeout, so no network is an error naming data.source
  within seconds instead of minutes of retries; with ``HF_HUB_OFFLINE=1`` the local HF
  cache is used.

Missing test split: when ``data.test_split`` is not in the source, ``load_eval_prompts``
returns None with a warning, unless ``data.holdout_fraction`` > 0: then that fraction
of the train split (a fixed seeded permutation, so the same rows every run) becomes
the test split and is removed from the train split.

Columns: ``data.prompt_field`` / ``data.answer_field`` may be dotted paths into nested
records (``reward_model.ground_truth``); ``data.extra_columns`` reach reward functions
under their own names. A built-in task always passes its own columns (countdown:
``numbers``, ``target``). A missing or null value is an error naming the key, the
source (and file), the row and the available columns.

Each row becomes a ``PromptRow``: the templated text, its token ids, the answer and
the extra columns. Templated text is tokenized with ``add_special_tokens=False``
because chat templates already write their special tokens (no duplicate BOS);
plain text gets the tokenizer's usual special tokens unless it already starts with BOS.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rl.tasks import generate_task, task_columns

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"
LOCAL_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}
# Names the reward call already uses; an extra column with one of them would be ambiguous.
RESERVED_COLUMNS = ("prompts", "completions", "completion_ids", "answer")
HUB_PROBE_TIMEOUT_S = 5.0
_HOLDOUT_SEED = "tokencredit-holdout"


class DataError(ValueError):
    """A problem with the prompt data; the message names the data.* key, the source and the row."""


@dataclass
class PromptRow:
    text: str  # the prompt after templating, exactly what ``ids`` encode
    ids: list[int]
    answer: Any  # the data.answer_field value (None when data.answer_field is '')
    columns: dict[str, Any] = field(default_factory=dict)  # extra columns for reward functions
    index: int = -1  # row index in the source split, for messages and logs


@dataclass
class PromptSet:
    rows: list[PromptRow]
    dropped_long: int
    source: str
    split: str = ""
    column_names: list[str] = field(default_factory=list)  # extra columns every row carries

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> PromptRow:
        return self.rows[i]

    def columns_for(self, rows: Sequence[PromptRow | int]) -> dict[str, list]:
        """Per-sample lists for reward functions: ``answer`` plus every extra column."""
        picked = [self.rows[r] if isinstance(r, int) else r for r in rows]
        out: dict[str, list] = {"answer": [r.answer for r in picked]}
        for name in self.column_names:
            out[name] = [r.columns[name] for r in picked]
        return out


def load_prompts(cfg, tokenizer, split: str, limit: int | None = None) -> PromptSet:
    """Rows of ``split`` (a split name, e.g. ``cfg.train_split``) of ``cfg.source``, templated and filtered.

    ``limit`` keeps the first ``limit`` source rows (before long prompts are dropped).
    """
    _check_cfg(cfg)
    raw, indices, available, origin = load_split(cfg, split)
    if limit is not None and limit < len(indices):
        raw = raw[:limit] if isinstance(raw, list) else raw.select(range(limit))
        indices = indices[:limit]
    extra = _extra_columns(cfg)
    where = f"data.source={cfg.source!r}{origin} split {split!r}"
    prompts, answers, extras = [], [], []
    for pos, row in enumerate(raw):
        i = indices[pos]
        prompts.append(required_field(row, cfg.prompt_field, "data.prompt_field", where, i, available))
        answers.append(required_field(row, cfg.answer_field, "data.answer_field", where, i, available)
                       if cfg.answer_field else None)
        extras.append({c: required_field(row, c, "data.extra_columns", where, i, available) for c in extra})
    texts, templated = zip(*[render_prompt(p, cfg, tokenizer, f"{where} row {i}")
                             for p, i in zip(prompts, indices)]) if prompts else ((), ())
    ids = tokenize_prompts(tokenizer, list(texts), list(templated))
    rows, dropped = [], 0
    for pos, (text, tok_ids) in enumerate(zip(texts, ids)):
        if len(tok_ids) > cfg.max_prompt_tokens:
            if cfg.on_long_prompt == "error":
                raise DataError(f"{where} row {indices[pos]}: prompt is {len(tok_ids)} tokens after templating, "
                                f"more than data.max_prompt_tokens={cfg.max_prompt_tokens} "
                                f"(data.on_long_prompt=error; set it to 'drop' to skip such prompts)")
            dropped += 1
            continue
        rows.append(PromptRow(text, tok_ids, answers[pos], extras[pos], indices[pos]))
    if dropped:
        log.warning("%s: dropped %d of %d prompts longer than data.max_prompt_tokens=%d (after templating)",
                    where, dropped, len(texts), cfg.max_prompt_tokens)
        if not rows:
            raise DataError(f"{where}: all {dropped} prompts are longer than data.max_prompt_tokens="
                            f"{cfg.max_prompt_tokens}")
    return PromptSet(rows, dropped, cfg.source, split, extra)


def _check_cfg(cfg) -> None:
    """The data.* settings load_prompts relies on, against their declared valid values (rl/config.py
    DataConfig; a recipe was checked already, this covers configs built in code)."""
    import dataclasses

    from rl.fields import check_fields

    if dataclasses.is_dataclass(cfg):
        try:
            check_fields(cfg, "data")
        except ValueError as e:
            raise DataError(str(e)) from None


def load_train_prompts(cfg, tokenizer, limit: int | None = None) -> PromptSet:
    return load_prompts(cfg, tokenizer, cfg.train_split, limit)


def load_eval_prompts(cfg, tokenizer, limit: int | None = None) -> PromptSet | None:
    """The held-out set, or None (with a warning) when data.test_split is '' or missing from the source."""
    if not cfg.test_split:
        return None
    try:
        return load_prompts(cfg, tokenizer, cfg.test_split, limit)
    except MissingSplitError as e:
        log.warning("%s; no evaluation set (set data.holdout_fraction > 0 to hold out part of the train split)", e)
        return None


class MissingSplitError(DataError):
    pass


# ----------------------------------------------------------------------------- templating


def render_prompt(prompt: Any, cfg, tokenizer, where: str) -> tuple[str, bool]:
    """A prompt (string or chat messages) -> (text, whether the chat template was applied)."""
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)) and prompt and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in prompt):
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        raise DataError(f"{where}: data.prompt_field={cfg.prompt_field!r} must be a string or a non-empty list "
                        f"of {{'role': str, 'content': str}} messages, got {str(prompt)[:120]!r}")
    if cfg.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    if cfg.apply_chat_template:
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
        if cfg.chat_template_fallback != "plain":
            raise DataError(f"data.apply_chat_template: the tokenizer "
                            f"{getattr(tokenizer, 'name_or_path', '') or '(unnamed)'!r} has no chat template; set "
                            f"data.chat_template_fallback=plain to feed the raw prompt text, or "
                            f"data.apply_chat_template=false")
    # Plain text: message contents joined by blank lines (roles are dropped).
    return "\n\n".join(m["content"] for m in messages), False


def tokenize_prompts(tokenizer, texts: list[str], templated: list[bool]) -> list[list[int]]:
    out: list[list[int] | None] = [None] * len(texts)
    bos = getattr(tokenizer, "bos_token", None)
    for special in (False, True):
        pos = [i for i, t in enumerate(texts) if (not templated[i] and not (bos and t.startswith(bos))) == special]
        if pos:
            enc = tokenizer([texts[i] for i in pos], add_special_tokens=special)["input_ids"]
            for i, ids in zip(pos, enc):
                out[i] = list(ids)
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- columns


def _extra_columns(cfg) -> list[str]:
    extra = list(cfg.extra_columns)
    if cfg.source.startswith(BUILTIN_PREFIX):
        extra = task_columns(cfg.source[len(BUILTIN_PREFIX):]) + [c for c in extra if c not in
                                                                  task_columns(cfg.source[len(BUILTIN_PREFIX):])]
    for c in extra:
        if c in RESERVED_COLUMNS:
            raise DataError(f"data.extra_columns: {c!r} is reserved for the reward call "
                            f"({', '.join(RESERVED_COLUMNS)}); rename the column")
    return extra


_MISSING = object()


def _lookup(row: dict, name: str) -> Any:
    """``row[name]``, or a nested value for a dotted name like ``reward_model.ground_truth``."""
    if name in row:
        return row[name]
    cur: Any = row
    for part in name.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def required_field(row: dict, name: str, key: str, where: str, index: int, available: list[str]) -> Any:
    value = _lookup(row, name)
    if value is _MISSING or value is None:
        raise DataError(f"{where} row {index}: {key}={name!r} is missing (available columns: {available})")
    return value


# ----------------------------------------------------------------------------- sources


def load_split(cfg, split: str) -> tuple[Any, list[int], list[str], str]:
    """(rows: a Dataset or a list of dicts, source row index of each, column names, ' (path)' note)."""
    if not split:
        raise DataError("load_prompts: empty split name (data.train_split / data.test_split)")
    if cfg.source.startswith(BUILTIN_PREFIX):
        name = cfg.source[len(BUILTIN_PREFIX):]
        if split not in ("train", "test"):
            key = "data.test_split" if split == cfg.test_split else "data.train_split"
            raise MissingSplitError(f"{key}={split!r}: built-in task {cfg.source!r} has splits 'train' and 'test'")
        rows = generate_task(name, cfg.task, split)
        return rows, list(range(len(rows))), sorted(rows[0]) if rows else [], ""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # "Generating train split" bars for a few-KB file are noise in run logs
    try:
        splits, origin = _load_dataset_dict(cfg)
    finally:
        if bars:
            datasets.enable_progress_bars()
    return _select_split(cfg, splits, split, origin)


def _select_split(cfg, splits, split: str, origin: str) -> tuple[Any, list[int], list[str], str]:
    holdout = (cfg.holdout_fraction > 0 and cfg.test_split and cfg.test_split not in splits
               and cfg.train_split in splits)
    if split in splits:
        ds = splits[split]
        indices = list(range(len(ds)))
        if holdout and split == cfg.train_split:
            indices = _holdout_indices(len(ds), cfg.holdout_fraction)[1]
            ds = ds.select(indices)
        return ds, indices, list(ds.column_names), origin
    if holdout and split == cfg.test_split:
        ds = splits[cfg.train_split]
        indices = _holdout_indices(len(ds), cfg.holdout_fraction)[0]
        return ds.select(indices), indices, list(ds.column_names), origin
    key = "data.test_split" if split == cfg.test_split else "data.train_split"
    raise MissingSplitError(f"{key}={split!r} is not a split of data.source={cfg.source!r}{origin}; "
                            f"available: {sorted(splits)}")


def _holdout_indices(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """(held-out, kept) row indices: a fixed seeded permutation, each part in source order."""
    order = list(range(n))
    rng = random.Random(_HOLDOUT_SEED)
    for i in range(n - 1, 0, -1):
        j = min(int(rng.random() * (i + 1)), i)
        order[i], order[j] = order[j], order[i]
    k = max(1, round(n * fraction)) if n > 1 else 0
    return sorted(order[:k]), sorted(order[k:])


def _looks_like_path(source: str) -> bool:
    return (Path(source).suffix.lower() in LOCAL_FORMATS or source.startswith(("/", "./", "../", "~"))
            or source.count("/") > 1)


def _load_dataset_dict(cfg):
    import datasets

    source = cfg.source
    path = Path(source).expanduser()
    try:
        if path.is_file():
            fmt = LOCAL_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise DataError(f"data.source={source!r}: unsupported file type {path.suffix!r}; "
                                f"use one of {sorted(LOCAL_FORMATS)}")
            return datasets.load_dataset(fmt, data_files=str(path)), f" ({path})"
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.suffix.lower() in LOCAL_FORMATS]
            if not files:
                raise DataError(f"data.source={source!r}: directory has no {sorted(LOCAL_FORMATS)} files")
            if len({LOCAL_FORMATS[p.suffix.lower()] for p in files}) > 1:
                raise DataError(f"data.source={source!r}: directory mixes file formats; keep one of json/jsonl, "
                                f"parquet or csv")
            return datasets.load_dataset(str(path)), f" ({path})"
        if _looks_like_path(source):
            raise DataError(f"data.source={source!r}: no such file or directory")
        if not _hub_offline():
            problem = _hub_unreachable()
            if problem:
                raise DataError(f"data.source={source!r} is not a local file or directory, so it was taken as a "
                                f"Hugging Face hub dataset, but the hub cannot be reached ({problem}): no network? "
                                f"Point data.source at a local copy, or set HF_HUB_OFFLINE=1 to use the local HF cache")
        return datasets.load_dataset(source, cfg.subset) if cfg.subset else datasets.load_dataset(source), ""
    except DataError:
        raise
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ArrowInvalid ...)
        hint = " (HF_HUB_OFFLINE is set and it is not in the local HF cache)" if _hub_offline() and not \
            path.exists() else ""
        raise DataError(f"data.source={source!r}: could not load it{hint}: {type(e).__name__}: {e}") from e


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """None if a TCP connection to the hub endpoint opens within ``timeout``, else the reason.

    Runs in a thread because DNS resolution ignores socket timeouts.
    """
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as e:
            result.append(f"{host}:{port}: {e}")

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1)
    return result[0] if result else f"{host}:{port}: no answer within {timeout:.0f} s"
