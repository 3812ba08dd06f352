"""Built-in reward functions; importing this package registers them by name."""

from rewards.builtins import countdown, format, length_budget, math_answer, multichoice, next_token, overlong  # noqa: F401
