"""Built-in math_answer: fast integer path, math-verify path, extraction modes, None rows."""

import threading

import pytest

from rewards.builtins.math_answer import integer_reference, math_answer
from rewards.mathverify import looks_explosive, math_equal


def score(completions, answers, **kwargs):
    return math_answer(["p"] * len(completions), completions, answer=answers, **kwargs)


def test_integer_answers_hand_checked():
    completions = [
        "<answer>12</answer>",
        "<think>3+9</think><answer> x = 12 </answer>",
        "The answer is 12.",
        "so the result = 12",
        "I think 11",
        "<answer>1,234</answer>",
        "<answer>-5</answer>",
        "It is -5, not 5-5",  # last number is 5 (subtraction), so wrong
        r"Hence \boxed{12}",
        "no number at all",
    ]
    answers = ["12", "12", "12", "12", "12", "1234", "-5", "-5", "12", "12"]
    assert score(completions, answers) == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_extract_modes_pick_different_places():
    text = r"<answer>7</answer> but \boxed{8}, finally 9"
    assert score([text], ["7"], extract="answer_tag") == [1.0]
    assert score([text], ["8"], extract="boxed") == [1.0]
    assert score([text], ["9"], extract="last_number") == [1.0]
    assert score([text], ["7"]) == [1.0]  # auto prefers the tag
    assert score(["just 9"], ["9"], extract="answer_tag") == [0.0]  # no tag, no answer


def test_missing_reference_returns_none():
    assert score(["12", "12", "12"], [None, "", "12"]) == [None, None, 1.0]


def test_integer_reference_types():
    assert integer_reference(7) == 7
    assert integer_reference("-1,234") == -1234
    assert integer_reference(7.0) == 7
    assert integer_reference(True) is None
    assert integer_reference("7.5") is None
    assert integer_reference(r"\frac{1}{2}") is None


def test_int_reference_value_not_string():
    assert score(["<answer>12</answer>"], [12]) == [1.0]


def test_math_verify_path_for_non_integer_answers():
    completions = [r"\boxed{\frac{1}{2}}", r"\boxed{0.5}", r"\boxed{\frac{1}{3}}", r"<answer>\frac{24}{2}</answer>"]
    answers = ["1/2", r"\frac{1}{2}", "1/2", "12"]  # the last: integer reference, non-plain prediction
    assert score(completions, answers) == [1.0, 1.0, 0.0, 1.0]


def test_unknown_extract_mode_and_missing_column():
    with pytest.raises(ValueError, match="extract='first'"):
        score(["1"], ["1"], extract="first")
    with pytest.raises(KeyError, match="column 'answer'"):
        math_answer(["p"], ["1"], solution=["1"])
    assert math_answer(["p"], ["<answer>3</answer>"], solution=["3"], answer_column="solution") == [1.0]


def test_unknown_kwargs_are_ignored():
    assert score(["1"], ["1"], completion_ids=[[1]], trainer_state={"step": 0}, other=[0]) == [1.0]


def test_explosive_heuristic():
    assert looks_explosive("9^{9^{9^{9}}}")
    assert looks_explosive("9^9^9")
    assert looks_explosive("10**10**10")
    assert looks_explosive("2^{12345}")
    assert looks_explosive("1000!")
    assert not looks_explosive("x^2 + y^2")
    assert not looks_explosive(r"\frac{1}{2}")


def test_off_main_thread_guard_rejects_explosive_input_without_hanging():
    result = {}
    worker = threading.Thread(target=lambda: result.update(v=math_equal("12", r"\boxed{9^{9^{9^{9}}}}")))
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and result["v"] is False
    # and the worker-thread path still verifies ordinary answers (timeouts off there)
    worker = threading.Thread(target=lambda: result.update(v=math_equal("1/2", "0.5")))
    worker.start()
    worker.join(10)
    assert result["v"] is True


def test_main_thread_timeout_bounds_adversarial_input():
    # About 1 s: math-verify's SIGALRM timeout stops sympy evaluating the power tower.
    assert score([r"\boxed{9^{9^{9^{9}}}}"], [r"\frac{1}{2}"], verify_timeout_s=1) == [0.0]


def test_timeouts_passed_only_on_the_main_thread(monkeypatch):
    import math_verify

    seen = []
    monkeypatch.setattr(math_verify, "parse", lambda text, parsing_timeout: seen.append(parsing_timeout) or [text])
    monkeypatch.setattr(math_verify, "verify", lambda g, p, timeout_seconds: seen.append(timeout_seconds) or True)
    assert math_equal("1", "2", timeout_s=3) is True
    assert seen == [3, 3, 3]
    seen.clear()
    worker = threading.Thread(target=math_equal, args=("1", "2", 3))
    worker.start()
    worker.join(10)
    assert seen == [None, None, None]
