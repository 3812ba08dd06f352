"""CPU weight sync: safetensors bucket files in /dev/shm, reloaded in place by every worker.

vLLM's CPU backend repacks linear weights after loading, so a plain
``model.load_weights`` fails on the second load; ``model_runner.reload_weights``
restores the checkpoint layout, loads, and repacks again. It must see all buckets
in one call (a layer is repacked once all its weights arrived), so the trainer
writes every bucket first and then asks each worker for one reload over the files.
Files, not tensors, cross the process boundary: vLLM's RPC serialisers mangle
tensors, and a path in shared memory costs nothing to send. Workers on another
node than the trainer receive the files' bytes through Ray's object store instead.

The bucket files stay in /dev/shm between syncs (one engine-dtype copy of the model)
and are rewritten in place, which avoids re-faulting their pages at every step;
``close()`` (``RolloutPool.shutdown``) removes them.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterable

import ray
import torch

from rollout.cleanup import sync_folder_prefix
from rollout.remote import WorkerHandle
from rollout.weight_sync.base import WeightSync, local_node_id
from rollout.weight_sync.safetensors_file import write_bucket_file


class SharedMemorySync(WeightSync):
    name = "cpu_shm"

    def __init__(self, workers: list[WorkerHandle], *, bucket_bytes: int, timeout_s: float,
                 dtype: torch.dtype | None = None, shm_dir: str = "/dev/shm"):
        super().__init__(workers, bucket_bytes=bucket_bytes, timeout_s=timeout_s, dtype=dtype)
        # the pid in the name lets a later run remove the folder if this process is killed (rollout/cleanup.py)
        self.folder = tempfile.mkdtemp(prefix=sync_folder_prefix(), dir=shm_dir if os.path.isdir(shm_dir) else None)

    def write_buckets(self, buckets: Iterable[list[tuple[str, torch.Tensor]]]) -> tuple[list[str], int]:
        """Write each bucket as a file as it arrives (cast to the engine dtype); (paths, number of tensors)."""
        paths, count = [], 0
        for i, bucket in enumerate(buckets):
            paths.append(os.path.join(self.folder, f"bucket{i:04d}.safetensors"))
            write_bucket_file(paths[-1], bucket, self.dtype)
            count += len(bucket)
        for stale in set(glob.glob(os.path.join(self.folder, "bucket*.safetensors"))) - set(paths):
            os.unlink(stale)  # left by an earlier, larger sync
        return paths, count

    def push(self, buckets: Iterable[list[tuple[str, torch.Tensor]]], step: int) -> int:
        paths, count = self.write_buckets(buckets)
        here = local_node_id()
        blobs = None
        if any(w.node_id != here for w in self.workers):
            blobs = ray.put([open(p, "rb").read() for p in paths])  # once, shared by all remote workers
        what = "reload weights from shared memory"
        calls = []
        for w in self.workers:
            local = w.node_id == here
            w.info.last_request = f"{what} (sync_weights step {step})"
            method = w.actor.load_weights_from_files if local else w.actor.load_weights_from_bytes
            calls.append((w.info, method.remote(paths if local else blobs, self.timeout_s)))
        self._wait(calls, what, step)
        return count

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
