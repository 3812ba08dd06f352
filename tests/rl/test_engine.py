"""The DeepSpeed trainer on a tiny Llama: statistics, exact multi-rank updates, ZeRO 0-3 and offload, LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rl.config import load_config
from rl.objectives.base import Stat

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


def rollout_batch(groups=3, group=4, seed=0):
    """What the driver sends: ``groups`` prompts x ``group`` completions of uneven lengths, mixed rewards."""
    g = torch.Generator().manual_seed(seed)
    n = groups * group
    lengths = torch.randint(1, T + 1, (n,), generator=g)
    pmask = torch.ones(n, P, dtype=torch.long)
    pmask[::3, :2] = 0  # some left padding
    rewards = torch.randint(0, 2, (n,), generator=g).float()
    rewards[::group] = 1.0
    rewards[1::group] = 0.0  # every group has a mixed outcome
    return {"prompt_ids": torch.randint(3, 1000, (n, P), generator=g), "prompt_mask": pmask,
            "completion_ids": torch.randint(3, 1000, (n, T), generator=g),
            "completion_mask": (torch.arange(T)[None] < lengths[:, None]).float(),
            "group_id": torch.arange(groups).repeat_interleave(group), "rewards": rewards,
            "sampler_logp": -torch.rand(n, T, generator=g), "truncated": torch.zeros(n, dtype=torch.bool),
            "correct": rewards > 0.5}


def weights_after_one_step(cfg, model_dir, batch, tmp_path, ntp=None) -> tuple[dict, dict]:
    """(exported weights after one train_step, its metrics) through the real Ray ranks."""
    from rl.trainer_group import TrainerGroup

    group = TrainerGroup(cfg, model_dir, 10)
    try:
        metrics, _ = group.train_step(batch, ntp, 0, 10)
        out = tmp_path / f"export_{len(list(tmp_path.iterdir()))}"
        group.export_hf(str(out), model_dir)
    finally:
        group.shutdown()
    return load_file(str(out / "model.safetensors")), metrics


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rl.engine import PolicyEngine

    return PolicyEngine(cfg_for(), tiny_model_dir, 0, 1, "127.0.0.1", 29461, 10)


def test_stats_match_a_full_hf_forward(engine):
    b = make_batch()
    st = engine.stats(b, [Stat("old_logp", "policy", "logp"), Stat("entropy", "policy", "entropy"),
                          Stat("hidden", "policy", "hidden")])
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


def test_two_ranks_and_uneven_micro_batches_give_the_one_rank_update(tiny_model_dir, ray_local, tmp_path):
    """Exact token-mean across ranks and gradient accumulation: the update must not depend on the split
    (3 groups over 2 ranks: 8 and 4 rows, 3 micro-batches each, some of one row)."""
    batch = rollout_batch()
    one, m1 = weights_after_one_step(cfg_for(**{"trainer.micro_batch_size": 12}), tiny_model_dir, batch, tmp_path)
    two, m2 = weights_after_one_step(cfg_for(**{"trainer.num_ranks": 2, "trainer.micro_batch_size": 3}),
                                     tiny_model_dir, batch, tmp_path)
    start = load_file(f"{tiny_model_dir}/model.safetensors")
    assert max(float((one[k] - start[k]).abs().max()) for k in one) > 1e-3  # the step did something
    for k in one:
        torch.testing.assert_close(one[k], two[k], atol=2e-6, rtol=1e-4, msg=k)
    # metrics reduced over ranks: the loss is the global one, the grad norm this step's
    assert m2["train/loss"] == pytest.approx(m1["train/loss"], rel=1e-5, abs=1e-7)
    assert m2["train/grad_norm"] == pytest.approx(m1["train/grad_norm"], rel=1e-4)
    assert m1["train/grad_norm"] > 0
    assert m2["train/rows_in_backward"] == m1["train/rows_in_backward"] == 12


ZERO_CASES = [
    {"trainer.zero_stage": 1},
    {"trainer.zero_stage": 2},
    {"trainer.zero_stage": 3},
    {"trainer.zero_stage": 1, "trainer.offload_optimizer": True},
    {"trainer.zero_stage": 2, "trainer.offload_optimizer": True},
    {"trainer.zero_stage": 3, "trainer.offload_optimizer": True},
    {"trainer.zero_stage": 3, "trainer.offload_optimizer": True, "trainer.offload_params": True},
]


@pytest.fixture(scope="module")
def zero0_update(tiny_model_dir, ray_local, tmp_path_factory):
    batch = rollout_batch(seed=3)
    cfg = cfg_for(**{"trainer.num_ranks": 2, "algorithm.kl.coef": 0.1})
    return batch, weights_after_one_step(cfg, tiny_model_dir, batch, tmp_path_factory.mktemp("z0"))


@pytest.mark.parametrize("case", ZERO_CASES, ids=lambda c: "-".join(f"{k.split('.')[1]}={v}" for k, v in c.items()))
def test_zero_stages_and_offload_equal_zero0(tiny_model_dir, ray_local, tmp_path, zero0_update, case):
    """2 gloo ranks, KL to a reference model (partitioned too under ZeRO-3), one step: same weights and metrics."""
    batch, (z0, m0) = zero0_update
    cfg = cfg_for(**{"trainer.num_ranks": 2, "algorithm.kl.coef": 0.1, **case})
    got, m = weights_after_one_step(cfg, tiny_model_dir, batch, tmp_path)
    for k in z0:
        torch.testing.assert_close(got[k], z0[k], atol=2e-6, rtol=1e-4, msg=k)
    for key in ("train/loss", "train/grad_norm", "train/kl"):
        assert m[key] == pytest.approx(m0[key], rel=1e-4, abs=1e-7), key


def test_lora_reference_is_the_base_model(tiny_model_dir):
    from rl.engine import PolicyEngine
    from rl.experience import Experience
    from rl.metrics import RankMetrics
    from rl.objectives.grpo import GRPOObjective

    cfg = cfg_for(**{"model.lora.rank": 4, "algorithm.kl.coef": 0.1})
    eng = PolicyEngine(cfg, tiny_model_dir, 0, 1, "127.0.0.1", 29462, 10, reference=True)
    b = make_batch(5)
    req = [Stat("old_logp", "policy", "logp"), Stat("ref_logp", "reference", "logp")]
    st = eng.stats(b, req)
    m = b["completion_mask"].bool()
    torch.testing.assert_close(st["old_logp"][m], st["ref_logp"][m])  # LoRA B starts at zero
    objective = GRPOObjective(cfg)
    exp = Experience(**b, group_id=torch.arange(N) // 4, rewards=torch.arange(N).float() % 2)
    objective.compute_advantages(exp)
    exp.old_logp, exp.ref_logp = st["old_logp"], st["ref_logp"]
    mb = objective.train_rows(exp, torch.arange(N))
    eng.train_step([(objective, [mb], objective.norm_counts(mb))], RankMetrics())
    after = eng.stats(b, req)
    torch.testing.assert_close(after["ref_logp"][m], st["ref_logp"][m])  # reference frozen
    assert (after["old_logp"][m] - st["old_logp"][m]).abs().max() > 1e-4  # adapters trained
    merged = dict(t for bucket in eng.iter_weight_buckets(2**30) for t in bucket)
    assert not any("lora" in k or "base_layer" in k for k in merged) and "model.embed_tokens.weight" in merged
    # the merged q_proj is W + B A * scale, as peft's own merge computes it
    import copy

    want = copy.deepcopy(eng.engine.module).merge_and_unload().state_dict()
    for k, v in merged.items():
        torch.testing.assert_close(v, want[k], msg=k)
