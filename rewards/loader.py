"""Turn a recipe's reward spec into a callable.

Accepted specs:
- a built-in name: ``math_answer`` (see rewards.registry);
- ``pkg.module:function`` (or TRL's dotted ``pkg.module.function``), imported normally;
- ``path/to/file.py:function``: a relative path is looked up in ``base_dir`` (the recipe's
  folder) first, then in the current directory. The file is imported once per absolute path
  under a private module name; its folder is NOT added to sys.path.
``function`` may be dotted (``Class.method``). Every error names the spec.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from rewards.errors import RewardLoadError
from rewards.registry import builtin_rewards


def load_reward_fn(spec: str, base_dir: str | os.PathLike | None = None) -> Callable:
    if not isinstance(spec, str) or not spec.strip():
        raise RewardLoadError(f"reward function spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if ":" not in spec:
        builtins = builtin_rewards()
        if spec in builtins:
            return builtins[spec]
        if "." in spec and not spec.endswith(".py"):
            module_name, _, attr = spec.rpartition(".")
            return _attribute(spec, _import_module(spec, module_name), attr)
        raise RewardLoadError(
            f"reward function {spec!r} is not a built-in (one of {sorted(builtins)}); "
            "write pkg.module:function or path/to/file.py:function for your own"
        )
    target, _, attr = spec.rpartition(":")  # rpartition keeps a Windows drive letter in target
    if not target or not attr:
        raise RewardLoadError(
            f"reward function {spec!r}: expected module:function or path/to/file.py:function"
        )
    is_file = target.endswith(".py") or "/" in target or os.sep in target
    module = _import_file(spec, target, base_dir) if is_file else _import_module(spec, target)
    return _attribute(spec, module, attr)


def _import_module(spec: str, module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises while importing
        raise RewardLoadError(
            f"reward function {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc


def _resolve(spec: str, target: str, base_dir: str | os.PathLike | None) -> Path:
    path = Path(target).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = ([Path(base_dir) / path] if base_dir is not None else []) + [Path.cwd() / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise RewardLoadError(f"reward function {spec!r}: file {target!r} not found (tried {tried})")


def _import_file(spec: str, target: str, base_dir: str | os.PathLike | None) -> ModuleType:
    path = _resolve(spec, target, base_dir)
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"tokencredit_reward_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise RewardLoadError(f"reward function {spec!r}: cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    # Registered before running it, as a normal import does (pickling and dataclasses need it).
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise RewardLoadError(
            f"reward function {spec!r}: importing {path} failed: {type(exc).__name__}: {exc}"
        ) from exc
    return module


def _attribute(spec: str, module: ModuleType, attr: str) -> Callable:
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
            where = (
                module.__name__ if module.__name__ in spec else getattr(module, "__file__", module.__name__)
            )
            raise RewardLoadError(
                f"reward function {spec!r}: {where} has no attribute {attr!r} "
                f"(callables defined there: {defined[:20]})"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise RewardLoadError(f"reward function {spec!r}: {attr!r} is a {type(obj).__name__}, not callable")
    return obj
