"""Name -> function registries so a recipe can pick pieces by name.

``algorithm.advantage: grpo`` looks up ``ADVANTAGES["grpo"]``, and so on. A
duplicate name is a programming error and raises at import time.
"""

from __future__ import annotations

from collections.abc import Callable

ADVANTAGES: dict[str, Callable] = {}
POLICY_LOSSES: dict[str, Callable] = {}
CREDITS: dict[str, type] = {}
PREFERENCE_LOSSES: dict[str, Callable] = {}


def _register(table: dict, kind: str, name: str):
    def deco(obj):
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice")
        table[name] = obj
        return obj

    return deco


def register_advantage(name: str):
    return _register(ADVANTAGES, "advantage estimator", name)


def register_policy_loss(name: str):
    return _register(POLICY_LOSSES, "policy loss", name)


def register_credit(name: str):
    return _register(CREDITS, "credit module", name)


def register_preference_loss(name: str):
    return _register(PREFERENCE_LOSSES, "preference loss", name)
