"""Call one reward function on one batch, sync or async, under a wall-clock timeout.

- sync: in a daemon worker thread joined with ``timeout_s``; or on the caller's thread when
  ``inline`` (self-timed built-ins on the main thread, see registry.SELF_TIMED_ATTR) or when
  ``timeout_s <= 0`` (no timeout).
- async (``async def``): ``asyncio.run`` on a worker thread (so it works whether or not the
  caller already runs an event loop), cancelled after ``timeout_s``; the thread join, one
  second later, catches a coroutine that blocks without awaiting.
Python cannot kill a thread: a timed-out sync call keeps running in the background until it
returns. The scorer turns CallTimeout into an error (or a skipped batch), so the run does not hang.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any

_ASYNC_GRACE_S = 1.0


class CallTimeout(Exception):
    """The reward call did not finish within the timeout."""


def is_async(fn: Callable) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    # An instance whose class defines ``async def __call__`` counts too.
    return inspect.iscoroutinefunction(fn) or (
        not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )


async def _bounded(make_coroutine: Callable[[], Any], timeout_s: float) -> Any:
    task = asyncio.ensure_future(make_coroutine())
    done, _ = await asyncio.wait({task}, timeout=timeout_s if timeout_s > 0 else None)
    if not done:
        task.cancel()
        raise CallTimeout
    return task.result()


def _in_thread(target: Callable[[], Any], timeout_s: float | None) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = target()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=run, name="reward-fn", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise CallTimeout
    if "error" in box:
        raise box["error"]
    return box["value"]


def call_reward(fn: Callable, args: tuple, kwargs: dict, timeout_s: float, inline: bool = False) -> Any:
    """``fn(*args, **kwargs)``; raises CallTimeout after ``timeout_s``, or what ``fn`` raised."""
    if is_async(fn):
        join = timeout_s + _ASYNC_GRACE_S if timeout_s > 0 else None
        return _in_thread(lambda: asyncio.run(_bounded(lambda: fn(*args, **kwargs), timeout_s)), join)
    if inline or timeout_s <= 0:
        return fn(*args, **kwargs)
    return _in_thread(lambda: fn(*args, **kwargs), timeout_s)
