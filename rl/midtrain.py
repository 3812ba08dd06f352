"""RMT mid-training data path (Reinforcement Mid-Training, arXiv 2509.24375; spec §5).

With ``algorithm.rmt.enable`` the data source holds plain documents (``data.prompt_field``
is their text; no chat template, cut to ``rmt.max_doc_tokens``). Each step:

1. draw ``rmt.docs_per_step`` documents (a resumable ``PromptSampler`` over documents);
2. rank every document token tau_pos by the entropy of p(. | tau_<pos) under the reference
   model (``rmt.entropy_model``; reference entropies never change, so they are cached per
   document) and draw the RL set C of ``trainer.prompts_per_step`` positions with the
   entropy-tier curriculum (rl/credit/rmt.py ``sample_positions``, seeded per step);
3. each position becomes a prompt: ``rmt.prompt_template`` around the last
   ``rmt.context_tokens`` tokens of the prefix, asking for the next token within the budget
   B_t; rows carry ``target`` (the token's text), ``continuation`` (the text from there on)
   and ``budget`` (B_t) for the reward functions (``next_token_match``, ``length_budget``);
4. the documents also form the NTP batch: teacher-forced cross-entropy on every token not in
   C (m_pos = 1[tau_pos not in C]), added as lambda * L_NTP to each optimizer step.

A document is fed to the trainer as a row whose "prompt" is its first token and whose
"completion" is the rest, so completion index j is document position j + 1.

Held-out evaluation: ``eval.num_prompts`` fixed positions drawn uniformly (seeded) from the
test documents, rendered at the current budget; accuracy is the next-token match.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from rl.credit.rmt import budget, other_positions_mask, sample_positions, tier_probs
from rl.data import (
    DataError,
    PromptRow,
    PromptSet,
    load_split,
    render_prompt,
    required_field,
    tokenize_prompts,
)
from rl.experience import build_completion_mask, right_pad

log = logging.getLogger(__name__)

COLUMNS = ["target", "continuation", "budget"]
CONTINUATION_CHARS = 24


@dataclass
class Documents:
    ids: list[list[int]]  # token ids, cut to rmt.max_doc_tokens
    index: list[int]  # source row of each document
    where: str  # for messages


def load_documents(cfg, tokenizer, split: str) -> Documents:
    """The ``split`` documents of ``cfg.data.source``; documents too short for a position are skipped."""
    d, rmt = cfg.data, cfg.algorithm.rmt
    raw, indices, available, origin = load_split(d, split)
    where = f"data.source={d.source!r}{origin} split {split!r}"
    texts = []
    for pos, row in enumerate(raw):
        text = required_field(row, d.prompt_field, "data.prompt_field", where, indices[pos], available)
        if not isinstance(text, str):
            raise DataError(f"{where} row {indices[pos]}: data.prompt_field={d.prompt_field!r} must be document text "
                            f"(a string) with algorithm.rmt.enable, got {type(text).__name__}")
        texts.append(text)
    enc = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    keep = [(list(ids[: rmt.max_doc_tokens]), i) for ids, i in zip(enc, indices) if len(ids) > rmt.min_context]
    if len(keep) < len(enc):
        log.warning("%s: skipped %d documents of at most algorithm.rmt.min_context=%d tokens",
                    where, len(enc) - len(keep), rmt.min_context)
    if not keep:
        raise DataError(f"{where}: no document is longer than algorithm.rmt.min_context={rmt.min_context} tokens")
    return Documents([k[0] for k in keep], [k[1] for k in keep], where)


def document_batch(docs: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """Documents as trainer rows: prompt = first token, completion = the rest (right-padded)."""
    lengths = torch.tensor([len(d) - 1 for d in docs])
    completion = right_pad([d[1:] for d in docs], pad_id)
    return {"prompt_ids": torch.tensor([[d[0]] for d in docs]), "prompt_mask": torch.ones(len(docs), 1, dtype=torch.long),
            "completion_ids": completion, "completion_mask": build_completion_mask(lengths, completion.shape[1])}


class MidTraining:
    """Per-step RL prompts, NTP batch and held-out set for an RMT run."""

    def __init__(self, cfg, tokenizer, pad_id: int, sampler, train: Documents, test: Documents | None) -> None:
        self.cfg, self.tok, self.pad_id, self.sampler = cfg, tokenizer, pad_id, sampler
        self.rmt = cfg.algorithm.rmt
        self.train, self.test = train, test
        self.reference = self.rmt.entropy_model == "reference"
        self._entropy_cache: dict[int, torch.Tensor] = {}  # train doc index -> reference entropies
        self._blank: dict[int, bool] = {}  # token id -> decodes to whitespace only
        self._eval_positions = self._pick_eval_positions() if test is not None else []

    # ------------------------------------------------------------------ one step
    def prepare(self, step: int, total_steps: int, trainers) -> tuple[PromptSet, dict, dict[str, float]]:
        """(the step's prompts, the NTP batch with its ``ntp_mask``, metrics)."""
        doc_idx = next(self.sampler)
        docs = [self.train.ids[i] for i in doc_idx]
        batch = document_batch(docs, self.pad_id)
        entropy = self._entropy(doc_idx, batch, trainers)
        mask = batch["completion_mask"].clone()
        mask[:, : self.rmt.min_context - 1] = 0  # completion index j has j + 1 tokens of context
        mask[self._blank_targets(batch["completion_ids"])] = 0  # a whitespace token has no word to predict
        progress = min(1.0, step / max(total_steps - 1, 1))
        gen = torch.Generator().manual_seed(self.cfg.trainer.seed * 1_000_003 + step)
        chosen = sample_positions(entropy, mask, self.cfg.trainer.prompts_per_step, progress, gen, self.rmt)
        b = budget(step, total_steps, self.rmt)
        rows = [self._row(docs[r], j + 1, b, f"{self.train.where} row {self.train.index[doc_idx[r]]} position {j + 1}")
                for r, j in chosen.tolist()]
        batch["ntp_mask"] = other_positions_mask(batch["completion_mask"], chosen)
        probs = tier_probs(progress, self.rmt)
        metrics = {"rmt/budget": float(b), "rmt/positions": float(len(rows)), "rmt/documents": float(len(docs)),
                   "rmt/ntp_tokens": float(batch["ntp_mask"].sum()),
                   "rmt/p_easy": float(probs[0]), "rmt/p_hard": float(probs[2]),
                   "rmt/position_entropy": float(entropy[chosen[:, 0], chosen[:, 1]].mean()) if len(rows) else 0.0}
        return PromptSet(rows, 0, self.cfg.data.source, "train", list(COLUMNS)), batch, metrics

    def _entropy(self, doc_idx: list[int], batch: dict, trainers) -> torch.Tensor:
        """[D, T] entropy per completion position; reference entropies come from the cache when seen."""
        if not self.reference:
            return trainers.token_entropy(batch, reference=False)
        missing = [k for k, i in enumerate(doc_idx) if i not in self._entropy_cache]
        if missing:
            sub = {k: v[missing] for k, v in batch.items()}
            for k, ent in zip(missing, trainers.token_entropy(sub, reference=True)):
                self._entropy_cache[doc_idx[k]] = ent[: len(self.train.ids[doc_idx[k]]) - 1]
        out = torch.zeros(batch["completion_mask"].shape)
        for k, i in enumerate(doc_idx):
            ent = self._entropy_cache[i]
            out[k, : ent.shape[0]] = ent
        return out

    def _blank_targets(self, ids: torch.Tensor) -> torch.Tensor:
        """True where the token decodes to whitespace only (e.g. a newline)."""
        for t in ids.unique().tolist():
            if t not in self._blank:
                self._blank[t] = not self.tok.decode([t]).strip()
        return torch.tensor([[self._blank[t] for t in row] for row in ids.tolist()], dtype=torch.bool)

    # ------------------------------------------------------------------ prompts
    def _row(self, doc: list[int], pos: int, b: int, where: str) -> PromptRow:
        """The prompt asking for doc[pos] from the tokens before it (the context shrinks to fit)."""
        context = self.rmt.context_tokens
        while True:
            text, templated = render_prompt(
                self.rmt.prompt_template.format(budget=b, context=self.tok.decode(doc[max(0, pos - context):pos])),
                self.cfg.data, self.tok, where)
            ids = tokenize_prompts(self.tok, [text], [templated])[0]
            over = len(ids) - self.cfg.data.max_prompt_tokens
            if over <= 0:
                break
            if context <= 1:
                raise DataError(f"{where}: algorithm.rmt.prompt_template alone is {len(ids)} tokens, more than "
                                f"data.max_prompt_tokens={self.cfg.data.max_prompt_tokens}")
            context = max(1, context - over)
        rest = self.tok.decode(doc[pos:])
        columns = {"target": self.tok.decode([doc[pos]]), "continuation": rest[:CONTINUATION_CHARS], "budget": b}
        return PromptRow(text, ids, None, columns, pos)

    # ------------------------------------------------------------------ evaluation
    def _pick_eval_positions(self) -> list[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.cfg.trainer.seed + 7)
        candidates = []
        for d, doc in enumerate(self.test.ids):
            blank = self._blank_targets(torch.tensor([doc]))[0]
            candidates += [(d, pos) for pos in range(self.rmt.min_context, len(doc)) if not blank[pos]]
        if not candidates:
            return []
        order = torch.randperm(len(candidates), generator=gen)[: self.cfg.eval.num_prompts]
        return [candidates[i] for i in order.tolist()]

    def eval_set(self, step: int, total_steps: int) -> PromptSet | None:
        """The held-out positions rendered at step ``step``'s budget (None without test documents)."""
        if self.test is None:
            return None
        b = budget(min(step, total_steps - 1), total_steps, self.rmt)
        rows = [self._row(self.test.ids[d], pos, b, f"{self.test.where} row {self.test.index[d]} position {pos}")
                for d, pos in self._eval_positions]
        return PromptSet(rows, 0, self.cfg.data.source, "test", list(COLUMNS))
