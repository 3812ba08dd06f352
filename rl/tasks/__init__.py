"""Built-in generated tasks, selected with ``data.source: builtin:<name>``.

Each task module provides ``generate(task_cfg, split) -> list[dict]`` (rows with a
``prompt`` string, an ``answer`` string and the task's ``EXTRA_COLUMNS``) for the
splits "train" and "test", deterministic from ``data.task.seed`` and disjoint.
"""

from __future__ import annotations

from types import ModuleType

from rl.tasks import arithmetic, arithmetic_notes, countdown

TASKS: dict[str, ModuleType] = {"arithmetic": arithmetic, "arithmetic_notes": arithmetic_notes, "countdown": countdown}
SPLITS = ("train", "test")


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"data.source: unknown built-in task 'builtin:{name}'; choose one of "
                         f"{['builtin:' + t for t in sorted(TASKS)]}")
    return TASKS[name]


def check_task(name: str, task_cfg) -> None:
    """The task exists and its own relations between the data.task knobs hold (rl/config.py validate)."""
    check = getattr(get_task(name), "check", None)
    if check is not None:
        check(task_cfg)


def generate_task(name: str, task_cfg, split: str) -> list[dict]:
    """Rows of built-in task ``name`` for ``split``; raises naming the key on bad knobs."""
    return get_task(name).generate(task_cfg, split)


def task_columns(name: str) -> list[str]:
    """Extra columns (beyond prompt/answer) that the task's rows carry for reward functions."""
    return list(get_task(name).EXTRA_COLUMNS)
