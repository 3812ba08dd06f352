"""rl.credit_step: D3S's sample level runs before the old-policy pass, which then covers only the
kept rows, and the result equals running the whole pass first (real DeepSpeed engine, tiny Llama)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from rl.batch import build_experience, forward_inputs
from rl.credit.base import CreditContext, PolicySnapshot
from rl.credit.chain import build_chain, run_chain
from rl.credit_step import assign_credit, compute_advantages
from rollout.types import Completion
from tests.rl.test_engine import cfg_for


class CountingEngine:
    """The real engine, recording how many rows each old-policy pass saw."""

    def __init__(self, engine) -> None:
        self.engine, self.rows_seen = engine, []

    def forward_stats(self, batch, *args):
        self.rows_seen.append(batch["completion_ids"].shape[0])
        return self.engine.forward_stats(batch, *args)

    def lm_head(self):
        return self.engine.lm_head()


def rollout(n_prompts=4, group=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    prompts, groups, rewards = [], [], []
    for i in range(n_prompts):
        prompts.append(torch.randint(3, 1000, (5,), generator=g).tolist())
        comps = []
        for _ in range(group):
            n = int(torch.randint(2, 7, (1,), generator=g))
            comps.append(Completion(i, torch.randint(3, 1000, (n,), generator=g).tolist(), [-1.0] * n, "", "stop"))
        groups.append(comps)
        rewards += [float(x) for x in torch.randint(0, 2, (group,), generator=g)]
    rewards[:group] = [1.0] * group  # one group without a mixed outcome: D3S never keeps it
    return prompts, groups, rewards


def experience(seed=0):
    prompts, groups, rewards = rollout(seed=seed)
    return build_experience(prompts, groups, rewards, pad_id=0, correct=[r > 0.5 for r in rewards])


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    from rl.engine import PolicyEngine

    return PolicyEngine(cfg_for(), tiny_model_dir, 0, 1, "127.0.0.1", 29471, 10)


def full_pass_then_chain(engine, cfg, chain, exp, step, total):
    """The order before the change: every row through the old pass, then advantages and the chain."""
    st = engine.forward_stats(forward_inputs(exp), True, "hidden" in chain[-1].needs, False)
    exp.old_logp, exp.entropy, exp.hidden = st["old_logp"], st.get("entropy"), st.get("hidden")
    compute_advantages(exp, cfg)
    policy = PolicySnapshot(*engine.lm_head(), cfg.rollout.temperature)
    run_chain(chain, exp, CreditContext(step, total, policy))
    return exp


@pytest.mark.parametrize("credit, shrinks", [(["d3s"], True), (["d3s", "thr"], False)])
def test_rows_first_pass_matches_the_full_pass(engine, credit, shrinks):
    cfg = cfg_for(**{"rollout.n": 4, "trainer.prompts_per_step": 4})
    cfg.algorithm.credit = credit
    counting = CountingEngine(engine)
    got = experience()
    metrics = assign_credit(counting, got, cfg, build_chain(credit, cfg.algorithm), 0, 10, lambda _: nullcontext())
    want = full_pass_then_chain(engine, cfg, build_chain(credit, cfg.algorithm), experience(), 0, 10)
    kept = int(metrics["d3s/kept_samples"])  # rows the sample level kept (the token level may empty more)
    assert 0 < kept <= 6  # N_s = G/4 -> 2 of each group of 4, none of the all-correct group
    assert counting.rows_seen == [kept if shrinks else 16] and metrics["batch/old_pass_rows"] == counting.rows_seen[0]
    torch.testing.assert_close(got.loss_mask(), want.loss_mask())
    torch.testing.assert_close(got.advantages, want.advantages)
    live = want.loss_mask() > 0
    torch.testing.assert_close(got.entropy[live], want.entropy[live], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.old_logp[live], want.old_logp[live], atol=1e-5, rtol=1e-5)
