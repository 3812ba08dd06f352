"""``help_field``: a dataclass field with a one-line help (TRL style), shared by every config schema."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def help_field(default: Any, help: str) -> Any:  # noqa: A002 - mirrors dataclasses' metadata style
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})
