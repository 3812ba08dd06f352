"""wait_all: a worker that hangs, raises or dies becomes a RolloutError naming it, never a hang."""

from __future__ import annotations

import os
import time

import pytest

from rollout.errors import RolloutError
from rollout.remote import wait_all
from rollout.types import WorkerInfo


@pytest.fixture(scope="module")
def Probe(ray_local):
    @ray_local.remote(num_cpus=0)
    class Probe:
        def echo(self, x):
            return x

        def sleep(self, s):
            time.sleep(s)

        def fail(self):
            raise ValueError("boom")

        def explained(self):
            raise RolloutError("vllm engine could not start: lower rollout.memory_fraction")

        def die(self):
            os._exit(1)

    return Probe


def _info(i):
    return WorkerInfo(index=i, node="10.0.0.9", pid=123, last_request="generate prompts 0..3")


def test_results_come_back_in_call_order(Probe):
    a, b = Probe.remote(), Probe.remote()
    calls = [(_info(0), a.echo.remote("first")), (_info(1), b.echo.remote("second"))]
    assert wait_all(calls, what="echo", timeout_s=60, timeout_key="k") == ["first", "second"]


def test_a_hung_worker_times_out_with_its_identity(ray_local, Probe):
    p = Probe.remote()
    with pytest.raises(RolloutError) as err:
        wait_all([(_info(2), p.sleep.remote(60))], what="generate", timeout_s=1,
                 timeout_key="rollout.generate_timeout_s", step=5)
    msg = str(err.value)
    for part in ("rollout worker 2", "10.0.0.9", "pid 123", "generate prompts 0..3", "within 1 s",
                 "rollout.generate_timeout_s"):
        assert part in msg
    assert err.value.worker.index == 2 and err.value.step == 5
    ray_local.kill(p)


def test_an_exception_inside_a_worker_is_reported_with_its_cause(Probe):
    p = Probe.remote()
    with pytest.raises(RolloutError, match=r"rollout worker 0 .* failed during generate: ValueError: boom"):
        wait_all([(_info(0), p.fail.remote())], what="generate", timeout_s=60, timeout_key="k")
    with pytest.raises(RolloutError, match=r"failed during start-up: vllm engine could not start: lower rollout"):
        wait_all([(_info(0), p.explained.remote())], what="start-up", timeout_s=60, timeout_key="k")


def test_a_dead_worker_is_reported_at_once_not_after_the_timeout(Probe):
    slow, dying = Probe.remote(), Probe.remote()
    calls = [(_info(0), slow.sleep.remote(60)), (_info(1), dying.die.remote())]
    with pytest.raises(RolloutError, match=r"rollout worker 1 .* died during generate") as err:
        wait_all(calls, what="generate", timeout_s=300, timeout_key="k")
    assert err.value.worker.index == 1


def test_a_start_up_wait_says_what_it_waits_for_before_the_deadline(Probe, caplog):
    import logging

    p = Probe.remote()
    with caplog.at_level(logging.INFO, logger="rollout.remote"):
        wait_all([(_info(3), p.sleep.remote(1.5))], what="engine start-up", timeout_s=60,
                 timeout_key="rollout.start_timeout_s", log_every_s=0.4)
    assert "still waiting for engine start-up" in caplog.text and "rollout worker 3" in caplog.text
    assert "rollout.start_timeout_s=60" in caplog.text


def test_a_dead_worker_may_be_replaced_by_the_retry_callback(ray_local, Probe):
    dying, spare = Probe.remote(), Probe.remote()
    seen = []

    def retry(i, err):
        seen.append((i, err.kind))
        return _info(i), spare.echo.remote("again")

    calls = [(_info(0), dying.die.remote())]
    assert wait_all(calls, what="generate", timeout_s=60, timeout_key="k", retry=retry) == ["again"]
    assert seen == [(0, "died")]
    p = Probe.remote()  # an exception inside a worker is not retried: it would happen again
    with pytest.raises(RolloutError, match="failed during generate") as err:
        wait_all([(_info(0), p.fail.remote())], what="generate", timeout_s=60, timeout_key="k", retry=retry)
    assert err.value.kind == "failed" and len(seen) == 1
