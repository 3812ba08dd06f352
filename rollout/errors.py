"""The one error type the rollout side raises to the trainer."""

from __future__ import annotations

from rollout.types import WorkerInfo


class RolloutError(RuntimeError):
    """A rollout worker failed, hung or could not start.

    The message is one line a user can act on: which worker (index, node, pid),
    what it was doing (its last request, e.g. ``sync_weights step 3``) and, when
    known, the setting to change (e.g. ``rollout.memory_fraction``).
    """

    def __init__(self, message: str, worker: WorkerInfo | None = None, step: int | None = None,
                 kind: str | None = None):
        self.worker = worker
        self.step = step
        # "died" (the process is gone), "hung" (a deadline passed), "failed" (an exception inside it):
        # a died or hung worker may be restarted (RolloutPool max_restarts), a failure would repeat
        self.kind = kind
        super().__init__(message)

    def __reduce__(self):  # keep the extra fields when Ray pickles the error
        return (type(self), (self.args[0], self.worker, self.step, self.kind))


def describe_worker(worker: WorkerInfo) -> str:
    """``rollout worker 1 (node 10.0.0.3, pid 4242; last request: generate 16 prompts ...)``."""
    last = f"; last request: {worker.last_request}" if worker.last_request else ""
    return f"rollout worker {worker.index} (node {worker.node}, pid {worker.pid}{last})"


def death_cause(err: BaseException) -> str:
    """One short line for Ray's report of a dead actor (its process ended: killed, out of memory, crashed)."""
    text = " ".join(str(err).split())
    if "OutOfMemoryError" in type(err).__name__ or "running low on memory" in text:
        return "Ray killed it: the node ran low on memory"
    detail = text.split("Worker exit detail:", 1)[1].strip() if "Worker exit detail:" in text else ""
    detail = detail.split(". ")[0].rstrip(".")
    if "killed" in text.lower() and "ray.kill" in text:
        return "it was killed by ray.kill"
    if detail:
        return f"its process ended unexpectedly ({detail}: killed, e.g. by the OOM killer, or crashed)"
    return text.split(". ")[0][:200] or type(err).__name__
