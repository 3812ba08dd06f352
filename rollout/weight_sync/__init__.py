"""Weight sync trainer -> rollout workers: one interface (base.WeightSync), three backends."""

from __future__ import annotations

import torch

from rollout.remote import WorkerHandle
from rollout.weight_sync.base import SyncTarget, WeightSync, resolve_backend


def make_weight_sync(name: str, workers: list[WorkerHandle], *, bucket_mb: float, timeout_s: float,
                     dtype: torch.dtype | None = None) -> WeightSync:
    """The backend called ``name`` (already resolved from ``auto``) for these workers."""
    from rollout.weight_sync.cpu_shm import SharedMemorySync
    from rollout.weight_sync.cuda_ipc import CudaIpcSync
    from rollout.weight_sync.nccl import NcclBroadcastSync

    backends = {b.name: b for b in (SharedMemorySync, NcclBroadcastSync, CudaIpcSync)}
    return backends[name](workers, bucket_bytes=int(bucket_mb * 2**20), timeout_s=timeout_s, dtype=dtype)


__all__ = ["SyncTarget", "WeightSync", "make_weight_sync", "resolve_backend"]
