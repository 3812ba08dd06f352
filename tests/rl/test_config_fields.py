"""Every schema field declares its valid values beside it, and a value outside them is refused in one line.

The sweep walks the dataclasses (``Config`` and everything mounted in it, and the ``critical_tokens:``
section) generically: a field added without a declaration fails ``test_every_field_declares_its_valid_values``,
and a declaration that is not enforced fails ``test_out_of_range_or_wrong_type_is_refused_naming_the_key``.
Free-form fields say so with ``any_value=True`` (rl/fields.py); they still get a wrong-typed value when their
type is not ``str``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from rl.config import Config, ConfigError, describe, load_config
from rl.critical_tokens import SECTION, CriticalTokensConfig, load_critical_config
from rl.fields import (
    check_fields,
    choices_of,
    declares_values,
    help_field,
    item_type,
    literal_choices,
    unwrap,
    walk_fields,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = {"name": "t", "rewards": {"functions": [{"name": "math_answer"}]}}
ROOTS = [(Config, ""), (CriticalTokensConfig, SECTION)]


def leaves():
    for cls, prefix in ROOTS:
        yield from walk_fields(cls, prefix)


def _out_of_range(meta: dict, is_int: bool) -> list:
    """Values just outside each declared bound (the bound itself for an open one)."""
    step = 1 if is_int else 0.5
    out = []
    if "ge" in meta:
        out.append(meta["ge"] - step)
    if "gt" in meta:
        out.append(meta["gt"])
    if "le" in meta:
        out.append(meta["le"] + step)
    if "lt" in meta:
        out.append(meta["lt"])
    return [v for v in out if v not in meta.get("allow", ())]


def bad_values(f: dataclasses.Field, hint) -> list:
    """Values the field must refuse: out of its choices / range / size / pattern, or of the wrong type."""
    meta = f.metadata
    base, _ = unwrap(hint)
    item = item_type(base)
    scalar = item or base
    bad: list = []
    if base is bool:
        bad.append("maybe")
    if literal_choices(hint) is not None or "choices" in meta:
        bad.append(["not_a_choice"] if item is not None else "not_a_choice")
    if scalar in (int, float):
        for v in _out_of_range(meta, scalar is int):
            bad.append([v] * max(1, meta.get("min_len", 1)) if item is not None else v)
        bad.append(["not_a_number"] if item is not None else "not_a_number")
    if meta.get("min_len"):
        bad.append([] if item is not None else "")
    if "max_len" in meta and item is not None:
        good = (meta.get("ge", meta.get("gt", 0)) + meta.get("le", meta.get("lt", 1))) / 2
        bad.append([good] * (meta["max_len"] + 1))
    if "pattern" in meta:
        bad.append("?? not a match")
    if "placeholders" in meta:
        bad.append("a template without its placeholders")
    if item is not None and dataclasses.is_dataclass(item) or typing.get_origin(base) is dict:
        bad.append(5)
    elif item is not None and not bad:
        bad.append(5)  # a list field given a scalar
    return bad


def recipe_with(key: str, value) -> dict:
    doc = copy.deepcopy(BASE)
    node = doc
    parts = key.split(".")
    for part in parts[:-1]:
        if part.endswith("[0]"):
            node = node.setdefault(part[:-3], [{}])[0]
        else:
            node = node.setdefault(part, {})
    node[parts[-1]] = value
    return doc


def refusal(tmp_path: Path, key: str, value) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe_with(key, value)))
    with pytest.raises(ConfigError) as e:
        (load_critical_config if key.startswith(SECTION + ".") else load_config)(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


def shown(value) -> str:
    v = value[0] if isinstance(value, list) and value else value
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


CASES = [(key, value) for key, f, hint in leaves() for value in bad_values(f, hint)]


def test_every_field_declares_its_valid_values():
    undeclared = [key for key, f, hint in leaves() if not declares_values(f.metadata, hint)]
    assert not undeclared, (f"fields without declared valid values: {undeclared}. Declare them beside the field "
                            "(Literal type, ge/gt/le/lt, min_len, ...) or say any_value=True (rl/fields.py)")


def test_the_sweep_has_a_bad_value_for_every_field_that_has_one():
    """Only str fields that accept any text have no invalid value; every other field is in the sweep."""
    swept = {key for key, _ in CASES}
    free = sorted(key for key, f, hint in leaves() if key not in swept)
    for key, f, hint in leaves():
        if key in free:
            assert f.metadata.get("any_value") and unwrap(hint)[0] is str, key
    assert len(swept) > 200, len(swept)


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v!r}" for k, v in CASES])
def test_out_of_range_or_wrong_type_is_refused_naming_the_key(tmp_path, key, value):
    msg = refusal(tmp_path, key, value)
    assert f": {key}" in msg, msg
    if shown(value) not in ("", "[]"):
        assert shown(value) in msg, msg


def test_the_issue_examples_name_key_value_range_and_file(tmp_path):
    for key, value, rng in [("trainer.steps", 0, ">= 1"), ("trainer.prompts_per_step", 0, ">= 1"),
                            ("rollout.temperature", -0.5, ">= 0"), ("trainer.lr", 0, "> 0"),
                            ("eval.every", -1, ">= 0"), ("checkpoint.keep_last", -1, ">= 0"),
                            ("rollout.generate_timeout_s", 0, "> 0"), ("rollout.sync_bucket_mb", 0, ">= 1"),
                            ("rollout.memory_fraction", 1.5, "in (0, 1]"), ("rollout.top_k", 0, "-1 or >= 1")]:
        msg = refusal(tmp_path, key, value)
        assert f": {key}: {value} is out of range (valid: {rng})" in msg, msg


def test_registry_choices_are_read_when_checked(tmp_path):
    from rl.algorithms.registry import ADVANTAGES

    msg = refusal(tmp_path, "algorithm.advantage", "ppo")
    assert all(name in msg for name in ADVANTAGES), msg


def test_an_undeclared_field_is_caught():
    @dataclasses.dataclass
    class New:
        declared: int = help_field(1, "x", ge=1)
        forgot: int = help_field(1, "y")
        free: str = help_field("", "z", any_value=True)

    hints = typing.get_type_hints(New)
    flags = {f.name: declares_values(f.metadata, hints[f.name]) for f in dataclasses.fields(New)}
    assert flags == {"declared": True, "forgot": False, "free": True}
    with pytest.raises(TypeError, match="unknown rule"):
        help_field(1, "typo", ge_=1)


def test_check_fields_also_checks_configs_built_in_code():
    from rl.config import TrainerConfig
    from rl.credit.config import TWConfig

    with pytest.raises(ValueError, match=r"^trainer\.lr: 0 is out of range \(valid: > 0\)$"):
        check_fields(TrainerConfig(lr=0.0), "trainer")
    with pytest.raises(ValueError, match=r"algorithm\.tw\.positions: 'rows' is not one of \['group', 'batch'\]"):
        TWConfig(positions="rows")


def test_config_keys_shows_type_valid_values_default_and_help():
    rows = {key: (kind, default, help_) for key, kind, default, help_ in describe()}
    assert rows["trainer.steps"][:2] == ("int: >= 1", "20")
    assert rows["rollout.memory_fraction"][0] == "float: in (0, 1]"
    assert rows["model.dtype"][0] == "str: one of ['bfloat16', 'float32']"
    assert rows["algorithm.dual_clip"][0] == "float | None: > 1, or null"
    assert "grpo" in rows["algorithm.advantage"][0] and rows["trainer.lr"][2] == "peak learning rate"
    every = {r[0]: r[1] for r in describe() + describe(CriticalTokensConfig, SECTION)}
    for key, f, hint in leaves():
        if choices_of(f.metadata, hint) is not None:
            assert "one of" in every[key], (key, every[key])
    out = subprocess.run([sys.executable, "-m", "rl.cli", "config-keys"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("rollout.top_k "))
    assert "int: -1 or >= 1" in line and "-1" in line and "top-k sampling" in line
    assert any(ln.startswith("critical_tokens.device ") for ln in out.stdout.splitlines())


# ----------------------------------------------------------------------------- model.* via the real CLI


def cli_train(*overrides: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # a name that is not local is looked up in the cache only
    return subprocess.run([sys.executable, "-m", "rl.cli", "train", "smoke", *overrides,
                           f"logging.dir={tmp_path / 'runs'}"], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300)


def model_folder(tmp_path: Path, *files: str) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in files:
        if name == "config.json":
            from rl.models import tiny_llama_config

            tiny_llama_config().to_json_file(folder / name)
        else:
            (folder / name).write_text("x")
    return folder


@pytest.mark.parametrize("files, what", [
    (None, "no such folder"),
    (("README.md",), "holds no config.json"),
    (("config.json",), "no weights"),
    (("config.json", "model.safetensors"), "has no tokenizer"),
    (("config.json", "model.safetensors", "tokenizer.json"), "the tokenizer cannot be loaded"),
    ("bundled", "not a bundled name (smollm2-135m), not a local folder, not in the local HF cache"),
])
def test_model_problems_are_one_line_and_exit_2_before_anything_starts(tmp_path, files, what):
    if files == "bundled":
        path = "smollm2-135m-typo"
    else:
        path = str(tmp_path / "model") if files is None else str(model_folder(tmp_path, *files))
    out = cli_train(f"model.name_or_path={path}", tmp_path=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith(f"tokencredit: error: model.name_or_path: {path}: ") and what in lines[0], lines
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()  # nothing was started or written


def test_a_file_given_as_model_path(tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_text("x")
    out = cli_train(f"model.name_or_path={f}", tmp_path=tmp_path)
    assert out.returncode == 2 and "is a file" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_every_declared_choice_has_an_implementation():
    """The tables that dispatch on a recipe value cover each of its declared choices (one list: the Literal)."""
    from rl.config import ModelConfig, RolloutConfig, TaskConfig, TrainerConfig
    from rl.critical_sft import SFTConfig
    from rl.engine import DTYPES as ENGINE_DTYPES
    from rl.engine import lr_lambda
    from rl.fields import type_hints
    from rl.standalone_model import DTYPES
    from rl.tasks import arithmetic, countdown
    from rollout.weight_sync import backend_classes
    from rollout.worker_actor import ENGINES

    def choices(cls, name):
        return set(literal_choices(type_hints(cls)[name]))

    assert choices(ModelConfig, "dtype") <= set(ENGINE_DTYPES)
    assert choices(CriticalTokensConfig, "score_dtype") | choices(SFTConfig, "dtype") <= set(DTYPES)
    assert choices(RolloutConfig, "backend") == set(ENGINES)
    assert choices(RolloutConfig, "sync_backend") == {"auto", *backend_classes()}
    assert choices(TaskConfig, "template") == set(arithmetic.TEMPLATES) == set(countdown.TEMPLATES)
    assert {"add", "sub", "mul"} < choices(TaskConfig, "ops") == {*arithmetic._OP_OF, "mixed"}
    shapes = {name: [lr_lambda(name, 0, 10)(s) for s in (0, 5, 9)] for name in choices(TrainerConfig, "lr_schedule")}
    assert len({tuple(v) for v in shapes.values()}) == len(shapes)  # each schedule name does something of its own
