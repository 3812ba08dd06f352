"""GPU weight sync for rollout engines colocated with the trainer: CUDA IPC handles.

Per bucket, the trainer packs tensors into one flat buffer on its GPU and sends a
CUDA IPC handle (``torch.multiprocessing.reductions.reduce_tensor``); each worker
maps the same memory on the GPU whose UUID matches the trainer's (device indices
differ between processes under CUDA_VISIBLE_DEVICES), loads views of it with
``model.load_weights`` and synchronises before answering, so the buffer can be
freed. Only one bucket is alive at a time: peak extra memory is one bucket.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import astuple

import torch

from rollout.remote import WorkerHandle
from rollout.weight_sync.base import WeightSync, require_cuda
from rollout.weight_sync.packing import pack_bucket


def ipc_handle(flat: torch.Tensor) -> bytes:
    """Pickled (rebuild function, args) of a CUDA tensor, for another process on the same GPU."""
    from torch.multiprocessing.reductions import reduce_tensor

    if not flat.is_cuda:
        raise ValueError("CUDA IPC needs a CUDA tensor")
    return pickle.dumps(reduce_tensor(flat))


class CudaIpcSync(WeightSync):
    name = "cuda_ipc"

    def __init__(self, workers: list[WorkerHandle], *, bucket_bytes: int, timeout_s: float,
                 dtype: torch.dtype | None = None):
        super().__init__(workers, bucket_bytes=bucket_bytes, timeout_s=timeout_s, dtype=dtype)
        self.device = require_cuda(self.name)
        self.device_uuid = str(torch.cuda.get_device_properties(self.device).uuid)

    def push(self, buckets: Iterable[list[tuple[str, torch.Tensor]]], step: int) -> int:
        count = 0
        for i, bucket in enumerate(buckets):
            flat, metas = pack_bucket(bucket, device=self.device, dtype=self.dtype)
            torch.cuda.current_stream(self.device).synchronize()  # the copy must land before others read it
            handle, rows = ipc_handle(flat), [astuple(m) for m in metas]
            self._call_all("load_ipc_bucket", f"load CUDA IPC bucket {i}", step,
                           args=(handle, rows, self.device_uuid, self.timeout_s))
            del flat  # every worker has answered: nobody reads it any more
            count += len(bucket)
        self._call_all("finish_weight_sync", "finish weight sync", step)
        return count
