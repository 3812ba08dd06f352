"""Answer extraction and number reading (rewards/extract.py), on hand-written strings."""

from fractions import Fraction

import pytest

from rewards.extract import answer_tag, boxed, extract_answer, last_number, think_content, to_number


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The total is 1,234 apples.", "1,234"),
        ("so x = -12", "-12"),
        ("5-3 leaves 2", "2"),  # subtraction, not a negative number
        ("We compute 5-3", "3"),
        ("(-7) is the answer", "-7"),
        ("The answer is 12.", "12"),  # sentence-ending dot is not a decimal point
        ("pi is about 3.14", "3.14"),
        ("12, 13 and 1,2345", "2345"),  # "1,2345" is not a thousands-separated number
        ("value \u221245", "-45"),  # Unicode minus
        ("no digits here", None),
        ("cost $12%", "12"),
    ],
)
def test_last_number(text, expected):
    assert last_number(text) == expected


def test_tags_and_boxed():
    text = "<think>a</think> <answer> 5 </answer> then <answer>6</answer>"
    assert answer_tag(text) == "6"  # the last block
    assert think_content("<think>one</think><think>two</think>") == "one"  # the first block
    assert answer_tag("<answer>unclosed") is None
    assert boxed(r"so \boxed{\frac{1}{2}} and \boxed{7}") == "7"
    assert boxed(r"\boxed{\frac{1}{2}}") == r"\frac{1}{2}"
    assert boxed(r"\boxed{3} \boxed{") == "3"  # an unclosed last box falls back to the one before


@pytest.mark.parametrize(
    "text, mode, expected",
    [
        (r"<answer>7</answer> \boxed{8} 9", "auto", "7"),
        (r"\boxed{8} then 9", "auto", "8"),
        ("it is 9", "auto", "9"),
        (r"<answer>7</answer> \boxed{8} 9", "boxed", "8"),
        (r"<answer>7</answer> \boxed{8} 9", "last_number", "9"),
        ("it is 9", "answer_tag", None),
        ("nothing", "auto", None),
    ],
)
def test_extract_answer_modes(text, mode, expected):
    assert extract_answer(text, mode) == expected


def test_extract_answer_rejects_unknown_mode():
    with pytest.raises(ValueError, match="extract='tail'"):
        extract_answer("1", "tail")


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("12", Fraction(12)),
        (" -3 ", Fraction(-3)),
        ("1,234", Fraction(1234)),
        ("3 + 9 = 12", Fraction(12)),
        ("$12$.", Fraction(12)),
        (r"\boxed{12}", Fraction(12)),
        ("12.50", Fraction(25, 2)),
        ("\u22125", Fraction(-5)),
        ("12 apples", None),
        (r"\frac{1}{2}", None),
        ("1,2", None),
        ("", None),
    ],
)
def test_to_number(answer, expected):
    assert to_number(answer) == expected
