"""The one error type the rollout side raises to the trainer."""

from __future__ import annotations

from rollout.types import WorkerInfo


class RolloutError(RuntimeError):
    """A rollout worker failed, hung or could not start.

    The message is one line a user can act on: which worker (index, node, pid),
    what it was doing (its last request, e.g. ``sync_weights step 3``) and, when
    known, the setting to change (e.g. ``rollout.memory_fraction``).
    """

    def __init__(self, message: str, worker: WorkerInfo | None = None, step: int | None = None):
        self.worker = worker
        self.step = step
        super().__init__(message)

    def __reduce__(self):  # keep the extra fields when Ray pickles the error
        return (type(self), (self.args[0], self.worker, self.step))


def describe_worker(worker: WorkerInfo) -> str:
    """``rollout worker 1 (node 10.0.0.3, pid 4242; last request: generate 16 prompts ...)``."""
    last = f"; last request: {worker.last_request}" if worker.last_request else ""
    return f"rollout worker {worker.index} (node {worker.node}, pid {worker.pid}{last})"
