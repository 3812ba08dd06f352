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
