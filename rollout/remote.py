"""Waiting on Ray calls to rollout workers, with a deadline that turns hangs into errors.

Every remote call the pool or a weight-sync backend makes goes through ``wait_all``:
a dead actor, an exception inside it, or a call that outlives its deadline becomes a
``RolloutError`` that names the worker (index, node, pid, last request) and the
setting that bounds the wait. ``ray.wait`` over all calls reports the first failure
at once instead of queueing behind a slower, healthy worker.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from rollout.errors import RolloutError, death_cause, describe_worker
from rollout.types import WorkerInfo

log = logging.getLogger(__name__)

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
             timeout_key: str, step: int | None = None,
             retry: Callable[[int, RolloutError], tuple[WorkerInfo, ray.ObjectRef] | None] | None = None,
             log_every_s: float | None = None) -> list[Any]:
    """Results of ``calls`` in order, or a ``RolloutError`` for the first that fails or outlives ``timeout_s``.

    ``retry(i, error)``: for a worker that died or hung, may return a replacement call for ``calls[i]``
    (a restarted worker, rollout/pool.py); it gets a fresh deadline, the other calls keep theirs.
    Returning None, or an exception inside a worker, raises the error. With ``log_every_s`` (start-up
    waits), a log line names what is still awaited each time that long passes without all results."""
    if not calls:
        return []
    calls = list(calls)
    index_of = {ref: i for i, (_, ref) in enumerate(calls)}
    deadline = {ref: time.monotonic() + timeout_s for _, ref in calls}
    results: list[Any] = [None] * len(calls)
    pending = [ref for _, ref in calls]
    start = last_log = time.monotonic()
    global received_bytes

    def fail_or_retry(ref, err: RolloutError) -> None:
        i = index_of.pop(ref)
        pending.remove(ref)
        replacement = retry(i, err) if retry is not None and err.kind in ("died", "hung") else None
        if replacement is None:
            raise err
        calls[i] = replacement
        new = replacement[1]
        index_of[new], deadline[new] = i, time.monotonic() + timeout_s
        pending.append(new)

    while pending:
        now = time.monotonic()
        first = min(pending, key=deadline.__getitem__)
        if deadline[first] <= now:
            stuck = calls[index_of[first]][0]
            fail_or_retry(first, RolloutError(
                f"{describe_worker(stuck)} did not finish {what} within {timeout_s:g} s "
                f"({len(pending)} call(s) still pending; a hang or a too-short {timeout_key})", stuck, step, "hung"))
            continue
        wait_s = deadline[first] - now
        if log_every_s:
            wait_s = min(wait_s, max(last_log + log_every_s - now, 0.0))
        ready, _ = ray.wait(pending, num_returns=1, timeout=wait_s)
        if not ready:
            if log_every_s and time.monotonic() - last_log >= log_every_s:
                last_log = time.monotonic()
                waiting = "; ".join(describe_worker(calls[index_of[r]][0]) for r in pending[:3])
                more = f" and {len(pending) - 3} more" if len(pending) > 3 else ""
                log.info("still waiting for %s (%.0f s of %s=%g): %s%s", what, last_log - start, timeout_key,
                         timeout_s, waiting, more)
            continue
        ref = ready[0]
        info = calls[index_of[ref]][0]
        try:
            results[index_of[ref]] = ray.get(ref, timeout=max(deadline[ref] - time.monotonic(), 0.0))
            pending.remove(ref)
        except GetTimeoutError:  # rare: ready but not yet fetched before the deadline
            fail_or_retry(ref, RolloutError(f"{describe_worker(info)} did not return {what} within {timeout_s:g} s "
                                            f"({timeout_key})", info, step, "hung"))
        except RayActorError as err:
            fail_or_retry(ref, RolloutError(f"{describe_worker(info)} died during {what}: {death_cause(err)}", info,
                                            step, "died"))
        except RayTaskError as err:
            raise RolloutError(f"{describe_worker(info)} failed during {what}: {_cause(err)}", info, step,
                               "failed") from err
    received_bytes += sum(len(pickle.dumps(r)) for r in results)
    return results
