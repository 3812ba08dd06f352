"""Waiting on Ray calls to rollout workers, with a deadline that turns hangs into errors.

Every remote call the pool or a weight-sync backend makes goes through ``wait_all``:
a dead actor, an exception inside it, or a call that outlives its deadline becomes a
``RolloutError`` that names the worker (index, node, pid, last request) and the
setting that bounds the wait. ``ray.wait`` over all calls reports the first failure
at once instead of queueing behind a slower, healthy worker.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from rollout.errors import RolloutError, describe_worker
from rollout.types import WorkerInfo

# Bytes of results received from workers by this process (pickled size): the driver logs it per
# step to show that nothing sized by the model comes back (completions are token-sized).
received_bytes = 0


@dataclass
class WorkerHandle:
    actor: Any  # ray.actor.ActorHandle of rollout.worker_actor.RolloutWorker
    info: WorkerInfo
    node_id: str = ""  # Ray node id, to tell which workers share the trainer's /dev/shm


def _cause(err: BaseException) -> str:
    """The innermost useful line of a Ray error (its traceback stays in the worker's log)."""
    cause = getattr(err, "cause", None)
    if isinstance(err, RayTaskError) and isinstance(cause, RolloutError):
        return str(cause)  # already explained inside the worker
    if isinstance(err, RayTaskError) and cause is not None:
        return f"{type(cause).__name__}: {cause}".strip().splitlines()[-1] if str(cause) else type(cause).__name__
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__


def wait_all(calls: list[tuple[WorkerInfo, ray.ObjectRef]], *, what: str, timeout_s: float,
             timeout_key: str, step: int | None = None) -> list[Any]:
    """Results of ``calls`` in order, or a ``RolloutError`` for the first that fails or outlives ``timeout_s``."""
    if not calls:
        return []
    index_of = {ref: i for i, (_, ref) in enumerate(calls)}
    results: list[Any] = [None] * len(calls)
    pending = [ref for _, ref in calls]
    deadline = time.monotonic() + timeout_s
    global received_bytes
    while pending:
        remaining = deadline - time.monotonic()
        ready, pending = ray.wait(pending, num_returns=1, timeout=max(remaining, 0.0))
        if not ready:
            stuck = calls[index_of[pending[0]]][0]
            raise RolloutError(
                f"{describe_worker(stuck)} did not finish {what} within {timeout_s:g} s "
                f"({len(pending)} call(s) still pending; a hang or a too-short {timeout_key})", stuck, step)
        ref = ready[0]
        info = calls[index_of[ref]][0]
        try:
            results[index_of[ref]] = ray.get(ref, timeout=max(deadline - time.monotonic(), 0.0))
        except GetTimeoutError as err:  # rare: ready but not yet fetched before the deadline
            raise RolloutError(f"{describe_worker(info)} did not return {what} within {timeout_s:g} s "
                               f"({timeout_key})", info, step) from err
        except RayActorError as err:
            raise RolloutError(f"{describe_worker(info)} died during {what}: {_cause(err)}", info, step) from err
        except RayTaskError as err:
            raise RolloutError(f"{describe_worker(info)} failed during {what}: {_cause(err)}", info, step) from err
    received_bytes += sum(len(pickle.dumps(r)) for r in results)
    return results
