"""The DeepSpeed trainer on a tiny Llama: log-probs, exact multi-rank updates, LoRA reference, ZeRO."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rl.config import load_config

REPO = Path(__file__).resolve().parents[2]
N, P, T = 8, 5, 6


def cfg_for(**over):
    # adam_eps >> |grad| makes Adam's first step lr * g / eps: linear in the gradient, so comparing
    # weights after one step compares gradients (Adam's usual first step is ~lr * sign(g)).
    base = {"model.dtype": "float32", "trainer.micro_batch_size": 2, "trainer.lr": 10.0, "trainer.adam_eps": 1e3,
            "trainer.grad_clip": 0.0,
            "rollout.n": 4, "trainer.prompts_per_step": 2, "trainer.torch_threads": 1}
    base.update(over)
    return load_config(REPO / "recipes/smoke.yaml", [f"{k}={v}" for k, v in base.items()])


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 3, 6, 1, 5, 2, 6, 4])
    cmask = (torch.arange(T)[None] < lengths[:, None]).float()
    pmask = torch.ones(N, P, dtype=torch.long)
    pmask[0, :2] = 0  # left padding
    b = {"prompt_ids": torch.randint(3, 1000, (N, P), generator=g), "prompt_mask": pmask,
         "completion_ids": torch.randint(3, 1000, (N, T), generator=g), "completion_mask": cmask}
    return b


def train_batch(b, old_logp, seed=1):
    g = torch.Generator().manual_seed(seed)
    adv = torch.randn(N, 1, generator=g).expand(N, T).contiguous()
    return dict(b, old_logp=old_logp, advantages=adv, token_weight=torch.ones(N, T), loss_mask=b["completion_mask"],
                ref_logp=old_logp, sampler_logp=old_logp)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rl.engine import PolicyEngine

    return PolicyEngine(cfg_for(), tiny_model_dir, 0, 1, "127.0.0.1", 29461, 10)


def test_forward_stats_match_a_full_hf_forward(engine):
    b = make_batch()
    st = engine.forward_stats(b, need_entropy=True, need_hidden=True, need_ref=False)
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    att = torch.cat([b["prompt_mask"], b["completion_mask"].long()], 1)
    pos = (att.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = engine.engine.module(input_ids=ids, attention_mask=att, position_ids=pos).logits[:, P - 1 : P + T - 1]
    temp = engine.cfg.rollout.temperature
    lp = torch.log_softmax(logits.float() / temp, -1)
    want = lp.gather(-1, b["completion_ids"][..., None]).squeeze(-1)
    ent = -(lp.exp() * lp).sum(-1)
    m = b["completion_mask"].bool()
    torch.testing.assert_close(st["old_logp"][m], want[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(st["entropy"][m], ent[m], atol=1e-4, rtol=1e-4)
    assert st["hidden"].shape == (N, T, 128)


def _weights_after_one_step(cfg, model_dir, batch, ray_local):
    from rl.trainer_group import TrainerGroup

    group = TrainerGroup(cfg, model_dir, 10)
    try:
        group.train_mini_batch(batch)
        return group.named_weights()
    finally:
        group.shutdown()


def test_two_ranks_and_uneven_micro_batches_give_the_one_rank_update(tiny_model_dir, ray_local, engine):
    """Exact token-mean across ranks and gradient accumulation: the update must not depend on the split."""
    b = make_batch()
    old = engine.forward_stats(b, False, False, False)["old_logp"]
    batch = train_batch(b, old)
    one = _weights_after_one_step(cfg_for(**{"trainer.micro_batch_size": 8}), tiny_model_dir, batch, ray_local)
    two = _weights_after_one_step(cfg_for(**{"trainer.num_ranks": 2, "trainer.micro_batch_size": 3}), tiny_model_dir,
                                  batch, ray_local)
    moved = max((one[k] - engine.engine.module.state_dict()[k]).abs().max() for k in one)
    assert moved > 1e-3  # the step did something
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=2e-6, rtol=1e-4, msg=k)


def test_zero2_update_equals_zero0(tiny_model_dir, ray_local, engine):
    b = make_batch(3)
    batch = train_batch(b, engine.forward_stats(b, False, False, False)["old_logp"], seed=4)
    z0 = _weights_after_one_step(cfg_for(), tiny_model_dir, batch, ray_local)
    z2 = _weights_after_one_step(cfg_for(**{"trainer.zero_stage": 2}), tiny_model_dir, batch, ray_local)
    for k in z0:
        torch.testing.assert_close(z0[k], z2[k], atol=2e-6, rtol=1e-4, msg=k)


def test_lora_reference_is_the_base_model(tiny_model_dir):
    from rl.engine import PolicyEngine

    cfg = cfg_for(**{"model.lora.rank": 4, "algorithm.kl.coef": 0.1})
    eng = PolicyEngine(cfg, tiny_model_dir, 0, 1, "127.0.0.1", 29462, 10)
    b = make_batch(5)
    st = eng.forward_stats(b, False, False, need_ref=True)
    m = b["completion_mask"].bool()
    torch.testing.assert_close(st["old_logp"][m], st["ref_logp"][m])  # LoRA B starts at zero
    eng.train_mini_batch([train_batch(b, st["old_logp"])], float(b["completion_mask"].sum()), float(N))
    after = eng.forward_stats(b, False, False, need_ref=True)
    torch.testing.assert_close(after["ref_logp"][m], st["ref_logp"][m])  # reference frozen
    assert (after["old_logp"][m] - st["old_logp"][m]).abs().max() > 1e-4  # adapters trained
    merged = eng.named_weights()
    assert not any("lora" in k for k in merged) and "model.embed_tokens.weight" in merged
