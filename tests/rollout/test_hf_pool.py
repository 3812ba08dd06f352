"""backend="hf" behind the same RolloutPool interface (Ray actor, cpu_shm weight sync)."""

from __future__ import annotations

import pytest
import torch

from rollout import RolloutPool, SamplingSpec

PROMPTS = [[1, 4093, 198, 1780, 314], [1, 520, 9531, 198], [1, 2683, 359, 253, 5356, 5646]]


@pytest.fixture(scope="module")
def hf_pool(ray_local, tiny_model_dir):
    p = RolloutPool(tiny_model_dir, num_workers=2, backend="hf", dtype="float32", max_model_len=64,
                    num_cpus_per_worker=0.5, cpu_threads=1)
    yield p
    p.shutdown()


def test_prompts_are_spread_over_workers_and_come_back_in_order(hf_pool):
    groups = hf_pool.generate(PROMPTS, SamplingSpec(n=2, max_tokens=4))
    assert [[c.prompt_index for c in g] for g in groups] == [[0, 0], [1, 1], [2, 2]]
    assert all(len(c.logprobs) == len(c.token_ids) for g in groups for c in g)
    infos = hf_pool.workers_info()
    assert [i.index for i in infos] == [0, 1]
    assert "prompts 0..1" in infos[0].last_request and "prompts 2..2" in infos[1].last_request


def test_sync_changes_then_restores_greedy_output(hf_pool, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=6)
    before = [g[0].token_ids for g in hf_pool.generate(PROMPTS, greedy)]
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    torch.manual_seed(0)
    hf_pool.sync_weights({k: v + torch.randn_like(v) for k, v in original.items()}, step=1)
    assert [g[0].token_ids for g in hf_pool.generate(PROMPTS, greedy)] != before
    hf_pool.sync_weights(original, step=2)
    assert [g[0].token_ids for g in hf_pool.generate(PROMPTS, greedy)] == before


def test_a_worker_on_another_node_gets_the_files_as_bytes(hf_pool, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=6)
    before = [g[0].token_ids for g in hf_pool.generate(PROMPTS, greedy)]
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    torch.manual_seed(1)
    worker = hf_pool.workers[1]  # prompt 2 goes to worker 1
    real_node = worker.node_id
    worker.node_id = "another-node"  # its /dev/shm is not ours: the sync must ship bytes through Ray
    try:
        hf_pool.sync_weights({k: v + torch.randn_like(v) for k, v in original.items()}, step=3)
        changed = [g[0].token_ids for g in hf_pool.generate(PROMPTS, greedy)]
        assert changed[2] != before[2]
        hf_pool.sync_weights(original, step=4)
        assert [g[0].token_ids for g in hf_pool.generate(PROMPTS, greedy)] == before
    finally:
        worker.node_id = real_node
