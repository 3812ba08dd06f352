"""Built-in soft_multichoice: TW-GRPO's partial credit |P|/|G| for P ⊆ G, math-verify equivalence."""

from rewards.builtins.multichoice import options, soft_multichoice


def score(completions, answers, **kwargs):
    return soft_multichoice(["p"] * len(completions), completions, answer=answers, **kwargs)


def test_option_sets():
    assert options("<think>x</think><answer> A, C </answer>") == {"A", "C"}
    assert options("B") == {"B"}
    assert options("<answer>A,B,C</answer>") == {"A", "B", "C"}


def test_soft_credit_hand_checked():
    gold = "A,C"
    completions = [
        "<answer>A, C</answer>",  # exact set -> 1
        "<answer>C,A</answer>",  # order does not matter -> 1
        "<answer>A</answer>",  # 1 of 2 -> 0.5
        "<answer>A,B</answer>",  # B is wrong -> 0
        "<answer></answer>",  # empty option is not in G -> 0
        "<answer>A,A</answer>",  # duplicates collapse -> 0.5
    ]
    assert score(completions, [gold] * 6) == [1.0, 1.0, 0.5, 0.0, 0.0, 0.5]
    assert score(["<answer>B</answer>"], ["A,B,C,D"]) == [0.25]


def test_reference_in_answer_tags_and_no_tag_prediction():
    assert score(["C"], ["<answer>C</answer>"]) == [1.0]
    assert score(["C"], ["<answer>B, C</answer>"]) == [0.5]


def test_math_verify_equivalence_gives_full_credit():
    assert score([r"<answer>\frac{1}{2}</answer>"], ["0.5"]) == [1.0]
    assert score([r"<answer>\frac{1}{3}</answer>"], ["0.5"]) == [0.0]


def test_verify_scope():
    # The answer block is wrong, but the reasoning contains the right value.
    text = r"<think>maybe \boxed{0.5}</think><answer>0.25</answer>"
    assert score([text], ["1/2"]) == [0.0]  # default: only the answer counts
    assert score([text], ["1/2"], verify_scope="completion") == [1.0]  # TW-GRPO's code


def test_missing_reference_is_none():
    assert score(["A", "A"], [None, "A"]) == [None, 1.0]
