"""Plain data passed between the trainer side and the rollout workers (no vLLM imports here)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SamplingSpec:
    n: int = 8  # completions per prompt (the GRPO group size)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 = off
    max_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    logprobs: bool = True  # return the sampler's logprob of each sampled token
    # Reseed the engine's sampler before this call (worker i uses seed + i). Same seed + same
    # prompts + same weights = same samples, which is what makes a resumed run repeat the
    # uninterrupted one. vLLM's per-request seeds are GPU-only on CPU builds, so this reseeds
    # the worker process's torch generator instead. None = keep the running RNG stream.
    seed: int | None = None


@dataclass
class Completion:
    prompt_index: int  # position of its prompt in the request
    token_ids: list[int]  # generated tokens (EOS included when it stopped on EOS)
    logprobs: list[float] | None  # sampler logprob of each token in token_ids
    text: str
    finish_reason: str  # "stop" or "length"


@dataclass
class WorkerInfo:
    """Identity of a rollout worker, for error messages."""

    index: int
    node: str = "?"
    pid: int = -1
    last_request: str = ""


@dataclass
class EngineSpec:
    """Settings of one rollout engine (what RolloutPool passes to each worker actor)."""

    model_path: str
    backend: str = "vllm"  # vllm | hf
    dtype: str = "bfloat16"
    max_model_len: int = 512
    memory_fraction: float = 0.25  # vLLM gpu_memory_utilization; on CPU the share of the NUMA node's RAM
    seed: int = 0  # engine seed; worker i uses seed + i so workers do not draw the same samples
    logprobs_mode: str = "processed_logprobs"  # logprobs after temperature / top-k / top-p (what was sampled from)
    enforce_eager: bool = True  # CUDA graphs / torch.compile off (CPU: compile buys little, costs start-up)
    max_num_seqs: int = 512  # sequences decoded together (CPU default 256 halves the batch of 64 prompts x 8)
    hf_batch_prompts: int = 64  # hf backend: prompts per generate() call (x n rows)
    extra: dict = field(default_factory=dict)  # passed through to vllm.LLM(...) as keyword arguments
