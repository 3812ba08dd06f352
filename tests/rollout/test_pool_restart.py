"""A rollout worker that dies mid-request is restarted and its seeded request retried: the same completions."""

from __future__ import annotations

import pytest

from rollout import RolloutError, RolloutPool, SamplingSpec

PROMPTS = [[1, 4093, 198, 1780, 314], [1, 520, 9531, 198], [1, 2683, 359, 253, 5356, 5646]]
SPEC = SamplingSpec(n=2, temperature=1.0, max_tokens=5, seed=1234)


def tokens(groups):
    return [[c.token_ids for c in g] for g in groups]


@pytest.fixture(scope="module")
def killed_pool(ray_local, tiny_model_dir):
    """Worker 1 SIGKILLs itself at the start of its 2nd generate call (the fault hook of rl/faults.py)."""
    import os

    os.environ["TOKENCREDIT_FAULT"] = "kill_worker:1:2"
    restarted = []
    try:
        pool = RolloutPool(tiny_model_dir, num_workers=2, backend="hf", dtype="float32", max_model_len=64,
                           num_cpus_per_worker=0.5, cpu_threads=1, max_restarts=1,
                           on_restart=lambda p: restarted.append([w.info.pid for w in p.workers]))
    finally:
        del os.environ["TOKENCREDIT_FAULT"]
    yield pool, restarted
    pool.shutdown()


def test_a_worker_killed_mid_request_is_restarted_and_the_retry_is_exact(killed_pool):
    pool, restarted = killed_pool
    first = tokens(pool.generate(PROMPTS, SPEC))
    pid_before = pool.workers[1].info.pid
    again = tokens(pool.generate(PROMPTS, SPEC))  # worker 1 dies in this call; its chunk is sent again
    assert again == first  # seeded per call: the retried chunk is what the lost call would have returned
    assert pool.restarts == [0, 1]
    assert len(restarted) == 1 and restarted[0][1] != pid_before  # on_restart saw the new worker
    assert "again" in pool.workers[1].info.last_request
    assert tokens(pool.generate(PROMPTS, SPEC)) == first  # the replacement does not fire the hook again


def test_past_max_restarts_the_error_names_the_limit(killed_pool, ray_local):
    pool, _ = killed_pool
    ray_local.kill(pool.workers[0].actor)
    pool.restarts[0] = pool.max_restarts  # worker 0 has used its restarts
    with pytest.raises(RolloutError, match=r"rollout worker 0 .* died during generate.*rollout.max_restarts=1"):
        pool.generate(PROMPTS, SPEC)


def test_no_restart_when_weights_were_sent_without_a_way_to_resend_them(ray_local, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    pool = RolloutPool(tiny_model_dir, num_workers=1, backend="hf", dtype="float32", max_model_len=64,
                       num_cpus_per_worker=0.5, cpu_threads=1, max_restarts=3)
    try:
        pool.sync_weights(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict(), 1)
        ray_local.kill(pool.workers[0].actor)
        with pytest.raises(RolloutError, match="not restarted: the pool sent weights"):
            pool.generate(PROMPTS, SPEC)
        assert pool.restarts == [0]
    finally:
        pool.shutdown()


def test_a_worker_lost_during_the_trainers_weight_sync_is_restarted(ray_local, tiny_model_dir):
    """The loop's sync (rl/loops/grpo.py): trainer rank 0 reports a dead worker; the pool restarts it, and the
    restart re-sends the weights (on_restart) instead of the run ending."""
    from rl.loops.grpo import sync_weights
    from rl.trainer_group import TrainerError

    resent = []
    pool = RolloutPool(tiny_model_dir, num_workers=1, backend="hf", dtype="float32", max_model_len=64,
                       num_cpus_per_worker=0.5, cpu_threads=1, max_restarts=1,
                       on_restart=lambda p: resent.append(p.workers[0].info.pid))

    class Trainers:
        calls = 0

        def sync_weights(self, step):
            self.calls += 1
            if self.calls > 1:
                return 1.0
            ray_local.kill(pool.workers[0].actor)  # dies while rank 0 sends it the weights
            lost = RolloutError("rollout worker 0 died during reload weights", pool.workers[0].info, step, "died")
            raise TrainerError("trainer call 'weight sync' failed: RolloutError: ...") from lost

    try:
        before = tokens(pool.generate(PROMPTS, SPEC))
        old_pid = pool.workers[0].info.pid
        assert sync_weights(Trainers(), pool, 3) == 0.0
        assert pool.restarts == [1] and resent == [pool.workers[0].info.pid] != [old_pid]
        assert tokens(pool.generate(PROMPTS, SPEC)) == before
        with pytest.raises(TrainerError):  # past rollout.max_restarts the sync error ends the run
            sync_weights(Trainers(), pool, 4)
    finally:
        pool.shutdown()
