"""load_reward_fn: built-in names, module paths, file paths, and the errors that name the spec."""

import asyncio
import inspect
from pathlib import Path

import pytest

from rewards import RewardLoadError, builtin_rewards, load_reward_fn
from rewards.builtins.format import format_reward

HERE = Path(__file__).parent


def test_builtin_names():
    assert set(builtin_rewards()) == {"math_answer", "format", "soft_multichoice", "overlong_penalty", "length_budget",
                                       "next_token_match", "countdown"}
    assert load_reward_fn("format") is format_reward


def test_module_paths_colon_and_dotted():
    assert load_reward_fn("rewards.builtins.format:format_reward") is format_reward
    assert load_reward_fn("rewards.builtins.format.format_reward") is format_reward  # TRL style
    assert load_reward_fn("os.path:join") is __import__("os").path.join


def test_file_path_relative_to_base_dir_then_cwd(monkeypatch, tmp_path):
    fn = load_reward_fn("reward_samples.py:length_reward", base_dir=HERE)
    assert fn(["p"], ["abc"]) == [3.0]
    assert load_reward_fn(f"{HERE}/reward_samples.py:length_reward") is fn  # same file -> same module
    monkeypatch.chdir(HERE)
    assert load_reward_fn("reward_samples.py:length_reward") is fn
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("def r(prompts, completions, **kw):\n    return [7.0] * len(completions)\n")
    assert load_reward_fn("mine.py:r", base_dir=HERE)(["p"], ["c"]) == [7.0]  # falls back to cwd


def test_async_function_loads_as_coroutine_function():
    fn = load_reward_fn("reward_samples.py:async_reward", base_dir=HERE)
    assert inspect.iscoroutinefunction(fn)
    assert asyncio.run(fn(["p"], ["c"])) == [2.0]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("nope.py:fn", ["'nope.py:fn'", "file 'nope.py' not found", "tried"]),
        ("no_such_pkg_xyz.mod:fn", ["'no_such_pkg_xyz.mod:fn'", "cannot import module", "ModuleNotFoundError"]),
        ("reward_samples.py:missing", ["has no attribute 'missing'", "length_reward"]),
        ("reward_samples.py:NOT_CALLABLE", ["'NOT_CALLABLE' is a int, not callable"]),
        ("mathanswer", ["'mathanswer' is not a built-in", "math_answer"]),
        ("os.path:", ["expected module:function"]),
        ("", ["non-empty string"]),
    ],
)
def test_errors_name_the_spec(spec, expected):
    with pytest.raises(RewardLoadError) as info:
        load_reward_fn(spec, base_dir=HERE)
    for fragment in expected:
        assert fragment in str(info.value)


def test_file_that_fails_to_import(tmp_path):
    (tmp_path / "broken.py").write_text("import no_such_module_xyz\n")
    with pytest.raises(RewardLoadError, match=r"broken.py:fn.*importing .*broken.py failed: ModuleNotFoundError"):
        load_reward_fn("broken.py:fn", base_dir=tmp_path)
