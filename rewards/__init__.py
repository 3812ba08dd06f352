"""Reward functions: the protocol, the loader, the weighted scorer and the built-ins.

Protocol (TRL's): ``fn(prompts: list[str], completions: list[str], **columns) ->
list[float | None]``, sync or ``async def``; ``None`` means "does not apply to this sample".
``columns`` holds every dataset column (one value per sample), ``completion_ids`` and
``trainer_state`` ({"step", "total_steps"}). This package never imports ``rl``.
"""

from rewards.errors import RewardError, RewardLoadError
from rewards.loader import load_reward_fn
from rewards.registry import BUILTIN_REWARDS, builtin_rewards, register_reward
from rewards.scorer import RewardResult, RewardScorer

__all__ = [
    "BUILTIN_REWARDS",
    "RewardError",
    "RewardLoadError",
    "RewardResult",
    "RewardScorer",
    "builtin_rewards",
    "load_reward_fn",
    "register_reward",
]
