"""Weight sync trainer -> rollout workers: one interface (base.WeightSync), three backends."""

from __future__ import annotations

import torch

from rollout.errors import RolloutError
from rollout.remote import WorkerHandle
from rollout.weight_sync.base import SyncTarget, WeightSync, resolve_backend


def backend_classes() -> dict[str, type[WeightSync]]:
    """The implemented backends by name (``rollout.sync_backend`` also accepts ``auto``)."""
    from rollout.weight_sync.cpu_shm import SharedMemorySync
    from rollout.weight_sync.cuda_ipc import CudaIpcSync
    from rollout.weight_sync.nccl import NcclBroadcastSync

    return {b.name: b for b in (SharedMemorySync, NcclBroadcastSync, CudaIpcSync)}


def make_weight_sync(name: str, workers: list[WorkerHandle], *, bucket_mb: float, timeout_s: float,
                     dtype: torch.dtype | None = None) -> WeightSync:
    """The backend called ``name`` (already resolved from ``auto``) for these workers."""
    classes = backend_classes()
    if name not in classes:
        raise RolloutError(f"rollout.sync_backend={name!r} is not one of {', '.join(classes)} (resolve 'auto' first)")
    return classes[name](workers, bucket_bytes=int(bucket_mb * 2**20), timeout_s=timeout_s, dtype=dtype)


__all__ = ["SyncTarget", "WeightSync", "backend_classes", "make_weight_sync", "resolve_backend"]
