"""One optimizer step of the real engine against a gradient computed independently with plain autograd.

For each piece of the GRPO loss assembly (PPO clip, dual-clip, KL as a loss, TIS weights, credit
token weights, each aggregation mode), the parameter update of ``PolicyEngine.train_step`` over two
micro-batches must equal Adam's first step on the gradient of the same loss written out by hand
here from a plain transformers forward (full logits, ``log_softmax``). ``adam_eps >> |g|`` makes
that step lr * g / (|g| + eps), linear in the gradient, so a wrong factor anywhere shows.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from rl.experience import Experience
from rl.metrics import RankMetrics
from rl.objectives.grpo import GRPOObjective
from rl.trainer_rank import micro_batches
from tests.rl.test_engine import N, P, T, cfg_for, make_batch

MAX_TOKENS = 7  # rollout.max_tokens: Dr. GRPO's constant


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    b = make_batch(seed)
    b["group_id"] = torch.arange(N) // 4
    first = b["group_id"] * 4  # a group's completions share its prompt (group 0's is left-padded), as in rollouts:
    b["prompt_ids"], b["prompt_mask"] = b["prompt_ids"][first], b["prompt_mask"][first]  # the shared-prompt forward
    b["rewards"] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    b["advantages"] = torch.randn(N, 1, generator=g).expand(N, T).contiguous() * 2
    b["old_shift"] = (torch.rand(N, T, generator=g) - 0.5) * 0.8  # ratios spread around 1: clips bite
    b["ref_shift"] = (torch.rand(N, T, generator=g) - 0.5) * 2.0
    b["sampler_shift"] = (torch.rand(N, T, generator=g) - 0.5) * 2.0
    b["token_weight"] = 1.0 + 0.7 * torch.rand(N, T, generator=g)
    b["token_mask"] = (torch.rand(N, T, generator=g) > 0.2).float()  # a credit module dropped some tokens
    return b


def hand_logp(model, b, temperature):
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    att = torch.cat([b["prompt_mask"], b["completion_mask"].long()], 1)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, P - 1 : P + T - 1]
    return torch.log_softmax(logits.float() / temperature, -1).gather(-1, b["completion_ids"][..., None]).squeeze(-1)


def hand_loss(logp, b, a):
    """The GRPO loss written out from the spec (grpo_methods.md §1), independent of rl.algorithms."""
    mask = b["completion_mask"] * b["token_mask"]
    old = logp.detach() + b["old_shift"]
    adv = b["advantages"]
    ratio = torch.exp(logp - old)
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - a.eps_low, 1 + a.eps_high))
    if a.dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -adv * a.dual_clip), loss)
    if a.tis.enable:
        loss = loss * torch.clamp(torch.exp(old - (old + b["sampler_shift"])), max=a.tis.cap)
    loss = loss * b["token_weight"]
    if a.kl.coef > 0:
        d = (logp.detach() + b["ref_shift"]) - logp
        loss = loss + a.kl.coef * (torch.exp(d) - d - 1)
    loss = loss * mask
    rows = (mask.sum(-1) > 0).float()
    if a.aggregation == "token_mean":
        return loss.sum() / mask.sum()
    if a.aggregation == "seq_mean_token_mean":
        return (loss.sum(-1) / mask.sum(-1).clamp(min=1)).sum() / rows.sum()
    return loss.sum() / (rows.sum() * MAX_TOKENS)


CASES = {
    "clip": {},
    "clip_higher_dual_clip": {"algorithm.eps_high": 0.28, "algorithm.dual_clip": 1.5},
    "kl_loss": {"algorithm.kl.coef": 0.2},
    "tis": {"algorithm.tis.enable": True, "algorithm.tis.cap": 1.5},
    "seq_mean_token_mean": {"algorithm.aggregation": "seq_mean_token_mean"},
    "seq_mean_token_sum_norm": {"algorithm.aggregation": "seq_mean_token_sum_norm"},
    "plain_forward": {"trainer.share_prompt_forward": False},  # every row runs its own prompt
}


@pytest.mark.parametrize("name", list(CASES))
def test_engine_update_equals_adam_on_the_hand_gradient(tiny_model_dir, name):
    from rl.engine import PolicyEngine

    cfg = cfg_for(**{"rollout.max_tokens": MAX_TOKENS, "algorithm.on_paper_mismatch": "ignore", **CASES[name]})
    a = cfg.algorithm
    b = inputs()
    # the independent side: plain autograd on a fresh copy of the model
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    logp = hand_logp(model, b, cfg.rollout.temperature)
    hand_loss(logp, b, a).backward()
    lr, eps = cfg.trainer.lr, cfg.trainer.adam_eps
    want = {k: (p - lr * p.grad / (p.grad.abs() + eps)).detach() for k, p in model.named_parameters()}
    # the engine: the same tensors through GRPOObjective + PolicyEngine, two uneven micro-batches
    eng = PolicyEngine(cfg, tiny_model_dir, 0, 1, "127.0.0.1", 29481 + list(CASES).index(name), 10,
                       reference=a.kl.coef > 0)
    base = logp.detach()
    exp = Experience(prompt_ids=b["prompt_ids"], prompt_mask=b["prompt_mask"], completion_ids=b["completion_ids"],
                     completion_mask=b["completion_mask"], group_id=b["group_id"], rewards=b["rewards"],
                     advantages=b["advantages"], token_weight=b["token_weight"], token_mask=b["token_mask"],
                     old_logp=base + b["old_shift"], ref_logp=base + b["ref_shift"],
                     sampler_logp=base + b["old_shift"] + b["sampler_shift"])
    objective = GRPOObjective(cfg)
    mb = objective.train_rows(exp, torch.arange(N))
    eng.train_step([(objective, micro_batches(mb, 3, "loss_mask", mb), objective.norm_counts(mb))], RankMetrics())
    got = dict(t for bucket in eng.iter_weight_buckets(2**30) for t in bucket)
    moved = max(float((want[k] - p.detach()).abs().max()) for k, p in model.named_parameters())
    assert moved > 1e-3  # the step did something
    for k, w in want.items():
        torch.testing.assert_close(got[k], w, atol=3e-6, rtol=1e-4, msg=k)
