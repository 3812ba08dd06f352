"""The Ray actor that owns one rollout engine (vLLM or transformers) on its node.

``RolloutPool`` creates it with ``ray.remote(RolloutWorker).options(...)``; the
constructor only records settings so that a start-up failure surfaces from
``start()`` as an ordinary, explained error rather than as a dead actor.
"""

from __future__ import annotations

import os
import socket
import tempfile

from rollout.errors import RolloutError
from rollout.logs import capture_actor_output
from rollout.types import Completion, EngineSpec, SamplingSpec

# rollout.backend -> (module, engine class): the engines this worker can run, imported only when started
ENGINES = {"vllm": ("rollout.vllm_adapter", "VLLMEngine"), "hf": ("rollout.hf_backend", "HFEngine")}


def check_backend(backend: str) -> None:
    if backend not in ENGINES:
        raise RolloutError(f"rollout.backend={backend!r} is not one of {', '.join(ENGINES)}")


def _last_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


class RolloutWorker:
    def __init__(self, spec: EngineSpec, index: int):
        capture_actor_output(f"rollout-{index}")  # engine output -> the run folder's logs/ (rollout/logs.py)
        self.spec = spec
        self.index = index
        self.engine = None

    def identity(self) -> dict:
        import ray

        return {"node": ray.util.get_node_ip_address() or socket.gethostname(), "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}

    def start(self) -> dict:
        """Build the engine; a failure raises RolloutError with one line naming the setting to change."""
        from rollout.vllm_adapter import check_model_path  # cheap: vLLM itself is imported lazily

        reason = check_model_path(self.spec.model_path)  # before paying for the engine's imports
        if reason:
            raise RolloutError(f"{self.spec.backend} engine could not start: {reason}")
        check_backend(self.spec.backend)
        try:
            import importlib

            module, cls = ENGINES[self.spec.backend]
            self.engine = getattr(importlib.import_module(module), cls)(self.spec, self.index)
        except Exception as exc:  # explained here, where the engine's own message is at hand
            reason = None
            if self.spec.backend != "hf":
                from rollout.vllm_adapter import explain_startup_error

                reason = explain_startup_error(exc, self.spec)
            raise RolloutError(f"{self.spec.backend} engine could not start: "
                               f"{reason or _last_line(exc)}") from None
        return self.identity()

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSpec,
                 first_index: int) -> list[list[Completion]]:
        self.generate_calls = getattr(self, "generate_calls", 0) + 1
        fault = f"kill_worker:{self.index}:{self.generate_calls}"  # test hook (rl/faults.py): die mid-request
        if fault in os.environ.get("TOKENCREDIT_FAULT", "").split(","):
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return self.engine.generate(prompt_ids, sampling, first_index)

    # ---- weight sync (called by rollout.weight_sync backends)

    def load_weights_from_files(self, paths: list[str], timeout_s: float) -> int:
        return self.engine.reload_from_files(paths, timeout_s)

    def load_weights_from_bytes(self, blobs: list[bytes], timeout_s: float) -> int:
        """For a worker on another node than the trainer: the shared-memory files arrive as bytes."""
        from rollout.cleanup import sync_folder_prefix

        folder = tempfile.mkdtemp(prefix=sync_folder_prefix(), dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        paths = []
        try:
            for i, blob in enumerate(blobs):
                paths.append(os.path.join(folder, f"bucket{i:04d}.safetensors"))
                with open(paths[-1], "wb") as f:
                    f.write(blob)
            return self.engine.reload_from_files(paths, timeout_s)
        finally:
            for p in paths:
                os.unlink(p)
            os.rmdir(folder)

    def init_weight_group(self, host: str, port: int, rank: int, world_size: int, timeout_s: float) -> None:
        self._require_vllm("nccl")
        self.engine.init_weight_group(host, port, rank, world_size, timeout_s)

    def load_broadcast_bucket(self, metas: list[tuple], nbytes: int, timeout_s: float) -> int:
        return self.engine.load_broadcast_bucket(metas, nbytes, timeout_s)

    def load_ipc_bucket(self, handle: bytes, metas: list[tuple], device_uuid: str, timeout_s: float) -> int:
        self._require_vllm("cuda_ipc")
        return self.engine.load_ipc_bucket(handle, metas, device_uuid, timeout_s)

    def finish_weight_sync(self) -> None:
        self.engine.finish_weight_sync()

    def _require_vllm(self, sync_backend: str) -> None:
        if self.spec.backend == "hf":
            raise RolloutError(f"rollout.sync_backend={sync_backend} needs rollout.backend=vllm "
                               f"(the hf backend syncs through cpu_shm)")

    def shutdown(self) -> None:
        """Stop the engine and end the process cleanly (a killed process leaves Intel OpenMP's
        /dev/shm/__KMP_REGISTERED_LIB_<pid> file behind)."""
        import ray

        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
        ray.actor.exit_actor()
