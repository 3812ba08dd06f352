"""Choose a (chosen, rejected) pair among a prompt's scored samples; pure functions, no model.

Input per prompt: its samples, each with its text, token ids, whether it is correct and
the final answer extracted from it (None when there is none). Output: sample indices.

Rules (``RULES``):

* ``default``: chosen = a correct sample, rejected = an incorrect one, each drawn uniformly
  (seeded). A prompt needs at least one of each.
* ``cdpo`` (Critical Tokens Matter, arXiv 2411.19943, spec §3.1 step 2, as in the official
  ``select_data_for_sft_and_dpo``): the samples are shuffled, grouped by final answer and the
  groups sorted by size, largest first (a stable sort after the shuffle, so ties fall at
  random); samples whose answer is None or blank are skipped. One random response stands
  for each group. chosen = the response of the most frequent correct answer, rejected =
  the response of the most frequent incorrect answer; a prompt without both gives no pair.

Groups are keyed by (answer, correct) rather than by answer alone: when correctness is a
function of the answer (a math checker) this is the official grouping; when it is not (a
reward that also checks format) it keeps "the most frequent correct answer" well defined
instead of depending on which response happened to represent a mixed group.

``cdpo_sft_sets`` gives the SFT data of the same step (the positive and negative models of
the contrastive estimator are trained on them). It draws from the same per-prompt random
stream, so for one seed the positive is the pair's chosen and the first negative its rejected.
Responses are returned as they are (the official code strips the text; token ids must not change).

Randomness: prompt i uses ``random.Random(f"{seed}:{i}")`` (string seeds are hashed with
SHA-512, stable across Python versions), so a prompt's choice does not depend on the others.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

RULES = ("default", "cdpo")


@dataclass
class Sample:
    text: str
    token_ids: list[int]
    correct: bool
    answer: str | None = None  # extracted final answer; None = none found


class Pair(NamedTuple):
    chosen: int  # index into the prompt's samples
    rejected: int


class SftSets(NamedTuple):
    pos: list[tuple[int, int]]  # (prompt index, sample index)
    neg: list[tuple[int, int]]


class _Group(NamedTuple):
    correct: bool
    count: int
    pick: int  # the sample index that represents the group


def _rng(seed: int, prompt: int) -> random.Random:
    return random.Random(f"{seed}:{prompt}")


def _ranked_groups(samples: Sequence[Sample], rng: random.Random) -> list[_Group]:
    """Answer groups, largest first (ties in shuffled first-seen order), each with one random member."""
    order = list(range(len(samples)))
    rng.shuffle(order)
    members: dict[tuple[str, bool], list[int]] = {}
    for i in order:
        answer = samples[i].answer
        if answer is None or not answer.strip():
            continue
        members.setdefault((answer, bool(samples[i].correct)), []).append(i)
    ranked = sorted(members.items(), key=lambda kv: len(kv[1]), reverse=True)  # stable
    return [_Group(correct, len(idx), rng.choice(idx)) for (_, correct), idx in ranked]


def select_pair(samples: Sequence[Sample], rule: str, rng: random.Random) -> Pair | None:
    """The pair for one prompt under ``rule``, or None when the prompt has none."""
    if rule == "default":
        good = [i for i, x in enumerate(samples) if x.correct]
        bad = [i for i, x in enumerate(samples) if not x.correct]
        return Pair(rng.choice(good), rng.choice(bad)) if good and bad else None
    if rule == "cdpo":
        groups = _ranked_groups(samples, rng)
        chosen = next((g.pick for g in groups if g.correct), None)
        rejected = next((g.pick for g in groups if not g.correct), None)
        return Pair(chosen, rejected) if chosen is not None and rejected is not None else None
    raise ValueError(f"pair rule {rule!r} is not one of {list(RULES)}")


def select_pairs(groups: Sequence[Sequence[Sample]], rule: str = "default", seed: int = 0,
                 first_index: int = 0) -> list[Pair | None]:
    """One entry per prompt: its pair or None. ``groups[k]`` is prompt ``first_index + k`` (for chunked calls)."""
    if rule not in RULES:
        raise ValueError(f"pair rule {rule!r} is not one of {list(RULES)}")
    return [select_pair(samples, rule, _rng(seed, first_index + k)) for k, samples in enumerate(groups)]


def cdpo_sft_sets(groups: Sequence[Sequence[Sample]], seed: int = 0, neg_top_p: float = 0.5,
                  first_index: int = 0) -> SftSets:
    """cDPO's SFT data (spec §3.1 step 2).

    pos: per prompt, the response of the most frequent correct answer (top-k = 1).
    neg: incorrect answers in descending frequency, one response each, until their counts
    cover ceil(neg_top_p * #incorrect responses with an answer); after the first answer,
    only answers given more than once are added (the official code's condition).
    Prompt indices in the result are ``first_index + k`` for ``groups[k]``.
    """
    if not 0 < neg_top_p <= 1:
        raise ValueError(f"neg_top_p={neg_top_p} must be in (0, 1]")
    pos, neg = [], []
    for p, samples in enumerate(groups, start=first_index):
        ranked = _ranked_groups(samples, _rng(seed, p))
        first_pos = next((g.pick for g in ranked if g.correct), None)
        if first_pos is not None:
            pos.append((p, first_pos))
        need = math.ceil(neg_top_p * sum(g.count for g in ranked if not g.correct))
        initial = need
        for g in ranked:
            if not g.correct and need > 0 and (need == initial or g.count > 1):
                neg.append((p, g.pick))
                need -= g.count
    return SftSets(pos, neg)
