import re

import pytest

from rewards.builtins.countdown import (
    candidate_expressions,
    check_countdown,
    countdown_reward,
    extract_expression,
)
from rl.config import TaskConfig
from rl.tasks import generate_task, get_task, task_columns
from rl.tasks.arithmetic import evaluate
from rl.tasks.countdown import make_problems

_EXPR = re.compile(r"What is (.+)\? ")


def expr_of(row: dict) -> str:
    return _EXPR.match(row["prompt"]).group(1)


def operands_of(row: dict) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", expr_of(row))]


# ----------------------------------------------------------------------------- arithmetic


def test_arithmetic_rows_worked_by_hand():
    assert evaluate((2, 3, 4), ("+", "*")) == 14
    assert evaluate((2, 3, 4), ("*", "-")) == 2
    assert evaluate((9, 2, 3), ("-", "-")) == 4
    assert evaluate((7, 1, 8), ("-", "*")) == -1


@pytest.mark.parametrize("ops", [["add"], ["sub"], ["mul"], ["mixed"], ["add", "mul"]])
@pytest.mark.parametrize("digits,k", [(1, 2), (2, 2), (1, 3), (3, 2)])
def test_arithmetic_answers_match_python_arithmetic(ops, digits, k):
    cfg = TaskConfig(ops=ops, digits=digits, num_operands=k, num_train=60, num_test=20)
    for row in generate_task("arithmetic", cfg, "train") + generate_task("arithmetic", cfg, "test"):
        expr = expr_of(row)
        assert re.fullmatch(r"\d+( [-+*] \d+)+", expr)  # a trusted generated string, so eval is a fine oracle
        assert row["answer"] == str(eval(expr))
        nums = operands_of(row)
        assert len(nums) == k
        assert all(10 ** (digits - 1) <= x < 10 ** digits for x in nums)
        used = set(re.findall(r" ([-+*]) ", expr))
        allowed = set().union(*({"add": {"+"}, "sub": {"-"}, "mul": {"*"}, "mixed": {"+", "-", "*"}}[o] for o in ops))
        assert used <= allowed


def test_two_operand_subtraction_is_never_negative():
    rows = generate_task("arithmetic", TaskConfig(ops=["sub"], digits=2, num_train=300, num_test=50), "train")
    assert min(int(r["answer"]) for r in rows) >= 0


def test_arithmetic_is_deterministic_and_seeded():
    cfg = TaskConfig(ops=["mixed"], digits=2, num_train=50, num_test=10, seed=5)
    assert generate_task("arithmetic", cfg, "train") == generate_task("arithmetic", cfg, "train")
    other = TaskConfig(ops=["mixed"], digits=2, num_train=50, num_test=10, seed=6)
    assert generate_task("arithmetic", cfg, "train") != generate_task("arithmetic", other, "train")


@pytest.mark.parametrize("digits", [2, 4])  # enumerated space (8100) and rejection-sampled space
def test_arithmetic_splits_are_disjoint_and_test_ignores_num_train(digits):
    cfg = TaskConfig(digits=digits, num_train=1000, num_test=100)
    train, test = generate_task("arithmetic", cfg, "train"), generate_task("arithmetic", cfg, "test")
    assert (len(train), len(test)) == (1000, 100)
    assert len({r["prompt"] for r in train}) == 1000
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in test}
    fewer = TaskConfig(digits=digits, num_train=10, num_test=100)
    assert generate_task("arithmetic", fewer, "test") == test


def test_small_space_is_split_in_half_and_fully_used(caplog):
    cfg = TaskConfig(ops=["add"], digits=1, num_train=2000, num_test=200)
    train, test = generate_task("arithmetic", cfg, "train"), generate_task("arithmetic", cfg, "test")
    assert (len(test), len(train)) == (40, 41)  # 9 x 9 = 81 one-digit additions
    assert {r["prompt"] for r in train} | {r["prompt"] for r in test} == {
        f"What is {a} + {b}? Answer with just the number." for a in range(1, 10) for b in range(1, 10)}
    assert "only 81 distinct problems" in caplog.text


def test_difficulty_knobs_change_the_numbers():
    base = generate_task("arithmetic", TaskConfig(digits=2, num_train=0, num_test=30), "test")
    wider = generate_task("arithmetic", TaskConfig(digits=3, num_train=0, num_test=30), "test")
    longer = generate_task("arithmetic", TaskConfig(digits=2, num_operands=4, num_train=0, num_test=30), "test")
    assert max(max(operands_of(r)) for r in base) < 100 <= min(min(operands_of(r)) for r in wider)
    assert {len(operands_of(r)) for r in longer} == {4}


def test_templates():
    short = generate_task("arithmetic", TaskConfig(num_train=0, num_test=3, digits=2), "test")
    cot = generate_task("arithmetic", TaskConfig(num_train=0, num_test=3, digits=2, template="cot"), "test")
    assert all(r["prompt"].endswith("Answer with just the number.") for r in short)
    assert all("<answer></answer>" in r["prompt"] and "step by step" in r["prompt"] for r in cot)
    assert [r["answer"] for r in short] == [r["answer"] for r in cot]


@pytest.mark.parametrize("field,value,key", [("ops", ["div"], "data.task.ops"), ("ops", [], "data.task.ops"),
                                             ("digits", 0, "data.task.digits"),
                                             ("num_operands", 1, "data.task.num_operands"),
                                             ("template", "long", "data.task.template")])
def test_bad_knobs_name_the_key(field, value, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        generate_task("arithmetic", TaskConfig(**{field: value}), "train")


def test_unknown_task_and_split():
    with pytest.raises(ValueError, match="builtin:countdown"):
        get_task("sudoku")
    with pytest.raises(ValueError, match="'train' and 'test'"):
        generate_task("arithmetic", TaskConfig(), "validation")


# ----------------------------------------------------------------------------- countdown


def test_countdown_rows_are_solvable_with_the_given_numbers():
    cfg = TaskConfig(digits=2, num_operands=4, num_train=200, num_test=20)
    problems = make_problems(cfg, "train")
    for p in problems:
        assert len(p["numbers"]) == 4 and all(10 <= n < 100 for n in p["numbers"])
        assert 0 < p["target"] < 1000 and p["target"] not in p["numbers"]
        assert sorted(int(x) for x in re.findall(r"\d+", p["solution"])) == sorted(p["numbers"])
        assert eval(p["solution"]) == p["target"]  # trusted generated string: eval as an oracle
        assert check_countdown(p["solution"], p["numbers"], p["target"])
    rows = generate_task("countdown", cfg, "train")
    assert rows[0]["answer"] == str(rows[0]["target"]) and rows[0]["numbers"] == problems[0]["numbers"]
    assert str(rows[0]["target"]) in rows[0]["prompt"]
    assert task_columns("countdown") == ["numbers", "target"]


def test_countdown_deterministic_disjoint_and_knobs():
    cfg = TaskConfig(digits=2, num_operands=3, num_train=300, num_test=50, seed=9)
    train, test = generate_task("countdown", cfg, "train"), generate_task("countdown", cfg, "test")
    assert train == generate_task("countdown", cfg, "train")
    key = lambda r: (tuple(sorted(r["numbers"])), r["target"])  # noqa: E731
    assert not {key(r) for r in train} & {key(r) for r in test}
    one_digit = generate_task("countdown", TaskConfig(digits=1, num_operands=3, num_train=0, num_test=50), "test")
    assert all(1 <= n <= 9 for r in one_digit for n in r["numbers"])


@pytest.mark.parametrize("expr,numbers,target,ok", [
    ("(25 - 4) * 2", [25, 4, 2], 42, True),
    ("25+4", [25, 4, 2], 29, True),  # a subset of the numbers is fine
    ("2 × (25 - 4)", [25, 4, 2], 42, True),
    ("(8 / 3) * 3", [8, 3, 3], 8, True),  # exact rational arithmetic, no float error
    ("25 + 4", [25, 4, 2], 30, False),  # wrong target
    ("25 + 25 - 8", [25, 8, 2], 42, False),  # 25 used twice
    ("25 + 25 - 8", [25, 25, 8], 42, True),  # ... fine when given twice
    ("10 + 32", [25, 4, 2], 42, False),  # numbers not given
    ("8 / (3 - 3)", [8, 3, 3], 8, False),  # division by zero
    ("2 ** 5 + 10", [2, 5, 10], 42, False),  # power is not an allowed operator
    ("-2 + 44", [2, 44], 42, False),  # unary minus
    ("40.0 + 2", [40, 2], 42, False),  # float literal
    ("abs(40) + 2", [40, 2], 42, False),
    ("__import__('os').getpid()", [1], 1, False),
    ("x + 2", [40, 2], 42, False),
    ("True + 41", [41], 42, False),
    ("(40 + 2", [40, 2], 42, False),  # syntax error
    ("", [1], 1, False),
    ("(" * 400 + "1" + ")" * 400, [1], 1, False),  # too long to parse
])
def test_check_countdown_hand_worked(expr, numbers, target, ok):
    assert check_countdown(expr, numbers, target) is ok


def test_check_countdown_never_evaluates_code(tmp_path):
    marker = tmp_path / "pwned"
    assert not check_countdown(f"open({str(marker)!r}, 'w')", [1], 1)
    assert not marker.exists()


def test_countdown_reward_extracts_the_expression():
    completions = ["Let me think.\n<answer>(25 - 4) * 2</answer>", "25 - 4 = 21, then 21 * 2 = 42\n(25 - 4) * 2 = 42",
                   "The answer is 42.", "<answer>25 * 2</answer>", "**(25 - 4) * 2**.",
                   "The expression is (25 - 4) * 2.", "It is 25 - 4 * 2 = 42"]
    n = len(completions)
    assert countdown_reward([""] * n, completions, numbers=[[25, 4, 2]] * n, target=[42] * n) == [
        1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert extract_expression("a\n<answer>1</answer> b <answer> 2 + 3 </answer>") == "2 + 3"
    assert candidate_expressions("So: 9 + 4 * 2 = 17") == ["So: 9 + 4 * 2", "9 + 4 * 2", "17"]
