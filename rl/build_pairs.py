"""Make preference pairs from a model's own samples: sample, score, select, write jsonl.

    stats = build_pairs(pool, scorer, prompt_set, SamplingSpec(n=64, temperature=0.5, top_p=0.95,
                        max_tokens=1024), "pairs.jsonl", rule="cdpo", seed=0, write_sft=True)

Per chunk of ``batch_prompts`` prompts: ``pool.generate`` (the engine reseeded with ``seed +
chunk index``), ``scorer.score`` with the prompt set's columns (rl/evaluate.score_groups), a
sample is correct when the reward labelled ``accuracy_reward`` (default: the first function)
is >= ``correct_threshold`` (rl/evaluate.correctness), its final answer is
``rewards.extract.extract_answer(text, extract)`` with numbers written one way ("1,000" and
"1000.0" are one answer). Candidates exclude blank completions and, unless ``keep_truncated``,
those cut at max_tokens (they have no EOS, and the pair reader would append one). Pairs
come from rl/pairs.py (``rule``: default | cdpo), seeded per prompt, so chunking does not
change them.

Output, one json object per pair: ``prompt`` (the templated prompt text exactly as sampled),
``chosen``, ``rejected`` (completion texts), ``answer``, the prompt set's extra columns, and
metadata: ``prompt_index`` (source row), ``chosen_answer``/``rejected_answer``,
``chosen_reward``/``rejected_reward``, ``num_samples``/``num_correct`` (candidates), ``rule``,
``seed``. rl/preference_data.load_pairs reads it with its defaults (``apply_chat_template``
off: the prompt is already templated). With ``write_sft`` (cdpo only) the SFT sets of the
positive and negative models go to ``<out>.sft_pos.jsonl`` / ``<out>.sft_neg.jsonl`` as
prompt/completion rows (TRL's prompt-completion form). Files are written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from rewards.extract import extract_answer, to_number
from rl.evaluate import accuracy_label, correctness, score_groups
from rl.pairs import RULES, Sample, cdpo_sft_sets, select_pairs

log = logging.getLogger(__name__)

_META = ("prompt", "chosen", "rejected", "answer", "prompt_index", "chosen_answer", "rejected_answer",
         "chosen_reward", "rejected_reward", "num_samples", "num_correct", "rule", "seed")


def final_answer(text: str, extract: str | Callable[[str], str | None] = "auto") -> str | None:
    """The completion's final answer (None when there is none); numbers in one canonical form."""
    found = extract(text) if callable(extract) else extract_answer(text, extract)
    if found is None or not found.strip():
        return None
    value = to_number(found)
    return str(value) if value is not None else found.strip()


def build_pairs(pool, scorer, prompt_set, sampling, out_path: str | Path, *, rule: str = "default", seed: int = 0,
                accuracy_reward: str | None = None, correct_threshold: float = 0.5,
                extract: str | Callable[[str], str | None] = "auto", keep_truncated: bool = False,
                batch_prompts: int = 64, write_sft: bool = False, sft_neg_top_p: float = 0.5) -> dict[str, Any]:
    """Sample ``sampling.n`` completions per prompt of ``prompt_set``, pick pairs, write ``out_path``; returns stats."""
    if rule not in RULES:
        raise ValueError(f"build_pairs: rule {rule!r} is not one of {list(RULES)}")
    if write_sft and rule != "cdpo":
        raise ValueError("build_pairs: write_sft makes cDPO's SFT sets; it needs rule='cdpo'")
    if batch_prompts < 1:
        raise ValueError(f"build_pairs: batch_prompts={batch_prompts} must be >= 1")
    label = accuracy_label(scorer, SimpleNamespace(accuracy_reward=accuracy_reward))
    clash = sorted(set(prompt_set.column_names) & set(_META))
    if clash:
        raise ValueError(f"build_pairs: prompt columns {clash} collide with the output's own fields")
    out = Path(out_path)
    files = {"pairs": out}
    if write_sft:
        files |= {"pos": out.with_suffix(".sft_pos.jsonl"), "neg": out.with_suffix(".sft_neg.jsonl")}
    stats = {"prompts": len(prompt_set), "samples": 0, "candidates": 0, "correct": 0, "skipped_blank": 0,
             "skipped_truncated": 0, "pairs": 0, "sft_pos": 0, "sft_neg": 0}
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    handles = {k: open(f"{p}.tmp", "w", encoding="utf-8") for k, p in files.items()}
    try:
        for chunk, first in enumerate(range(0, len(prompt_set), batch_prompts)):
            rows = prompt_set.rows[first: first + batch_prompts]
            groups = pool.generate([r.ids for r in rows], replace(sampling, seed=seed + chunk))
            result, flat = score_groups(scorer, prompt_set, rows, groups, {"step": 0, "total_steps": 0})
            ok = correctness(result, label, correct_threshold)
            candidates = _candidates(groups, flat, ok, result.total, extract, keep_truncated, stats)
            samples = [[s for s, _ in c] for c in candidates]
            for k, pair in enumerate(select_pairs(samples, rule, seed, first_index=first)):
                if pair is not None:
                    record = _pair_record(rows[k], samples[k], candidates[k], pair, rule, seed)
                    handles["pairs"].write(json.dumps(record, default=str) + "\n")
                    stats["pairs"] += 1
            if write_sft:
                sets = cdpo_sft_sets(samples, seed, sft_neg_top_p, first_index=first)
                for kind, picked in (("pos", sets.pos), ("neg", sets.neg)):
                    for p, i in picked:
                        row = rows[p - first]
                        handles[kind].write(json.dumps({"prompt": row.text, "completion": samples[p - first][i].text,
                                                        "answer": row.answer, "prompt_index": row.index},
                                                       default=str) + "\n")
                        stats[f"sft_{kind}"] += 1
            log.info("build_pairs: %d/%d prompts, %d pairs", first + len(rows), len(prompt_set), stats["pairs"])
    except BaseException:
        for k, h in handles.items():
            h.close()
            Path(f"{files[k]}.tmp").unlink(missing_ok=True)
        raise
    for k, h in handles.items():
        h.close()
        os.replace(f"{files[k]}.tmp", files[k])
    stats["prompts_without_pair"] = stats["prompts"] - stats["pairs"]
    stats["accuracy"] = stats["correct"] / max(stats["candidates"], 1)
    stats["seconds"] = time.perf_counter() - start
    log.info("build_pairs: %s -> %s", {k: v for k, v in stats.items() if k != "seconds"}, out)
    return stats


def _candidates(groups, flat, ok, totals, extract, keep_truncated, stats) -> list[list[tuple[Sample, float]]]:
    """Per prompt, its candidate samples with their total reward (blank / truncated ones left out)."""
    out: list[list[tuple[Sample, float]]] = [[] for _ in groups]
    completions = [c for comps in groups for c in comps]
    for p, c, good, total in zip(flat, completions, ok, totals):
        stats["samples"] += 1
        if not c.text.strip():
            stats["skipped_blank"] += 1
        elif c.finish_reason == "length" and not keep_truncated:
            stats["skipped_truncated"] += 1
        else:
            out[p].append((Sample(c.text, list(c.token_ids), good, final_answer(c.text, extract)), total))
            stats["candidates"] += 1
            stats["correct"] += int(good)
    return out


def _pair_record(row, samples, candidates, pair, rule: str, seed: int) -> dict[str, Any]:
    chosen, rejected = samples[pair.chosen], samples[pair.rejected]
    return {"prompt": row.text, "chosen": chosen.text, "rejected": rejected.text, "answer": row.answer,
            **row.columns, "prompt_index": row.index, "chosen_answer": chosen.answer,
            "rejected_answer": rejected.answer, "chosen_reward": candidates[pair.chosen][1],
            "rejected_reward": candidates[pair.rejected][1], "num_samples": len(samples),
            "num_correct": sum(s.correct for s in samples), "rule": rule, "seed": seed}
