"""Chunked log-probs / entropy against full-logits references (rl/algorithms/logprobs.py)."""

import math

import pytest
import torch

from rl.algorithms.logprobs import chunked_logprobs, entropy_from_logits, selective_log_softmax

F64 = torch.float64


def test_entropy_hand_worked_three_token_vocab():
    # p = [1/2, 1/4, 1/4]: H = 0.5 ln2 + 2 * 0.25 ln4 = 1.5 ln2 = 1.0397208; log p(token 1) = -ln4.
    # Build logits 2 ln p through an identity head and divide by temperature 2 -> z = ln p.
    p = torch.tensor([0.5, 0.25, 0.25], dtype=F64)
    hidden = (2 * p.log()).view(1, 1, 3)
    logp, ent = chunked_logprobs(hidden, torch.eye(3, dtype=F64), torch.tensor([[1]]), temperature=2.0,
                                 with_entropy=True)
    assert ent.item() == pytest.approx(1.5 * math.log(2))
    assert logp.item() == pytest.approx(-math.log(4))
    # uniform logits: H = ln 3
    assert entropy_from_logits(torch.zeros(3)).item() == pytest.approx(math.log(3))


def test_selective_log_softmax_by_hand():
    # logits [0, 0]: each token has log prob -ln2; logits [ln3, 0]: p = [3/4, 1/4]
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0]], dtype=F64)
    out = selective_log_softmax(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(out, torch.tensor([-math.log(2), math.log(0.25)], dtype=F64))


def _problem(dtype=F64, bias=True):
    torch.manual_seed(0)
    n, t, d, v = 3, 5, 8, 11
    hidden = torch.randn(n, t, d, dtype=dtype, requires_grad=True)
    weight = torch.randn(v, d, dtype=dtype, requires_grad=True)
    b = torch.randn(v, dtype=dtype, requires_grad=True) if bias else None
    labels = torch.randint(0, v, (n, t))
    return hidden, weight, b, labels


def _reference(hidden, weight, b, labels, temperature):
    """Full [N, T, V] logits with torch.log_softmax: fine at V = 11."""
    logits = hidden @ weight.T + (b if b is not None else 0)
    z = logits / temperature
    logp = torch.log_softmax(z, -1).gather(-1, labels[..., None]).squeeze(-1)
    prob = torch.softmax(z, -1)
    ent = -(prob * torch.log_softmax(z, -1)).sum(-1)
    return logp, ent


@pytest.mark.parametrize("chunk", [1, 4, 7, 15, 1000])
def test_chunked_equals_full_logits_values_and_gradients(chunk):
    hidden, weight, b, labels = _problem()
    logp, ent = chunked_logprobs(hidden, weight, labels, bias=b, temperature=0.7, chunk_tokens=chunk,
                                 with_entropy=True)
    ref_logp, ref_ent = _reference(hidden, weight, b, labels, 0.7)
    torch.testing.assert_close(logp, ref_logp)
    torch.testing.assert_close(ent, ref_ent.detach())
    assert not ent.requires_grad
    upstream = torch.randn(3, 5, dtype=F64)
    got = torch.autograd.grad((logp * upstream).sum(), (hidden, weight, b))
    want = torch.autograd.grad((ref_logp * upstream).sum(), (hidden, weight, b))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_gradcheck_small():
    hidden, weight, b, labels = _problem()
    fn = lambda h, w, bb: chunked_logprobs(h, w, labels, bias=bb, temperature=1.3, chunk_tokens=4)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (hidden, weight, b))


def test_frozen_head_only_gives_hidden_gradient():
    hidden, weight, _, labels = _problem(bias=False)
    weight.requires_grad_(False)
    logp, ent = chunked_logprobs(hidden, weight, labels, chunk_tokens=4)
    assert ent is None
    logp.sum().backward()
    ref_logp, _ = _reference(hidden.detach().requires_grad_(True), weight, None, labels, 1.0)
    torch.testing.assert_close(logp, ref_logp)
    assert hidden.grad is not None and weight.grad is None


def test_bfloat16_inputs_give_float32_outputs():
    hidden, weight, b, labels = _problem(dtype=torch.bfloat16)
    logp, ent = chunked_logprobs(hidden, weight, labels, bias=b, chunk_tokens=4, with_entropy=True)
    assert logp.dtype == torch.float32 and ent.dtype == torch.float32
    # reference: bf16 logits (as the HF head makes them), upcast, then log-softmax in float32
    z = (hidden @ weight.T + b).float()
    torch.testing.assert_close(logp, selective_log_softmax(z, labels))
    logp.sum().backward()
    assert hidden.grad.dtype == torch.bfloat16 and weight.grad.dtype == torch.bfloat16


def test_no_grad_mode_for_old_and_reference_policies():
    hidden, weight, b, labels = _problem()
    with torch.no_grad():
        logp, ent = chunked_logprobs(hidden, weight, labels, bias=b, chunk_tokens=2, with_entropy=True)
    assert not logp.requires_grad
    torch.testing.assert_close(logp, _reference(hidden, weight, b, labels, 1.0)[0].detach())


def test_never_saves_full_logits_for_backward():
    # Record every tensor autograd keeps for backward; the full-logits version keeps [M, V] ones.
    hidden, weight, b, labels = _problem()
    m, v = 15, 11

    def largest_saved(fn):
        sizes = []

        def pack(x):
            sizes.append(x.numel())
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            fn()
        return max(sizes)

    assert largest_saved(lambda: _reference(hidden, weight, b, labels, 1.0)) >= m * v  # the hook sees it
    chunked = largest_saved(lambda: chunked_logprobs(hidden, weight, labels, bias=b, chunk_tokens=4))
    assert chunked < m * v  # only hidden [M, d] = 120, weight [V, d] = 88, labels, lse


def test_bad_inputs():
    hidden, weight, b, labels = _problem()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 11\)"):
        chunked_logprobs(hidden, weight, labels - 100)
    with pytest.raises(ValueError, match="temperature"):
        chunked_logprobs(hidden, weight, labels, temperature=0.0)
    with pytest.raises(ValueError, match="weight must be"):
        chunked_logprobs(hidden, weight[:, :3], labels)
    with pytest.raises(ValueError, match=r"\[N, T, d\]"):
        chunked_logprobs(hidden[0], weight, labels)


def test_matches_a_causal_lm_through_its_hidden_states():
    # Usage pattern: hidden state at position P-1+t predicts completion token t.
    from transformers import LlamaForCausalLM

    from rl.models import tiny_llama_config

    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=97, hidden=32, layers=1)).eval()
    prompt, completion = torch.randint(0, 97, (2, 3)), torch.randint(0, 97, (2, 4))
    ids = torch.cat([prompt, completion], 1)
    with torch.no_grad():
        logits = model(ids).logits[:, 2:-1]  # [N, T, V] is fine at this size
        hidden = model.model(ids).last_hidden_state[:, 2:-1]
    want = selective_log_softmax(logits / 0.8, completion)
    got, _ = chunked_logprobs(hidden, model.lm_head.weight, completion, temperature=0.8, chunk_tokens=3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
