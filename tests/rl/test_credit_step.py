"""GRPOObjective.prepare: D3S's sample level runs before the old-policy pass, which then covers only the
kept rows, and the result equals running the whole pass first (real DeepSpeed engine, tiny Llama)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from rl.batch import build_experience
from rl.credit.base import CreditContext, PolicySnapshot
from rl.credit.chain import run_chain
from rl.objectives.base import Stat
from rl.objectives.grpo import GRPOObjective, forward_inputs
from rollout.types import Completion
from tests.rl.test_engine import cfg_for


class CountingEngine:
    """The real engine, recording how many rows each old-policy pass saw."""

    def __init__(self, engine) -> None:
        self.engine, self.rows_seen = engine, []

    def stats(self, batch, requests):
        self.rows_seen.append(batch["completion_ids"].shape[0])
        return self.engine.stats(batch, requests)

    def __getattr__(self, name):
        return getattr(self.engine, name)


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


def full_pass_then_chain(engine, cfg, exp, step, total):
    """The order before the change: every row through the old pass, then advantages and the chain."""
    objective = GRPOObjective(cfg)
    req = [Stat("old_logp", "policy", "logp"), Stat("entropy", "policy", "entropy")]
    if "hidden" in objective.needs:
        req.append(Stat("hidden", "policy", "hidden"))
    st = engine.stats(forward_inputs(exp), req)
    exp.old_logp, exp.entropy, exp.hidden = st["old_logp"], st.get("entropy"), st.get("hidden")
    objective.compute_advantages(exp)
    w, b = engine.head("policy")
    run_chain(objective.chain, exp, CreditContext(step, total, PolicySnapshot(w.detach(), b, cfg.rollout.temperature)))
    return exp


@pytest.mark.parametrize("credit, shrinks", [(["d3s"], True), (["d3s", "thr"], False)])
def test_rows_first_pass_matches_the_full_pass(engine, credit, shrinks):
    cfg = cfg_for(**{"rollout.n": 4, "trainer.prompts_per_step": 4, "algorithm.credit": f"[{','.join(credit)}]"})
    counting = CountingEngine(engine)
    got = experience()
    metrics, _ = GRPOObjective(cfg).prepare(counting, got, 0, 10, lambda _: nullcontext())
    want = full_pass_then_chain(engine, cfg, experience(), 0, 10)
    kept = int(metrics["d3s/kept_samples"])  # rows the sample level kept (the token level may empty more)
    assert 0 < kept <= 6  # N_s = G/4 -> 2 of each group of 4, none of the all-correct group
    assert counting.rows_seen == [kept if shrinks else 16] and metrics["batch/old_pass_rows"] == counting.rows_seen[0]
    torch.testing.assert_close(got.loss_mask(), want.loss_mask())
    torch.testing.assert_close(got.advantages, want.advantages)
    live = want.loss_mask() > 0
    torch.testing.assert_close(got.entropy[live], want.entropy[live], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.old_logp[live], want.old_logp[live], atol=1e-5, rtol=1e-5)
