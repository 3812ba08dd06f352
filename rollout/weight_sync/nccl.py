"""GPU weight sync for disaggregated rollout GPUs: NCCL broadcast, bucket by bucket.

The trainer is rank 0 of a communicator built with vLLM's ``StatelessProcessGroup`` +
``PyNcclCommunicator`` (outside torch.distributed, so it does not clash with the
trainer's or vLLM's own groups; vllm#5477); worker i is rank i + 1 (one GPU per
engine: tensor parallelism inside an engine is not supported by this backend).
Per bucket: the trainer packs the tensors into one flat buffer, starts every
worker's receive call (which allocates the buffer, joins the broadcast, and loads
the views with ``model.load_weights``), then broadcasts from a thread whose wait is
bounded by the timeout, since a broadcast with a dead peer never returns.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import astuple
from functools import partial

import ray
import torch

from rollout.remote import WorkerHandle
from rollout.weight_sync.base import WeightSync, require_cuda, run_with_timeout
from rollout.weight_sync.packing import pack_bucket


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class NcclBroadcastSync(WeightSync):
    name = "nccl"

    def __init__(self, workers: list[WorkerHandle], *, bucket_bytes: int, timeout_s: float,
                 dtype: torch.dtype | None = None):
        super().__init__(workers, bucket_bytes=bucket_bytes, timeout_s=timeout_s, dtype=dtype)
        self.device = require_cuda(self.name)
        self.comm = None

    def setup(self) -> None:
        from rollout.vllm_adapter import create_nccl_communicator

        host = ray.util.get_node_ip_address()
        port = _free_port(host)
        world = len(self.workers) + 1
        joins = self._submit_all("init_weight_group", "join the NCCL weight-sync group", 0,
                                 args_for=lambda i, w: (host, port, i + 1, world, self.timeout_s))
        self.comm = run_with_timeout(
            lambda: create_nccl_communicator(host, port, 0, world, self.device, int(self.timeout_s)),
            self.timeout_s, "creating the NCCL weight-sync group")
        self._wait(joins, "join the NCCL weight-sync group", 0)

    def _broadcast(self, flat: torch.Tensor) -> None:
        torch.cuda.set_device(self.device)
        self.comm.broadcast(flat, src=0, stream=torch.cuda.current_stream())
        torch.cuda.current_stream().synchronize()  # a dead peer shows up here, inside the bounded thread

    def push(self, buckets: Iterable[list[tuple[str, torch.Tensor]]], step: int) -> int:
        if self.comm is None:
            self.setup()
        count = 0
        for i, bucket in enumerate(buckets):
            flat, metas = pack_bucket(bucket, device=self.device, dtype=self.dtype)
            rows = [astuple(m) for m in metas]
            what = f"receive NCCL bucket {i}"
            calls = self._submit_all("load_broadcast_bucket", what, step, args=(rows, flat.numel(), self.timeout_s))
            run_with_timeout(partial(self._broadcast, flat), self.timeout_s, f"broadcast of bucket {i}", step)
            self._wait(calls, what, step)
            count += len(bucket)
        self._call_all("finish_weight_sync", "finish weight sync", step)
        return count

    def close(self) -> None:
        self.comm = None
