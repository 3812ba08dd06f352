"""CPU weight sync: safetensors bucket files in /dev/shm, reloaded in place by every worker.

vLLM's CPU backend repacks linear weights after loading, so a plain
``model.load_weights`` fails on the second load; ``model_runner.reload_weights``
restores the checkpoint layout, loads, and repacks again. It must see all buckets
in one call (a layer is repacked once all its weights arrived), so the trainer
writes every bucket first and then asks each worker for one reload over the files.
Files, not tensors, cross the process boundary: vLLM's RPC serialisers mangle
tensors, and a path in shared memory costs nothing to send. Workers on another
node than the trainer receive the files' bytes through Ray's object store instead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable

import ray
import torch
from safetensors.torch import save_file

from rollout.remote import WorkerHandle
from rollout.weight_sync.base import WeightSync, local_node_id
from rollout.weight_sync.packing import bucket_named_tensors


class SharedMemorySync(WeightSync):
    name = "cpu_shm"

    def __init__(self, workers: list[WorkerHandle], *, bucket_bytes: int, timeout_s: float,
                 shm_dir: str = "/dev/shm"):
        super().__init__(workers, bucket_bytes=bucket_bytes, timeout_s=timeout_s)
        self.folder = tempfile.mkdtemp(prefix="tokencredit-sync-", dir=shm_dir if os.path.isdir(shm_dir) else None)

    def write_buckets(self, named: Iterable[tuple[str, torch.Tensor]], step: int) -> tuple[list[str], int]:
        """Write the tensors as bucket files; (paths, number of tensors)."""
        paths, count = [], 0
        for i, bucket in enumerate(bucket_named_tensors(named, self.bucket_bytes)):
            path = os.path.join(self.folder, f"step{step}-bucket{i:04d}.safetensors")
            save_file({name: t.cpu() for name, t in bucket}, path)
            paths.append(path)
            count += len(bucket)
        return paths, count

    def push(self, named: Iterable[tuple[str, torch.Tensor]], step: int) -> int:
        paths: list[str] = []
        try:
            paths, count = self.write_buckets(named, step)
            here = local_node_id()
            blobs = None
            if any(w.node_id != here for w in self.workers):
                blobs = ray.put([open(p, "rb").read() for p in paths])  # once, shared by all remote workers

            what = "reload weights from shared memory"
            local = [w for w in self.workers if w.node_id == here]
            remote = [w for w in self.workers if w.node_id != here]
            calls = []
            for group, method, source in ((local, "load_weights_from_files", paths),
                                          (remote, "load_weights_from_bytes", blobs)):
                for w in group:
                    w.info.last_request = f"{what} (sync_weights step {step})"
                    calls.append((w.info, getattr(w.actor, method).remote(source, self.timeout_s)))
            self._wait(calls, what, step)
            return count
        finally:
            for p in paths:
                if os.path.exists(p):
                    os.unlink(p)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
