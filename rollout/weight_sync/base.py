"""One interface for moving the trainer's weights into every rollout worker.

Backends (``rollout.sync_backend``):

- ``cpu_shm``: safetensors bucket files in /dev/shm, reloaded in place by each worker
  (``model_runner.reload_weights``); workers on other nodes get the files' bytes.
- ``nccl``: disaggregated GPUs; one NCCL broadcast per bucket from the trainer
  (rank 0) to all workers, on a communicator outside torch.distributed.
- ``cuda_ipc``: colocated GPU; each worker maps the trainer's bucket through a CUDA
  IPC handle, no copy through the host.
- ``auto``: ``cpu_shm`` without CUDA, ``cuda_ipc`` when rollout workers take a
  fraction of a GPU (they share the trainer's), ``nccl`` otherwise.

Every backend sends buckets of at most ``bucket_bytes`` (``rollout.sync_bucket_mb``)
and bounds every remote call with ``timeout_s`` (``rollout.sync_timeout_s``), so a
dead or hung worker becomes a ``RolloutError`` naming the worker and the step.

Where it runs: in trainer rank 0 (rl/trainer_rank.py), which reads the weights bucket by bucket
and sends them straight to the workers; the driver only hands over a ``SyncTarget`` (the
workers' handles and settings). ``RolloutPool.sync_weights`` runs the same backends in the
calling process, for callers that hold the weights themselves (tests, benchmarks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import ray
import torch

from rollout.errors import RolloutError
from rollout.remote import WorkerHandle, wait_all

TIMEOUT_KEY = "rollout.sync_timeout_s"


class WeightSync(ABC):
    name: ClassVar[str]

    def __init__(self, workers: list[WorkerHandle], *, bucket_bytes: int, timeout_s: float,
                 dtype: torch.dtype | None = None):
        if bucket_bytes <= 0:
            raise RolloutError(f"rollout.sync_bucket_mb must be positive (got {bucket_bytes} bytes)")
        if timeout_s <= 0:
            raise RolloutError(f"{TIMEOUT_KEY} must be positive (got {timeout_s})")
        self.workers = workers
        self.bucket_bytes = bucket_bytes
        self.timeout_s = timeout_s
        self.dtype = dtype  # floating tensors are cast to the engine dtype while being packed

    def setup(self) -> None:  # noqa: B027 - optional hook, most backends need no set-up
        """Once, after the workers started (e.g. build the NCCL group)."""

    @abstractmethod
    def push(self, buckets: Iterable[list[tuple[str, torch.Tensor]]], step: int) -> int:
        """Send the (already validated) tensors to every worker, cast to ``self.dtype``; return how many.

        ``buckets`` yields one bucket at a time (``packing.bucket_named_tensors``, or the trainer's
        gathered buckets under ZeRO-3); a bucket's tensors may be freed once the next is requested,
        so a backend finishes with each bucket before it asks for the next."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what ``setup`` built."""

    # ---- helpers shared by the backends

    def _call_all(self, method: str, what: str, step: int, args: tuple = ()) -> list[Any]:
        """Call ``method(*args)`` on every worker and wait, bounded by the timeout."""
        return self._wait(self._submit_all(method, what, step, args), what, step)

    def _submit_all(self, method: str, what: str, step: int, args: tuple = (),
                    args_for: Any = None) -> list[tuple]:
        """Start ``method`` on every worker without waiting: [(WorkerInfo, ObjectRef)].

        ``args_for(position, worker) -> tuple`` gives per-worker arguments instead of ``args``.
        """
        calls = []
        for i, w in enumerate(self.workers):
            w.info.last_request = f"{what} (sync_weights step {step})"
            call_args = args_for(i, w) if args_for is not None else args
            calls.append((w.info, getattr(w.actor, method).remote(*call_args)))
        return calls

    def _wait(self, calls: list[tuple], what: str, step: int) -> list[Any]:
        return wait_all(calls, what=f"{what} (sync_weights step {step})", timeout_s=self.timeout_s,
                        timeout_key=TIMEOUT_KEY, step=step)


@dataclass
class SyncTarget:
    """Everything a process needs to build the weight-sync backend to the pool's workers (picklable)."""

    backend: str  # resolved: cpu_shm | nccl | cuda_ipc
    workers: list[WorkerHandle]
    bucket_bytes: int
    timeout_s: float
    dtype: torch.dtype | None
    expected_shapes: dict[str, tuple[int, ...]] | None  # the rollout model's names and shapes
    tied: bool  # tied embeddings: lm_head.weight is not sent

    def build(self) -> WeightSync:
        from rollout.weight_sync import make_weight_sync

        return make_weight_sync(self.backend, self.workers, bucket_mb=self.bucket_bytes / 2**20,
                                timeout_s=self.timeout_s, dtype=self.dtype)


def resolve_backend(name: str, *, cuda_available: bool, num_gpus_per_worker: float) -> str:
    """The backend ``auto`` stands for, or ``name`` itself after checking it is implemented (a recipe's value
    was checked against its declared choices already; this is for callers of the pool's API)."""
    from rollout.weight_sync import backend_classes

    if name != "auto":
        if name not in backend_classes():
            raise RolloutError(f"rollout.sync_backend={name!r} is not one of auto, {', '.join(backend_classes())}")
        return name
    if not cuda_available or num_gpus_per_worker <= 0:
        return "cpu_shm"
    return "cuda_ipc" if num_gpus_per_worker < 1 else "nccl"


def require_cuda(backend: str) -> torch.device:
    """The trainer's current CUDA device, or a clear refusal to start."""
    if not torch.cuda.is_available():
        raise RolloutError(f"rollout.sync_backend={backend} needs CUDA in the trainer process, and none is "
                           f"available: use rollout.sync_backend=cpu_shm (or auto) on CPU machines")
    return torch.device("cuda", torch.cuda.current_device())


def local_node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def run_with_timeout(fn: Any, timeout_s: float, what: str, step: int | None = None) -> Any:
    """Run ``fn`` in a daemon thread; a ``RolloutError`` if it outlives ``timeout_s``.

    For trainer-side collectives (an NCCL broadcast blocks forever when a peer is gone,
    TRL#6797): the thread cannot be killed, so after a timeout the communicator is
    unusable and the pool must be rebuilt, but the trainer gets an error, not a hang.
    """
    import threading

    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"tokencredit-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RolloutError(f"trainer side of weight sync did not finish {what} within {timeout_s:g} s "
                           f"(a rollout worker left the group or hangs; {TIMEOUT_KEY})", None, step)
    if "error" in box:
        raise box["error"]
    return box.get("result")
