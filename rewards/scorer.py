"""Score a batch of completions with several weighted reward functions.

    total[i] = sum over functions f that applied to sample i of weight_f * f(...)[i]

A function "applies" unless it returned None for that sample (TRL's convention). A sample
no function applied to gets 0.0 and is counted in ``reward/no_function_applied``. Each
function is called once per batch, as ``fn(prompts, completions, **columns,
completion_ids=..., trainer_state=...)`` plus its recipe kwargs (bound with partial).

Bad output stops the run with a RewardError naming the function spec, the sample and the
value (or the exception, or the timeout and ``rewards.timeout_s``). With on_error="skip" a
bad sample instead scores 0.0 for that function (the whole batch when the call itself
failed: exception, timeout, wrong length, not a list) and is counted in
``reward/<label>/errors`` and ``reward/skipped_errors``.

Metric labels: the built-in name, else the function's name; repeats get "_2", "_3", ...
Functions run one after another (math-verify's parser is not known to be thread-safe).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import reprlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rewards.errors import RewardError, RewardLoadError
from rewards.invoke import CallTimeout, call_reward
from rewards.loader import load_reward_fn
from rewards.outputs import BadOutput, coerce_outputs
from rewards.registry import SELF_TIMED_ATTR, builtin_rewards

logger = logging.getLogger(__name__)

RESERVED = ("prompts", "completions", "completion_ids", "trainer_state")
ON_ERROR = ("raise", "skip")


@dataclass
class RewardResult:
    total: list[float]
    per_function: dict[str, list[float | None]]
    metrics: dict[str, float]
    errors: int = 0


@dataclass
class _Function:
    label: str
    spec: str
    weight: float
    call: Callable  # kwargs already bound
    kwargs: dict[str, Any]
    self_timed: bool


class RewardScorer:
    def __init__(
        self,
        functions: list[Any],
        on_error: str = "raise",
        timeout_s: float = 60.0,
        base_dir: str | None = None,
    ) -> None:
        if on_error not in ON_ERROR:
            raise RewardLoadError(f"rewards.on_error={on_error!r} is not one of {ON_ERROR}")
        if not functions:
            raise RewardLoadError("rewards.functions is empty: list at least one reward function")
        self.on_error = on_error
        self.timeout_s = float(timeout_s)
        self.functions: list[_Function] = []
        for index, entry in enumerate(functions):
            self.functions.append(self._build(index, entry, base_dir))

    @property
    def labels(self) -> list[str]:
        return [f.label for f in self.functions]

    def _build(self, index: int, entry: Any, base_dir: str | None) -> _Function:
        key = f"rewards.functions[{index}]"
        name, weight, kwargs = _fields(entry, key)
        fn = name if callable(name) else load_reward_fn(name, base_dir)
        spec = name if isinstance(name, str) else getattr(fn, "__qualname__", repr(fn))
        reserved = sorted(set(kwargs) & set(RESERVED))
        if reserved:
            raise RewardLoadError(f"{key} ({spec!r}): kwargs {reserved} are passed by the scorer itself")
        _check_kwargs(fn, kwargs, key, spec, is_builtin=builtin_rewards().get(spec) is fn)
        label = _unique(_label(spec, fn), {f.label for f in self.functions})
        call = functools.partial(fn, **kwargs) if kwargs else fn
        return _Function(label, spec, weight, call, kwargs, bool(getattr(fn, SELF_TIMED_ATTR, False)))

    def score(
        self,
        prompts: list[str],
        completions: list[str],
        columns: dict[str, list],
        completion_ids: list[list[int]],
        trainer_state: dict,
    ) -> RewardResult:
        n = len(completions)
        _check_batch(prompts, completions, columns, completion_ids)
        call_kwargs = {**columns, "completion_ids": completion_ids, "trainer_state": trainer_state}
        per_function: dict[str, list[float | None]] = {}
        errors: dict[str, int] = {}
        for f in self.functions:
            clash = sorted(set(f.kwargs) & set(columns))
            if clash:
                raise RewardError(
                    f"reward function {f.spec!r}: its kwargs {clash} collide with dataset columns of the same name"
                )
            per_function[f.label], errors[f.label] = self._run(f, prompts, completions, call_kwargs)
        total, unscored = _weighted_total(self.functions, per_function, n)
        metrics = _metrics(per_function, errors, total, unscored, n)
        return RewardResult(total, per_function, metrics, sum(errors.values()))

    def _run(
        self, f: _Function, prompts: list[str], completions: list[str], kwargs: dict
    ) -> tuple[list, int]:
        n = len(completions)
        inline = f.self_timed and threading.current_thread() is threading.main_thread()
        try:
            raw = call_reward(f.call, (prompts, completions), kwargs, self.timeout_s, inline)
            values, problems = coerce_outputs(raw, n)
        except CallTimeout as exc:
            return self._fail(f, n, f"did not finish within rewards.timeout_s={self.timeout_s:g} s", exc)
        except BadOutput as exc:
            return self._fail(f, n, str(exc), exc)
        except Exception as exc:
            return self._fail(f, n, f"raised {type(exc).__name__}: {exc}{_hint(exc)}", exc)
        if problems and self.on_error == "raise":
            index, problem = next(iter(problems.items()))
            raise RewardError(
                f"reward function {f.spec!r} returned {problem} for sample {index} of {n} "
                f"(completion {reprlib.repr(completions[index])}); rewards must be finite numbers "
                f"or None (rewards.on_error=skip scores such samples 0 and counts them)"
            )
        if problems:
            logger.warning(
                "reward function %r: skipped %d bad values (first: sample %d, %s)",
                f.spec,
                len(problems),
                *next(iter(problems.items())),
            )
        return values, len(problems)

    def _fail(self, f: _Function, n: int, what: str, exc: Exception) -> tuple[list, int]:
        message = f"reward function {f.spec!r} {what} (batch of {n} samples)"
        if self.on_error == "raise":
            raise RewardError(message) from exc
        logger.warning("%s; scoring the batch 0 for it (rewards.on_error=skip)", message)
        return [0.0] * n, n


def _fields(entry: Any, key: str) -> tuple[Any, float, dict]:
    """name, weight, kwargs from a dict, a RewardFnConfig or an OmegaConf node."""
    get = entry.get if isinstance(entry, Mapping) else functools.partial(getattr, entry)
    name, weight, kwargs = get("name", None), get("weight", 1.0), get("kwargs", None) or {}
    if not (callable(name) or (isinstance(name, str) and name.strip())):
        raise RewardLoadError(f"{key}.name must be a reward spec string, got {name!r}")
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise RewardLoadError(f"{key}.weight must be a finite number, got {weight!r}")
    if not isinstance(kwargs, Mapping):
        raise RewardLoadError(f"{key}.kwargs must be a mapping, got {type(kwargs).__name__}")
    return name, float(weight), dict(kwargs)


def _check_kwargs(fn: Callable, kwargs: dict, key: str, spec: str, is_builtin: bool) -> None:
    """Unknown kwargs are errors: for built-ins even though their **kwargs would swallow them
    (a typo like ``budget_int`` would otherwise be silently ignored)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some C callables have no signature
        return
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    unknown = sorted(set(kwargs) - named)
    if unknown and (is_builtin or not has_var_kw):
        accepted = sorted(named - set(RESERVED))
        raise RewardLoadError(f"{key} ({spec!r}): unknown kwargs {unknown}; it accepts {accepted}")


def _label(spec: str, fn: Callable) -> str:
    if ":" not in spec and "." not in spec:
        return spec
    return getattr(fn, "__name__", spec.rpartition(":")[2].rpartition(".")[2])


def _unique(label: str, taken: set[str]) -> str:
    candidate, k = label, 2
    while candidate in taken:
        candidate, k = f"{label}_{k}", k + 1
    return candidate


def _hint(exc: Exception) -> str:
    if isinstance(exc, TypeError) and "unexpected keyword argument" in str(exc):
        return (
            " (reward functions receive every dataset column plus completion_ids and "
            "trainer_state as keyword arguments: add **kwargs to the signature)"
        )
    return ""


def _check_batch(prompts: list, completions: list, columns: dict, completion_ids: list) -> None:
    n = len(completions)
    if len(prompts) != n:
        raise RewardError(
            f"reward scoring: {len(prompts)} prompts for {n} completions (pass one prompt per completion)"
        )
    if completion_ids is not None and len(completion_ids) != n:
        raise RewardError(f"reward scoring: {len(completion_ids)} completion_ids for {n} completions")
    for name, values in columns.items():
        if name in RESERVED:
            raise RewardError(
                f"reward scoring: dataset column {name!r} clashes with a reserved argument {RESERVED}"
            )
        if len(values) != n:
            raise RewardError(f"reward scoring: column {name!r} has {len(values)} values for {n} completions")


def _weighted_total(functions: list[_Function], per_function: dict, n: int) -> tuple[list[float], int]:
    total, unscored = [], 0
    for i in range(n):
        applied = [
            (f.weight, per_function[f.label][i]) for f in functions if per_function[f.label][i] is not None
        ]
        unscored += not applied
        total.append(sum(w * v for w, v in applied))
    return [float(t) for t in total], unscored


def _metrics(per_function: dict, errors: dict, total: list[float], unscored: int, n: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for label, values in per_function.items():
        applied = [v for v in values if v is not None]
        metrics[f"reward/{label}/applied_frac"] = len(applied) / n if n else 0.0
        if applied:
            metrics[f"reward/{label}/mean"] = sum(applied) / len(applied)
        metrics[f"reward/{label}/errors"] = float(errors[label])
    if total:
        metrics["reward/total/mean"] = sum(total) / len(total)
    metrics["reward/no_function_applied"] = float(unscored)
    metrics["reward/skipped_errors"] = float(sum(errors.values()))
    return metrics
