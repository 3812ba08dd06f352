"""The transformers backend (in process, tiny random Llama, fp32): shapes, sampler logprobs, stops, reload.

Logprobs are checked by brute force: one plain forward pass over prompt + completion,
then the same temperature / top-k processing written out by hand.
"""

from __future__ import annotations

import math

import pytest
import torch

from rollout.hf_backend import HFEngine
from rollout.types import EngineSpec, SamplingSpec

PROMPTS = [[1, 4093, 198, 1780, 314], [1, 520, 9531, 198], [1, 2683, 359, 253, 5356, 5646]]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(EngineSpec(model_path=tiny_model_dir, backend="hf", dtype="float32", max_model_len=64,
                               hf_batch_prompts=2), worker_index=0)  # 2 per call: the 3 prompts take two calls


def _processed_logprobs(model, prompt, tokens, temperature, top_k):
    """log p(token) under softmax(top_k(logits) / T), from one unpadded forward pass."""
    ids = torch.tensor([prompt + tokens])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    if temperature > 0:
        logits = logits / temperature
    if top_k > 0:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(tokens)[:, None]).squeeze(1)


def test_shapes_order_and_finish_reasons(engine):
    groups = engine.generate(PROMPTS, SamplingSpec(n=3, max_tokens=6), first_index=10)
    assert len(groups) == 3 and all(len(g) == 3 for g in groups)
    for i, group in enumerate(groups):
        for c in group:
            assert c.prompt_index == 10 + i
            assert 1 <= len(c.token_ids) <= 6 and len(c.logprobs) == len(c.token_ids)
            assert c.finish_reason in ("stop", "length")
            assert (c.finish_reason == "length") == (c.token_ids[-1] not in engine.eos_ids)
            assert c.text == engine.tokenizer.decode(c.token_ids, skip_special_tokens=True)


@pytest.mark.parametrize("temperature, top_k", [(0.0, -1), (0.7, 5)])
def test_logprobs_are_those_of_the_processed_distribution(engine, temperature, top_k):
    torch.manual_seed(1)
    groups = engine.generate(PROMPTS, SamplingSpec(n=2, temperature=temperature, top_k=top_k, max_tokens=5))
    for prompt, group in zip(PROMPTS, groups):
        for c in group:
            want = _processed_logprobs(engine.model, prompt, c.token_ids, temperature, top_k)
            torch.testing.assert_close(torch.tensor(c.logprobs), want, atol=2e-4, rtol=0)
            if temperature > 0:  # and not the raw model's: temperature 0.7 moves them well apart
                raw = _processed_logprobs(engine.model, prompt, c.token_ids, 0.0, -1)
                assert (torch.tensor(c.logprobs) - raw).abs().max() > 1e-2


def test_greedy_is_deterministic_and_n_copies_agree(engine):
    a = engine.generate(PROMPTS[:1], SamplingSpec(n=2, temperature=0.0, max_tokens=6))[0]
    b = engine.generate(PROMPTS[:1], SamplingSpec(n=1, temperature=0.0, max_tokens=6))[0]
    assert a[0].token_ids == a[1].token_ids == b[0].token_ids


def test_stop_string_ends_the_completion_before_it(engine):
    # sampled (greedy decoding of a random model repeats one token); the same seed replays the same draws
    torch.manual_seed(3)
    full = engine.generate(PROMPTS[:1], SamplingSpec(n=1, max_tokens=12))[0][0]
    # pick a stop string that first appears at some token k: the completion must end right there
    tok = engine.tokenizer
    k, stop = next((k, tok.decode(full.token_ids[k:k + 1])) for k in range(2, len(full.token_ids))
                   if tok.decode(full.token_ids[k:k + 1]).strip()
                   and tok.decode(full.token_ids[k:k + 1]) not in tok.decode(full.token_ids[:k]))
    torch.manual_seed(3)
    cut = engine.generate(PROMPTS[:1], SamplingSpec(n=1, max_tokens=12, stop=[stop]))[0][0]
    assert cut.finish_reason == "stop"
    assert cut.token_ids == full.token_ids[:k + 1]
    assert stop not in cut.text and full.text.startswith(cut.text)


def test_completion_trimming_by_hand(engine):
    eos, pad = engine.eos_ids[0], engine.pad_id
    spec = SamplingSpec(n=1)
    c = engine._completion([5, 6, eos, pad, pad], [-1.0, -2.0, -3.0, -9.0, -9.0], spec, 0)
    assert (c.token_ids, c.logprobs, c.finish_reason) == ([5, 6, eos], [-1.0, -2.0, -3.0], "stop")
    c = engine._completion([5, 6, 7], [-1.0, -2.0, -3.0], spec, 0)
    assert (c.token_ids, c.finish_reason) == ([5, 6, 7], "length")


def test_reload_from_files_replaces_the_weights(engine, tmp_path):
    from safetensors.torch import save_file

    name = "model.norm.weight"
    old = engine.model.state_dict()[name].clone()
    new = torch.full_like(old, 0.5)
    save_file({name: new}, str(tmp_path / "b.safetensors"))
    assert engine.reload_from_files([str(tmp_path / "b.safetensors")]) == 1
    assert torch.equal(engine.model.state_dict()[name], new)
    save_file({name: old}, str(tmp_path / "b.safetensors"))
    engine.reload_from_files([str(tmp_path / "b.safetensors")])
    save_file({"model.nope": old}, str(tmp_path / "c.safetensors"))
    with pytest.raises(KeyError, match="model.nope"):
        engine.reload_from_files([str(tmp_path / "c.safetensors")])
