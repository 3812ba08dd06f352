"""`tokencredit critical-tokens --verify` end to end on the tiny random Llama with a real vLLM engine in Ray:
sample, pairs + SFT sets, the §3.3 verification (rollouts from every prefix, forced alternatives), two LoRA
SFT models, p_CE for every response token, the weighted dataset read back by load_pairs; then a rerun that
finds every stage done. A random model is never right, so correctness here is a property of the text
(length mod 3), with the same property as its "final answer" so that cDPO's answer groups exist."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TASK = '''
def len_mod3(prompts, completions, **_):
    return [float(len(c) % 3 == 0) for c in completions]


def answer(text):
    return str(len(text) % 3)
'''


@pytest.mark.e2e
def test_critical_tokens_command(tmp_path, tiny_model_dir, ray_local):
    pytest.importorskip("vllm")
    from transformers import AutoTokenizer

    from rl.cli import main
    from rl.preference_data import PreferenceDataConfig, load_pairs

    (tmp_path / "task.py").write_text(TASK)
    recipe = tmp_path / "ct.yaml"
    recipe.write_text(f"""
name: ct-e2e
model: {{name_or_path: {tiny_model_dir}, dtype: float32}}
data:
  source: builtin:arithmetic
  task: {{ops: [add], digits: 1, num_train: 20, num_test: 4}}
  max_prompt_tokens: 96
rollout: {{n: 4, temperature: 1.0, max_tokens: 6, max_model_len: 128, memory_fraction: 0.05}}
rewards:
  functions: [{{name: task.py:len_mod3}}]
critical_tokens:
  num_prompts: 6
  n: 8
  keep_truncated: true
  answer_extract: task.py:answer
  sft: {{batch_size: 4}}
  verify: {{num_trajectories: 2, rollouts: 4, ks: [1, 4], random_positions: 1}}
""")
    out = tmp_path / "out"
    start = time.perf_counter()
    assert main(["critical-tokens", str(recipe), "--out", str(out), "--verify"]) == 0
    took = time.perf_counter() - start
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    stats = json.loads((out / "stages" / "sample.json").read_text())["stats"]
    assert stats["samples"] == 48 and stats["pairs"] >= 1
    ps = load_pairs(PreferenceDataConfig(source=str(out / "weighted_pairs.jsonl"), chosen_weight_field="chosen_weight",
                                         rejected_weight_field="rejected_weight", on_bad_pair="error"), tok)
    assert len(ps) == stats["pairs"]
    for r in ps.rows:
        assert all(0.0 <= w <= 1.0 for w in r.chosen_weight + r.rejected_weight)
        assert len(r.rejected_weight) == len(r.rejected_ids)
    rep = json.loads((out / "verify.json").read_text())
    assert 1 <= rep["summary"]["trajectories"] <= 2
    for t in rep["trajectories"]:
        assert len(t["counts"]) == t["length"] and all(0 <= c <= 4 for c in t["counts"])
        if t["critical_index"] is not None:
            assert t["counts"][t["critical_index"]] == 0 and t["without"]["n"] == 4
    assert set(rep["summary"]["critical"]) == {"with", "without"}
    # a rerun finds every stage done and starts no engine
    start2 = time.perf_counter()
    assert main(["critical-tokens", str(recipe), "--out", str(out), "--verify"]) == 0
    assert time.perf_counter() - start2 < 15
    print(f"critical-tokens e2e: {took:.1f}s")
