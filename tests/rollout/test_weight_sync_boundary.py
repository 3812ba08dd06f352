"""The weight-sync backends at their boundary: choice of backend, refusals, timeouts, wire formats.

The GPU backends cannot run here (no CUDA); what can be checked on CPU is that they
refuse to start with a message saying what to use instead, and that what they send
survives the trip (metadata rows, IPC handle guard).
"""

from __future__ import annotations

import os
import time
from dataclasses import astuple

import pytest
import torch

from rollout.errors import RolloutError
from rollout.remote import WorkerHandle
from rollout.types import WorkerInfo
from rollout.weight_sync import make_weight_sync, resolve_backend
from rollout.weight_sync.base import run_with_timeout
from rollout.weight_sync.cuda_ipc import CudaIpcSync, ipc_handle
from rollout.weight_sync.nccl import NcclBroadcastSync
from rollout.weight_sync.packing import bucket_named_tensors, pack_bucket, unpack_bucket

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")


@pytest.mark.parametrize("cuda, gpus, want", [
    (False, 0, "cpu_shm"), (False, 1, "cpu_shm"), (True, 0, "cpu_shm"), (True, 0.5, "cuda_ipc"), (True, 1, "nccl"),
])
def test_auto_backend(cuda, gpus, want):
    assert resolve_backend("auto", cuda_available=cuda, num_gpus_per_worker=gpus) == want


def test_explicit_and_unknown_backends():
    assert resolve_backend("nccl", cuda_available=False, num_gpus_per_worker=0) == "nccl"
    with pytest.raises(RolloutError, match="rollout.sync_backend='gloo'"):
        resolve_backend("gloo", cuda_available=False, num_gpus_per_worker=0)


@no_cuda
@pytest.mark.parametrize("cls", [NcclBroadcastSync, CudaIpcSync])
def test_gpu_backends_refuse_to_start_without_cuda(cls):
    with pytest.raises(RolloutError, match=rf"sync_backend={cls.name} needs CUDA.*cpu_shm"):
        cls([], bucket_bytes=1 << 20, timeout_s=10)


def test_bucket_and_timeout_must_be_positive():
    with pytest.raises(RolloutError, match="sync_bucket_mb"):
        make_weight_sync("cpu_shm", [], bucket_mb=0, timeout_s=10)
    with pytest.raises(RolloutError, match="sync_timeout_s"):
        make_weight_sync("cpu_shm", [], bucket_mb=1, timeout_s=0)


def test_ipc_handle_needs_a_cuda_tensor():
    with pytest.raises(ValueError, match="CUDA tensor"):
        ipc_handle(torch.zeros(4, dtype=torch.uint8))


def test_metadata_rows_as_sent_over_rpc_rebuild_the_same_views():
    from rollout.vllm_adapter import _metas

    bucket = [("a", torch.randn(2, 3)), ("b", torch.arange(5, dtype=torch.int32))]
    flat, metas = pack_bucket(bucket)
    rows = [list(astuple(m)) for m in metas]  # what a msgpack round trip makes of tuples
    rows = [[n, d, list(s), o, b] for n, d, s, o, b in rows]
    for (name, got), (_, want) in zip(unpack_bucket(flat, _metas(rows)), bucket):
        assert torch.equal(got, want), name


def test_run_with_timeout_turns_a_hang_into_an_error():
    start = time.monotonic()
    with pytest.raises(RolloutError, match=r"broadcast of bucket 0 within 0.2 s.*rollout.sync_timeout_s") as info:
        run_with_timeout(lambda: time.sleep(30), 0.2, "broadcast of bucket 0", step=7)
    assert info.value.step == 7
    assert time.monotonic() - start < 25  # it did not wait for the sleeper (generous: not a speed test)


def test_run_with_timeout_passes_results_and_errors_through():
    assert run_with_timeout(lambda: 42, 5, "x") == 42
    with pytest.raises(KeyError, match="boom"):
        run_with_timeout(lambda: {}["boom"], 5, "x")


def test_cpu_shm_buckets_files_drops_stale_ones_and_cleans_up():
    sync = make_weight_sync("cpu_shm", [WorkerHandle(None, WorkerInfo(0))], bucket_mb=1, timeout_s=5)
    named = [("a", torch.zeros(300_000)), ("b", torch.zeros(10))]
    paths, count = sync.write_buckets(bucket_named_tensors(named, sync.bucket_bytes))
    assert count == 2 and len(paths) == 2  # 1.2 MB does not share a 1 MiB bucket
    fewer, _ = sync.write_buckets([[("b", torch.zeros(10))]])
    assert fewer == paths[:1] and not os.path.exists(paths[1])
    sync.close()
    assert not os.path.exists(paths[0])
