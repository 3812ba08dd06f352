"""Generation side: vLLM (or transformers) engines in Ray actors, and trainer -> engine weight sync.

Never imports ``rl`` (dependencies point one way: rl -> rollout).
"""

from rollout.errors import RolloutError
from rollout.pool import RolloutPool
from rollout.types import Completion, EngineSpec, SamplingSpec, WorkerInfo

__all__ = ["Completion", "EngineSpec", "RolloutError", "RolloutPool", "SamplingSpec", "WorkerInfo"]
