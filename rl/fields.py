"""``help_field``: a dataclass field with a one-line help (TRL style) and its valid values, shared by every
config schema; ``check_fields`` checks a whole tree of such dataclasses.

A field's valid values are declared once, beside the field:

* choices: a ``Literal[...]`` type (OmegaConf checks it while a recipe is merged; ``check_fields`` again for
  dataclasses built in code), or ``choices=`` a tuple / a function returning the names (for registries that
  grow while the program runs, e.g. ``algorithm.advantage``);
* ranges: ``ge`` / ``gt`` / ``le`` / ``lt``; for a list, every item. ``allow=(-1,)`` admits sentinel values
  outside the range (``rollout.top_k``: -1 or >= 1). ``None`` is valid exactly when the type is optional;
* sizes: ``min_len`` / ``max_len`` (characters of a string, items of a list; strings are stripped first).
  Items of a ``list[str]`` are always non-empty strings;
* ``pattern=`` a regular expression the whole string matches; ``placeholders=("prompt",)``: each ``{name}``
  appears in the string exactly once;
* ``any_value=True``: every value of the type is valid (free text, names, paths checked where they are
  used). Booleans need nothing. A test (tests/rl/test_config_fields.py) walks every schema dataclass and
  fails for a field that declares none of these, so a new field cannot be added without its check.

Relations between fields (``rollout.max_tokens < rollout.max_model_len``) are not field metadata: they live
in rl/config.py ``validate`` (or a section's own ``check()``), each message naming its keys.

    steps: int = help_field(20, "rollout/update iterations", ge=1)
    dtype: Literal["bfloat16", "float32"] = help_field("bfloat16", "trainer/rollout dtype")
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import field
from functools import cache
from typing import Any, Literal

RULES = ("ge", "gt", "le", "lt", "allow", "choices", "min_len", "max_len", "pattern", "placeholders", "any_value")


class FieldError(ValueError):
    """One field's value is not valid; the message is one line: ``key: value ... (valid: ...)``."""


def help_field(default: Any, help: str, **rules: Any) -> Any:  # noqa: A002 - mirrors dataclasses' metadata style
    unknown = sorted(set(rules) - set(RULES))
    if unknown:
        raise TypeError(f"help_field: unknown rule(s) {unknown}; known: {list(RULES)}")
    meta = {"help": help, **{k: v for k, v in rules.items() if v is not None}}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------- types


@cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def unwrap(hint: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"config fields hold one type or None, not {hint}")
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


def item_type(hint: Any) -> Any | None:
    """The item type of ``list[X]``, else None."""
    return typing.get_args(hint)[0] if typing.get_origin(hint) is list else None


def literal_choices(hint: Any) -> tuple | None:
    base, _ = unwrap(hint)
    base = item_type(base) or base
    return typing.get_args(base) if typing.get_origin(base) is Literal else None


def choices_of(meta: dict, hint: Any) -> tuple | None:
    """The valid names of a field: its Literal type's, or its ``choices=`` (called when a function)."""
    lit = literal_choices(hint)
    if lit is not None:
        return lit
    c = meta.get("choices")
    if c is None:
        return None
    return tuple(c() if callable(c) else c)


def type_name(hint: Any) -> str:
    base, optional = unwrap(hint)
    item = item_type(base)
    if typing.get_origin(base) is Literal:
        name = "str" if all(isinstance(a, str) for a in typing.get_args(base)) else "int"
    elif item is not None:
        name = f"list[{type_name(item)}]"
    elif typing.get_origin(base) is dict:
        name = "dict"
    else:
        name = getattr(base, "__name__", str(base))
    return f"{name} | None" if optional else name


def declares_values(meta: dict, hint: Any) -> bool:
    """Whether the field says which values are valid (a test requires it of every field)."""
    base, _ = unwrap(hint)
    item = item_type(base)
    if base is bool or (item is not None and dataclasses.is_dataclass(item)):  # the items' fields are checked
        return True
    return literal_choices(hint) is not None or any(k in meta for k in RULES)


# ----------------------------------------------------------------------------- descriptions


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() and abs(x) < 1e15 else repr(x)


def range_text(meta: dict) -> str | None:
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if lo and hi:
        text = f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    elif lo:
        text = f"{'>=' if lo[0] == '[' else '>'} {_num(lo[1])}"
    elif hi:
        text = f"{'<=' if hi[0] == ']' else '<'} {_num(hi[1])}"
    else:
        return None
    allow = meta.get("allow")
    return f"{' or '.join(_num(a) for a in allow)} or {text}" if allow else text


def valid_text(meta: dict, hint: Any, resolve_choices: bool = True) -> str:
    """What ``tokencredit config-keys`` shows: ``one of [...]``, ``>= 1``, ``in (0, 1]``, ``any`` ..."""
    parts = []
    choices = choices_of(meta, hint) if resolve_choices or literal_choices(hint) else None
    if choices is not None:
        parts.append(f"one of {list(choices)}")
    elif "choices" in meta:
        parts.append("a registered name")
    base, optional = unwrap(hint)
    item = item_type(base)
    rng = range_text(meta)
    if rng:
        parts.append(("each " if item is not None else "") + rng)
    lo, hi = meta.get("min_len"), meta.get("max_len")
    if lo is not None or hi is not None:
        what = "items" if item is not None else "characters"
        if lo == hi:
            parts.append(f"exactly {lo} {what}")
        elif hi is None:
            parts.append("non-empty" if lo == 1 else f"at least {lo} {what}")
        else:
            parts.append(f"{lo or 0}..{hi} {what}")
    if "pattern" in meta:
        parts.append(f"matches {meta['pattern']}")
    if "placeholders" in meta:
        parts.append("contains " + ", ".join("{" + p + "}" for p in meta["placeholders"]) + " once")
    if item is not None and dataclasses.is_dataclass(item):
        parts.append("a list of entries, each with the keys below")
    if not parts:
        parts.append("true | false" if base is bool else "any")
    if optional:
        parts.append("or null")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- checks


def check_value(key: str, value: Any, meta: dict, hint: Any) -> None:
    """Raise ``FieldError`` (one line naming ``key``, the value and the valid values) unless ``value`` fits."""
    base, optional = unwrap(hint)
    if value is None:
        if optional:
            return
        raise FieldError(f"{key}: null is not allowed (valid: {valid_text(meta, hint)})")
    item = item_type(base)
    items: Sequence[Any] = value if item is not None and isinstance(value, (list, tuple)) else ()
    for length_of in ([value] if isinstance(value, (str, list, tuple)) else []):
        n = len(length_of.strip()) if isinstance(length_of, str) else len(length_of)
        lo, hi = meta.get("min_len"), meta.get("max_len")
        if n == 0 and lo:
            raise FieldError(f"{key}: {value!r} is empty (valid: {valid_text(meta, hint)})")
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            raise FieldError(f"{key}: {value!r} has {n} {'items' if item is not None else 'characters'} "
                             f"(valid: {valid_text(meta, hint)})")
    choices = choices_of(meta, hint)
    for i, v in (enumerate(items) if item is not None else [(None, value)]):
        where = key if i is None else f"{key}[{i}]"
        if choices is not None and v not in choices:
            raise FieldError(f"{where}: {v!r} is not one of {list(choices)}")
        if item is not None and isinstance(v, str) and not v.strip():
            raise FieldError(f"{where}: {v!r}: list items must be non-empty strings")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not _in_range(v, meta):
            raise FieldError(f"{where}: {_num(v)} is out of range (valid: {range_text(meta)})")
    if isinstance(value, str):
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value):
            raise FieldError(f"{key}: {value!r} does not match {meta['pattern']}")
        for name in meta.get("placeholders", ()):
            if value.count("{" + name + "}") != 1:
                raise FieldError(f"{key}: {value!r} must contain {{{name}}} exactly once")


def _in_range(v: float, meta: dict) -> bool:
    if v in meta.get("allow", ()):
        return True
    ok = True  # written so that NaN fails every bound
    if "ge" in meta:
        ok = ok and v >= meta["ge"]
    if "gt" in meta:
        ok = ok and v > meta["gt"]
    if "le" in meta:
        ok = ok and v <= meta["le"]
    if "lt" in meta:
        ok = ok and v < meta["lt"]
    return bool(ok)


def check_fields(obj: Any, prefix: str = "") -> None:
    """Check every field of the dataclass ``obj`` and of the dataclasses inside it (sections, lists of them)
    against its declared valid values. ``prefix`` is the recipe key of ``obj`` (``"algorithm.d3s"``)."""
    hints = type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_fields(value, key)
            continue
        if isinstance(value, list) and value and all(dataclasses.is_dataclass(v) for v in value):
            for i, v in enumerate(value):
                check_fields(v, f"{key}[{i}]")
            continue
        check_value(key, value, f.metadata, hints[f.name])


def walk_fields(cls: type, prefix: str = "") -> list[tuple[str, dataclasses.Field, Any]]:
    """(key, field, type) of every leaf of the dataclass ``cls``; a list of dataclasses is entered as
    ``key[0]``. Used by ``tokencredit config-keys`` and the test that sweeps every field."""
    rows = []
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints[f.name]
        base, _ = unwrap(hint)
        item = item_type(base)
        if dataclasses.is_dataclass(base):
            rows += walk_fields(base, key)
        elif item is not None and dataclasses.is_dataclass(item):
            rows.append((key, f, hint))
            rows += walk_fields(item, f"{key}[0]")
        else:
            rows.append((key, f, hint))
    return rows

