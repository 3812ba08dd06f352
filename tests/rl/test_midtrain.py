"""RMT's data path: documents -> curriculum-sampled next-token prompts and the NTP mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl.config import load_config
from rl.data import DataError
from rl.midtrain import MidTraining, document_batch, load_documents
from rl.sampler import PromptSampler

REPO = Path(__file__).resolve().parents[2]


class PositionEntropy:
    """Entropy = completion index (so the tiers are known), counting the documents it scored."""

    def __init__(self) -> None:
        self.scored = 0

    def token_entropy(self, batch: dict, reference: bool) -> torch.Tensor:
        self.scored += batch["completion_ids"].shape[0]
        n, t = batch["completion_ids"].shape
        return torch.arange(t, dtype=torch.float32).expand(n, t).clone()


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def rmt_cfg(*over):
    return load_config(REPO / "recipes/rmt.yaml", ["eval.num_prompts=12", *over])


def make(cfg, tokenizer):
    train = load_documents(cfg, tokenizer, "train")
    test = load_documents(cfg, tokenizer, "test")
    sampler = PromptSampler(len(train.ids), cfg.algorithm.rmt.docs_per_step, cfg.trainer.seed)
    return MidTraining(cfg, tokenizer, tokenizer.pad_token_id, sampler, train, test)


def test_document_batch_is_first_token_then_the_rest():
    b = document_batch([[5, 6, 7, 8], [9, 10]], pad_id=0)
    assert b["prompt_ids"].tolist() == [[5], [9]]
    assert b["completion_ids"].tolist() == [[6, 7, 8], [10, 0, 0]]
    assert b["completion_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_prompts_ask_for_the_token_at_each_sampled_position(tokenizer):
    cfg = rmt_cfg()
    mid = make(cfg, tokenizer)
    ent = PositionEntropy()
    prompts, ntp, metrics = mid.prepare(0, cfg.trainer.steps, ent)
    assert len(prompts) == cfg.trainer.prompts_per_step == metrics["rmt/positions"]
    assert metrics["rmt/budget"] == cfg.algorithm.rmt.budget_init and "exactly 24 tokens" in prompts.rows[0].text
    chosen = (ntp["completion_mask"] - ntp["ntp_mask"]).nonzero().tolist()  # C = valid positions not in NTP
    assert len(chosen) == len(prompts)
    docs = [ntp["prompt_ids"][r].tolist() + ntp["completion_ids"][r].tolist() for r in range(ntp["prompt_ids"].shape[0])]
    for row in prompts.rows:
        pos = row.index
        hits = [(r, j) for r, j in chosen if j + 1 == pos and tokenizer.decode([docs[r][pos]]) == row.columns["target"]]
        assert hits, (pos, row.columns)
        r, _ = hits[0]
        assert pos >= cfg.algorithm.rmt.min_context
        assert row.columns["target"].strip()  # never a whitespace-only token
        context = tokenizer.decode(docs[r][max(0, pos - cfg.algorithm.rmt.context_tokens):pos])
        assert context in row.text and row.columns["continuation"].startswith(row.columns["target"])
        assert len(row.ids) <= cfg.data.max_prompt_tokens
    assert ntp["ntp_mask"].sum() == ntp["completion_mask"].sum() - len(prompts)


def test_curriculum_moves_from_easy_to_hard_tokens(tokenizer):
    cfg = rmt_cfg("algorithm.rmt.p_t1=[1.0,0.0,0.0]", "algorithm.rmt.p_t2=[0.0,0.0,1.0]")
    mid = make(cfg, tokenizer)
    ent = PositionEntropy()
    first, ntp0, _ = mid.prepare(0, 10, ent)
    last, ntp1, _ = mid.prepare(9, 10, ent)
    for ntp, want in ((ntp0, "easy"), (ntp1, "hard")):
        valid = ntp["completion_mask"].clone()
        valid[:, : cfg.algorithm.rmt.min_context - 1] = 0
        chosen = (ntp["completion_mask"] - ntp["ntp_mask"]).nonzero()
        # entropy = index: terciles of the valid indices (brute force over the batch)
        vals = sorted(float(j) for r, j in valid.nonzero().tolist())
        a, b = vals[-(-len(vals) // 3) - 1], vals[-(-2 * len(vals) // 3) - 1]
        for _, j in chosen.tolist():
            assert (j <= a) if want == "easy" else (j > b)


def test_reference_entropies_are_computed_once_per_document(tokenizer):
    cfg = rmt_cfg()
    mid = make(cfg, tokenizer)
    ent = PositionEntropy()
    n_docs = len(mid.train.ids)
    for step in range(2 * n_docs // cfg.algorithm.rmt.docs_per_step + 2):  # two epochs and more
        mid.prepare(step, 100, ent)
    assert ent.scored == n_docs
    policy = make(rmt_cfg("algorithm.rmt.entropy_model=policy"), tokenizer)
    ent2 = PositionEntropy()
    policy.prepare(0, 10, ent2)
    policy.prepare(1, 10, ent2)
    assert ent2.scored == 2 * cfg.algorithm.rmt.docs_per_step  # the policy changes: scored every step


def test_eval_positions_are_fixed_and_rendered_at_the_current_budget(tokenizer):
    mid = make(rmt_cfg(), tokenizer)
    a, b = mid.eval_set(0, 10), mid.eval_set(9, 10)
    assert len(a) == 12
    assert [r.columns["target"] for r in a.rows] == [r.columns["target"] for r in b.rows]
    assert a.rows[0].columns["budget"] == 24 and b.rows[0].columns["budget"] == 5  # floor(24 * 0.2^(9/10))
    assert "exactly 5 tokens" in b.rows[0].text


def test_context_shrinks_to_fit_the_prompt_limit_and_a_too_long_template_is_an_error(tokenizer):
    cfg = rmt_cfg("data.max_prompt_tokens=90", "algorithm.rmt.context_tokens=64")
    mid = make(cfg, tokenizer)
    prompts, _, _ = mid.prepare(0, 10, PositionEntropy())
    assert all(len(r.ids) <= 90 for r in prompts.rows)
    tight = make(rmt_cfg("data.max_prompt_tokens=40", "algorithm.rmt.context_tokens=8"), tokenizer)
    with pytest.raises(DataError, match="algorithm.rmt.prompt_template alone is .* data.max_prompt_tokens=40"):
        tight.prepare(0, 10, PositionEntropy())


def test_bad_documents_name_the_key_and_row(tmp_path, tokenizer):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"text": "one two three four five six seven eight nine ten"}\n{"body": "x"}\n')
    cfg = rmt_cfg(f"data.source={f}", "data.prompt_field=text", "data.test_split=''")
    with pytest.raises(DataError, match=r"row 1.*data.prompt_field.*'text'"):
        load_documents(cfg, tokenizer, "train")
    f.write_text('{"text": "a b"}\n')
    with pytest.raises(DataError, match="no document is longer than algorithm.rmt.min_context=4"):
        load_documents(cfg, tokenizer, "train")


def test_rmt_config_errors_name_the_key():
    from rl.config import ConfigError

    with pytest.raises(ConfigError, match="algorithm.dynamic_sampling.enable"):
        rmt_cfg("algorithm.dynamic_sampling.enable=true")
    with pytest.raises(ConfigError, match="algorithm.rmt.prompt_template"):
        rmt_cfg("algorithm.rmt.prompt_template=no placeholders")
    with pytest.raises(ConfigError, match="algorithm.rmt.context_tokens"):
        rmt_cfg("algorithm.rmt.context_tokens=500")
