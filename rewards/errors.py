"""Errors of the reward layer. Every message names the reward function's spec string
(as written in the recipe) and, where one sample is at fault, that sample's index."""

from __future__ import annotations


class RewardError(RuntimeError):
    """A reward function raised, timed out, or returned output that is not a reward."""


class RewardLoadError(RewardError, ValueError):
    """A reward spec could not be turned into a callable (unknown name, file, module or attribute)."""
