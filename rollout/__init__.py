"""Generation side: vLLM (or transformers) engines in Ray actors, and trainer -> engine weight sync.

Never imports ``rl`` (dependencies point one way: rl -> rollout).
"""

import os

from rollout.errors import RolloutError
from rollout.types import Completion, EngineSpec, SamplingSpec, WorkerInfo

# What the user set, read before anything imports TRL: TRL sets VLLM_LOGGING_LEVEL=ERROR process-wide on
# import (trl/_compat.py), which would empty the rollout workers' log files (rollout/vllm_adapter.py)
USER_VLLM_LOGGING_LEVEL = os.environ.get("VLLM_LOGGING_LEVEL")

__all__ = ["Completion", "EngineSpec", "RolloutError", "RolloutPool", "SamplingSpec", "WorkerInfo"]


def __getattr__(name: str):
    # RolloutPool imports Ray and torch (seconds): only when it is asked for, so that light modules
    # (rollout.logs, rollout.types, used by every `tokencredit` command) import fast
    if name == "RolloutPool":
        from rollout.pool import RolloutPool

        return RolloutPool
    raise AttributeError(f"module 'rollout' has no attribute {name!r}")
