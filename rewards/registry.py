"""Name -> built-in reward function, so a recipe can write ``name: math_answer``.

Built-ins register themselves with ``@register_reward`` when ``rewards.builtins`` is
imported; ``builtin_rewards()`` does that import on first use, so importing this module
stays cheap and free of import cycles.
"""

from __future__ import annotations

from collections.abc import Callable

BUILTIN_REWARDS: dict[str, Callable] = {}

# A function carrying this attribute (True) bounds its own run time with SIGALRM-based
# timeouts (math-verify does), which only work on the main thread. The scorer then calls
# it on the caller's thread when that is the main thread, instead of in a worker thread.
SELF_TIMED_ATTR = "__reward_self_timed__"


def register_reward(name: str, *, self_timed: bool = False):
    """Register a built-in reward under ``name``; a duplicate name is a programming error."""

    def deco(fn: Callable) -> Callable:
        if name in BUILTIN_REWARDS:
            raise ValueError(f"reward function {name!r} is registered twice")
        setattr(fn, SELF_TIMED_ATTR, self_timed)
        BUILTIN_REWARDS[name] = fn
        return fn

    return deco


def builtin_rewards() -> dict[str, Callable]:
    """All built-in reward functions by name (imports the built-ins on first call)."""
    import rewards.builtins  # noqa: F401  (registers on import)

    return BUILTIN_REWARDS
