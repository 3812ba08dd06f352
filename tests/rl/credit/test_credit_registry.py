"""Credit modules are registered by name and their configs reject bad recipe values by key."""

from __future__ import annotations

import pytest

from rl.algorithms.registry import CREDITS
from rl.credit import load_all
from rl.credit.base import CreditModule
from rl.credit.config import D3SConfig, THRConfig, TWConfig


def test_load_all_registers_the_three_modules() -> None:
    load_all()
    for name, cfg in (("d3s", D3SConfig()), ("thr", THRConfig()), ("tw", TWConfig())):
        module = CREDITS[name](cfg)
        assert isinstance(module, CreditModule) and module.name == name
        assert module.needs <= {"entropy", "hidden", "policy"}


def test_recipe_override_with_a_bad_value_names_the_key() -> None:
    from rl.config import load_config

    with pytest.raises(ValueError, match="algorithm.thr.vocab"):
        load_config(None, ["algorithm.thr.vocab=all"])
    with pytest.raises(ValueError, match="algorithm.tw.positions"):
        load_config(None, ["algorithm.tw.positions=row"])


def test_every_credit_config_field_has_a_help_line() -> None:
    from dataclasses import fields

    from rl.credit.config import RMTConfig

    for cls in (D3SConfig, THRConfig, TWConfig, RMTConfig):
        for f in fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
