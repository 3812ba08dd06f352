"""benchmarks/scaling_table.py against hand computation: the driver -> rank payload, parameter counts,
weight-sync bytes, the per-layer activation formula (against the tensors autograd really saves) and
the log-prob chunk's peak (against torch.profiler's allocation events)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def st():
    spec = importlib.util.spec_from_file_location("scaling_table", ROOT / "benchmarks" / "scaling_table.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["scaling_table"] = mod  # dataclasses look their module up while the file executes
    spec.loader.exec_module(mod)
    return mod


def per_row(p: int, t: int) -> int:
    # prompt_ids + prompt_mask int64 [P]; completion_ids int64, completion_mask f32, sampler_logp f32 [T];
    # group_id int64, rewards f32, truncated bool, correct bool
    return 8 * p + 8 * p + 8 * t + 4 * t + 4 * t + 8 + 4 + 1 + 1


def test_driver_to_rank_bytes(st):
    assert st.rank_payloads(prompts=4, group=2, prompt_len=5, completion_len=7, ranks=2) == [4 * per_row(5, 7)] * 2
    # the docs' layout: 8 groups of 8 per rank, prompts <= 1024, completions <= 4096 tokens
    assert st.rank_payloads(prompts=8, group=8, prompt_len=1024, completion_len=4096, ranks=1) == [64 * 81934]
    assert 64 * 81934 == 5_243_776


def hand_params(d, layers, heads, kv, inter, vocab, tied):
    hd = d // heads
    layer = (d * d + d) + 2 * (d * kv * hd + kv * hd) + d * d + 3 * d * inter + 2 * d  # q+bias, k/v+bias, o, MLP, norms
    return layers * layer + d + vocab * d * (1 if tied else 2)


@pytest.mark.parametrize("key,known", [("1.5b", 1.54e9), ("7b", 7.62e9), ("32b", 32.76e9)])
def test_param_counts(st, key, known):
    s = st.SHAPES[key]
    total = st.param_facts(s)["total"]
    assert total == hand_params(s.hidden, s.layers, s.heads, s.kv_heads, s.intermediate, s.vocab, s.tied)
    assert abs(total - known) < 0.006e9  # Qwen2.5-1.5B 1.54B, -7B 7.62B, -32B 32.76B (Hugging Face's counts)


def test_weight_sync_bytes(st):
    for key, tensors in (("1.5b", 338), ("7b", 339)):
        s = st.SHAPES[key]
        facts = st.param_facts(s)
        sync = st.sync_buckets(s, facts, 256 * 2**20, torch.bfloat16)
        assert sync["bytes"] == 2 * facts["total"]  # bf16; the tied 1.5B head is the embedding, sent once
        assert sync["tensors"] == tensors
        assert sync["largest_bucket"] == 2 * s.vocab * s.hidden  # the embedding travels alone
        assert sync["buckets"] >= sync["bytes"] / (256 * 2**20)


def test_layout_numbers(st):
    res = st.run(["7b"], ["grpo_thr_exploit"], [])["7b"]
    mem = res["memory"]["grpo_thr_exploit"]["components"]
    psi, n, t, d, v = 7_615_616_512, 64, 4096, 3584, 152064
    assert mem["weights"]["bytes"] == int(2 * psi / 8)
    assert mem["optimizer state"]["bytes"] == int(12 * psi / 8)
    assert mem["old-pass statistics"]["bytes"] == 4 * n * t * d + 4 * n * t  # fp32 hidden + old_logp
    assert mem["log-prob chunk forward"]["bytes"] == 10 * 4096 * v
    rows = {r["what"]: r["bytes"] for r in res["boundaries"]["grpo_thr_exploit"]}
    assert rows["its whole groups: ids, masks, sampler log-probs, rewards, labels"] == n * per_row(1024, t)
    assert rows["weights (bf16, engine dtype)"] == 2 * psi


def test_layer_activations_match_saved_tensors(st):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rl.prompt_sharing import position_ids_from_mask

    d, inter, heads, kv, mb, p, t = 192, 544, 6, 2, 3, 20, 92
    shape = st.Shape("tiny", d, 1, heads, kv, inter, 512, True)

    def saved(layers):
        cfg = Qwen2Config(hidden_size=d, intermediate_size=inter, num_attention_heads=heads, num_key_value_heads=kv,
                          num_hidden_layers=layers, vocab_size=512, tie_word_embeddings=True)
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16).train()
        params = {q.untyped_storage().data_ptr() for q in model.parameters()}
        ids = torch.randint(0, 512, (mb, p + t))
        attn = torch.ones(mb, p + t, dtype=torch.long)
        attn[0, :3] = 0  # a left-padded prompt and a right-padded completion, as the engine's batches
        attn[1, -4:] = 0
        seen: dict[int, int] = {}

        def pack(x):
            ptr = x.untyped_storage().data_ptr()
            if ptr not in params:
                seen[ptr] = x.untyped_storage().nbytes()
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            with torch.autocast("cpu", dtype=torch.bfloat16):  # as rl/engine.py hidden()
                model.model(input_ids=ids, attention_mask=attn, position_ids=position_ids_from_mask(attn),
                            use_cache=False)
        return sum(seen.values())

    assert saved(2) - saved(1) == st.layer_activations(shape, mb, p + t)


@pytest.mark.parametrize("d,v,chunk", [(32, 5000, 32), (48, 8000, 16)])
def test_logprob_chunk_peaks(st, d, v, chunk):
    """The formulas behind the 'log-prob chunk' rows, against the allocator's events on CPU."""
    from torch.profiler import ProfilerActivity, profile

    from rl.algorithms.logprobs import chunked_logprobs

    def peak(fn):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        try:
            events = prof.profiler.kineto_results.events()
        except AttributeError:
            pytest.skip("this torch's profiler does not expose raw memory events")
        cur = top = 0
        for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"):
            cur += nbytes
            top = max(top, cur)
        return top

    h = torch.randn(2, 64, d, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(v, d, dtype=torch.bfloat16, requires_grad=True)
    y = torch.randint(0, v, (2, 64))
    box = {}
    fwd = peak(lambda: box.setdefault("lp", chunked_logprobs(h, w, y, chunk_tokens=chunk)[0]))
    bwd = peak(lambda: box["lp"].sum().backward())
    assert fwd == pytest.approx(10 * chunk * v, rel=0.01)  # bf16 logits + fp32 cast + /temperature copy
    assert bwd == pytest.approx(4 * v * d + max(10 * chunk * v, 4 * chunk * v + 4 * v * d), rel=0.02)
