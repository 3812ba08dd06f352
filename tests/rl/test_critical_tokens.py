"""cDPO critical-token pipeline (rl/critical_tokens.py): p_CE alignment against a direct full forward, the
weighted dataset read back by load_pairs, the LoRA SFT (response-only loss, adapters on the targets only),
the config section, and stage restarts with a scripted rollout pool (no vLLM here; tests/e2e has it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rl.preference_data import PreferenceDataConfig, load_pairs

PAIRS = [  # prompt/response lengths differ across pairs and between chosen and rejected
    {"prompt": "Question: What is 2 + 3?\nAnswer:", "chosen": " 5", "rejected": " It is 6, I think, or 7", "answer": "5"},
    {"prompt": "Q: 1 + 1 =", "chosen": " 2 because one and one make two", "rejected": " 11", "answer": "2"},
    {"prompt": "Please compute the sum of four and four, then write it down.\nAnswer:", "chosen": " 8",
     "rejected": " 9", "answer": "8"},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory, tiny_model_dir):
    """Two different random tiny Llamas (the 'positive' and 'negative' models), fp32, eval mode."""
    from transformers import AutoModelForCausalLM

    from rl.models import tiny_llama_config

    torch.manual_seed(1)
    other = AutoModelForCausalLM.from_config(tiny_llama_config(hidden=128, layers=2, heads=2))
    pos = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return pos, other.eval()


def write_pairs(path: Path, rows=PAIRS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def direct_pce(pos, neg, prompt_ids, resp_ids, beta):
    """p_CE of each response token from one unpadded full forward per model (full [T, V] tensors)."""
    ids = torch.tensor([prompt_ids + resp_ids])
    with torch.no_grad():
        lp_pos = torch.log_softmax(pos(ids).logits[0].double(), -1)
        lp_neg = torch.log_softmax(neg(ids).logits[0].double(), -1)
    p = torch.softmax((1 + beta) * lp_pos - beta * lp_neg, -1)
    n = len(prompt_ids)
    return [float(p[n + t - 1, y]) for t, y in enumerate(resp_ids)]


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_pce_matches_a_direct_full_forward_across_lengths_and_batches(tmp_path, tok, two_models, beta):
    from rl.critical_tokens import score_pairs

    pos, neg = two_models
    ps = load_pairs(PreferenceDataConfig(source=str(write_pairs(tmp_path / "p.jsonl"))), tok)
    assert len({len(r.prompt_ids) for r in ps.rows}) == 3  # different prompt lengths: left padding matters
    # 2 pairs per forward (the third is alone), chunks of 5 tokens: batching and chunking are both crossed
    got = score_pairs(pos, neg, ps.rows, ps.pad_token_id, beta_ce=beta, batch_pairs=2, chunk_tokens=5)
    assert len(got) == 3
    for row, (c, r) in zip(ps.rows, got):
        assert len(c) == len(row.chosen_ids) and len(r) == len(row.rejected_ids)  # EOS included
        assert c == pytest.approx(direct_pce(pos, neg, row.prompt_ids, row.chosen_ids, beta), rel=1e-4, abs=1e-6)
        assert r == pytest.approx(direct_pce(pos, neg, row.prompt_ids, row.rejected_ids, beta), rel=1e-4, abs=1e-6)
        assert all(0.0 <= x <= 1.0 for x in c + r)


def test_pce_with_identical_models_and_beta_zero_is_the_model_probability(tmp_path, tok, two_models):
    """beta_CE = 0 leaves softmax(log p_pos) = p_pos: the probability the model gives each response token."""
    from rl.critical_tokens import score_pairs

    pos, _ = two_models
    ps = load_pairs(PreferenceDataConfig(source=str(write_pairs(tmp_path / "p.jsonl"))), tok)
    row = ps.rows[1]
    (c, _r), = score_pairs(pos, pos, [row], ps.pad_token_id, beta_ce=0.0)
    ids = torch.tensor([row.prompt_ids + row.chosen_ids])
    with torch.no_grad():
        probs = torch.softmax(pos(ids).logits[0].double(), -1)
    n = len(row.prompt_ids)
    assert c == pytest.approx([float(probs[n + t - 1, y]) for t, y in enumerate(row.chosen_ids)], rel=1e-4)


def test_weighted_pairs_round_trip_through_load_pairs(tmp_path, tok, two_models):
    from rl.critical_tokens import score_pairs, write_weighted_pairs

    pos, neg = two_models
    src = write_pairs(tmp_path / "pairs.jsonl", PAIRS + [{"prompt": "x", "chosen": "y", "rejected": "y"}])
    ps = load_pairs(PreferenceDataConfig(source=str(src)), tok)  # the identical pair is dropped
    assert len(ps) == 3
    scores = score_pairs(pos, neg, ps.rows, ps.pad_token_id)
    out = tmp_path / "weighted.jsonl"
    assert write_weighted_pairs(src, ps.rows, scores, out) == 3
    raw = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt"] for r in raw] == [p["prompt"] for p in PAIRS] and raw[0]["answer"] == "5"
    back = load_pairs(PreferenceDataConfig(source=str(out), chosen_weight_field="chosen_weight",
                                           rejected_weight_field="rejected_weight", on_bad_pair="error"), tok)
    for row, got, (c, r) in zip(ps.rows, back.rows, scores):
        assert got.chosen_ids == row.chosen_ids and got.rejected_ids == row.rejected_ids
        assert got.chosen_weight == pytest.approx(c, rel=1e-6) and got.rejected_weight == pytest.approx(r, rel=1e-6)
    batch = back.collate([0, 1, 2])  # the cdpo loss reads weights [2B, T] aligned to completion_ids
    assert batch["weight"].shape == batch["completion_ids"].shape
    assert float(batch["weight"][4, len(ps.rows[1].rejected_ids) - 1]) == pytest.approx(scores[1][1][-1], rel=1e-6)
    assert not (tmp_path / "weighted.jsonl.tmp").exists()


def test_sft_batch_puts_the_loss_on_response_tokens_only():
    from rl.critical_sft import sft_batch

    b = sft_batch([([5, 6, 7], [8, 2]), ([5], [9, 9, 9, 2])], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 2], [5, 9, 9, 9, 2]]
    # mask[:, j] scores token j + 1: response tokens only (EOS included), nothing on prompt or padding
    assert b["loss_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    b = sft_batch([([5, 6], [8, 2]), ([5], [9, 2])], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 8, 2], [5, 9, 2, 0]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert b["loss_mask"].tolist() == [[0, 1, 1], [1, 1, 0]]


def test_lora_sft_learns_the_responses_and_touches_only_the_targets(tmp_path, tok, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rl.critical_sft import SFTConfig, sft_examples, sft_loss, train_lora_sft

    rows = [{"prompt": f"Q{i}: say it\nA:", "completion": " the answer is forty two"} for i in range(12)]
    src = tmp_path / "sft.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = sft_examples(src, tok, max_length=64)
    assert len(examples) == 12 and examples[0][1][-1] == tok.eos_token_id
    cfg = SFTConfig(lr=3e-3, epochs=3, batch_size=4, warmup_steps=100, max_warmup_fraction=0.1, seed=0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    before = sft_loss(base, examples, tok.eos_token_id)
    stats = train_lora_sft(tiny_model_dir, src, tmp_path / "pos", cfg, tok)
    assert stats["examples"] == 12 and stats["steps"] == 9 and stats["warmup_steps"] == 1  # min(100, 0.1 * 9)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "pos", dtype=torch.float32)
    assert sft_loss(tuned, examples, tok.eos_token_id) < before - 0.5
    assert stats["final_loss"] < stats["first_loss"]
    changed = {n for n, p in tuned.state_dict().items() if not torch.equal(p, base.state_dict()[n])}
    assert changed and all(any(t in n for t in ("gate_proj", "up_proj", "down_proj")) for n in changed)
    assert not any("lora" in n for n in tuned.state_dict())  # merged
    assert (tmp_path / "pos" / "tokenizer.json").is_file() and not (tmp_path / "pos.tmp").exists()


def test_sft_holdout_keeps_the_best_adapter(tmp_path, tok, tiny_model_dir):
    from rl.critical_sft import SFTConfig, train_lora_sft

    rows = [{"prompt": f"Q{i}:", "completion": f" answer {i % 3}"} for i in range(10)]
    src = tmp_path / "sft.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stats = train_lora_sft(tiny_model_dir, src, tmp_path / "m", SFTConfig(lr=1e-2, batch_size=2, holdout=3,
                                                                          eval_every=1), tok)
    assert stats["examples"] == 7 and stats["holdout"] == 3 and stats["steps"] == 4
    assert len(stats["eval_losses"]) == 5  # before training and after every step
    assert stats["best_eval_loss"] == min(stats["eval_losses"])


def test_config_section_and_overrides(tmp_path):
    from rl.config import ConfigError
    from rl.critical_tokens import load_critical_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text((Path(__file__).parents[2] / "recipes" / "smoke.yaml").read_text()
                      + "critical_tokens:\n  n: 16\n  sft: {lr: 1.0e-3}\n")
    cfg, ct = load_critical_config(recipe, ["rollout.temperature=0.5", "critical_tokens.beta_ce=0.5",
                                            "critical_tokens.verify.rollouts=8"])
    assert cfg.rollout.temperature == 0.5 and cfg.name == "smoke"
    assert ct.n == 16 and ct.sft.lr == 1e-3 and ct.beta_ce == 0.5 and ct.verify.rollouts == 8
    assert ct.sft.lora_rank == 8 and ct.top_p == 0.95  # spec §3.1 defaults
    with pytest.raises(ConfigError, match=r"critical_tokens\.sft\.nope"):
        load_critical_config(recipe, ["critical_tokens.sft.nope=1"])
    with pytest.raises(ConfigError, match=r"r\.yaml.*rollout\.nope"):
        load_critical_config(recipe, ["rollout.nope=1"])
    with pytest.raises(ConfigError, match=r"critical_tokens\.beta_ce"):
        load_critical_config(recipe, ["critical_tokens.beta_ce=-1"])
    cfg, ct = load_critical_config(Path(__file__).parents[2] / "recipes" / "smoke.yaml", [])
    assert ct.n == 64  # no section: the defaults


# ----------------------------------------------------------------------------- pipeline with a scripted pool


class AnswerPool:
    """Stands in for RolloutPool: per prompt, completions "= a" (correct x3), "= a+1" (x2), "= a+2" (x1)."""

    def __init__(self, tokenizer, prompt_set):
        self.tok = tokenizer
        self.answers = {tuple(r.ids): int(r.answer) for r in prompt_set.rows}
        self.calls = 0

    def generate(self, prompt_ids, sampling):
        from rollout.types import Completion

        self.calls += 1
        out = []
        for i, p in enumerate(prompt_ids):
            a = self.answers[tuple(p)]
            texts = [f" = {a}"] * 3 + [f" = {a + 1}"] * 2 + [f" = {a + 2}"]
            out.append([Completion(i, self.tok(t, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id],
                                   None, t, "stop") for t in texts[: sampling.n]])
        return out

    def shutdown(self):
        pass


def test_pipeline_writes_every_stage_and_a_rerun_skips_finished_ones(tmp_path, tok, tiny_model_dir):
    from rl.critical_tokens import load_critical_config, run_critical_tokens
    from rl.data import load_train_prompts

    cfg, ct = load_critical_config(Path(__file__).parents[2] / "recipes" / "smoke.yaml", [
        f"model.name_or_path={tiny_model_dir}", "critical_tokens.num_prompts=4", "critical_tokens.n=6",
        "critical_tokens.sft.batch_size=4", "critical_tokens.sft.lr=1e-3"])
    pools = []

    def factory(model_path):
        pools.append(AnswerPool(tok, load_train_prompts(cfg.data, tok, limit=4)))
        return pools[-1]

    out = tmp_path / "ct"
    res = run_critical_tokens(cfg, ct, out, pool_factory=factory)
    assert res["ran"] == ["sample", "sft_pos", "sft_neg", "score"]
    for name in ("pairs.jsonl", "pairs.sft_pos.jsonl", "pairs.sft_neg.jsonl", "weighted_pairs.jsonl",
                 "pos_model/config.json", "neg_model/config.json", "critical_tokens.yaml"):
        assert (out / name).exists(), name
    rows = [json.loads(x) for x in (out / "weighted_pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and res["stats"]["score"]["pairs"] == 4
    for r in rows:  # cDPO rule: most frequent correct vs most frequent incorrect answer
        assert r["chosen"] == f" = {r['answer']}" and r["rejected"] == f" = {int(r['answer']) + 1}"
        assert len(r["rejected_weight"]) == len(tok(r["rejected"], add_special_tokens=False)["input_ids"]) + 1
    mtime = (out / "weighted_pairs.jsonl").stat().st_mtime_ns

    res = run_critical_tokens(cfg, ct, out, pool_factory=factory)
    assert res["ran"] == [] and len(pools) == 1  # nothing redone, no pool started
    assert (out / "weighted_pairs.jsonl").stat().st_mtime_ns == mtime

    ct.beta_ce = 0.5  # only the scoring depends on it
    res = run_critical_tokens(cfg, ct, out, pool_factory=factory)
    assert res["ran"] == ["score"] and len(pools) == 1
    ct.sft.lr = 2e-3  # both SFT models and the scores depend on it, the samples do not
    assert run_critical_tokens(cfg, ct, out, pool_factory=factory)["ran"] == ["sft_pos", "sft_neg", "score"]
    assert run_critical_tokens(cfg, ct, out, pool_factory=factory, force=True)["ran"][0] == "sample"
    assert len(pools) == 2


def test_pipeline_leaves_no_finished_marker_for_a_failed_stage(tmp_path, tok, tiny_model_dir, monkeypatch):
    import rl.critical_tokens as m
    from rl.data import load_train_prompts

    cfg, ct = m.load_critical_config(Path(__file__).parents[2] / "recipes" / "smoke.yaml", [
        f"model.name_or_path={tiny_model_dir}", "critical_tokens.num_prompts=2", "critical_tokens.n=6"])

    def factory(_):
        return AnswerPool(tok, load_train_prompts(cfg.data, tok, limit=2))

    def boom(*a, **k):
        raise RuntimeError("killed in the SFT")

    monkeypatch.setattr(m, "train_lora_sft", boom)
    with pytest.raises(RuntimeError, match="killed"):
        m.run_critical_tokens(cfg, ct, tmp_path / "ct", pool_factory=factory)
    assert (tmp_path / "ct" / "stages" / "sample.json").is_file()
    assert not (tmp_path / "ct" / "stages" / "sft_pos.json").exists()
    monkeypatch.undo()
    assert m.run_critical_tokens(cfg, ct, tmp_path / "ct", pool_factory=factory)["ran"] == ["sft_pos", "sft_neg",
                                                                                            "score"]


def test_cli_print_config(capsys):
    from rl.cli import main

    assert main(["critical-tokens", "smoke", "critical_tokens.n=5", "--out", "unused", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "critical_tokens:" in text and "n: 5" in text and "lora_rank: 8" in text and "name: smoke" in text
    assert main(["critical-tokens", "smoke", "critical_tokens.nope=1", "--out", "unused"]) == 2  # a config error
