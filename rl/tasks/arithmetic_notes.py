"""Built-in ``arithmetic_notes``: plain-text documents of worked arithmetic, for RMT mid-training.

Each document is a title line and ``LINES_PER_DOC`` solved problems, one per line
("7 * 8 = 56"), drawn with the ``arithmetic`` task's knobs (``ops``, ``digits``,
``num_operands``, ``seed``). ``num_train`` / ``num_test`` count problems, so the documents are
disjoint between splits exactly as the arithmetic problems are. Rows are
``{"prompt": document text, "answer": ""}``: with ``algorithm.rmt.enable`` the prompt field is
the document. Result digits carry most of the next-token entropy, the layout almost none,
which gives RMT's entropy tiers something to separate.
"""

from __future__ import annotations

from rl.tasks.arithmetic import make_problems

LINES_PER_DOC = 8
TITLE = "Worked arithmetic:"
EXTRA_COLUMNS: list[str] = []


def generate(cfg, split: str) -> list[dict]:
    problems = make_problems(cfg, split)
    docs = []
    for s in range(0, len(problems) - LINES_PER_DOC + 1, LINES_PER_DOC):
        lines = [f"{p.expression} = {p.answer}" for p in problems[s : s + LINES_PER_DOC]]
        docs.append({"prompt": "\n".join([TITLE, *lines]), "answer": ""})
    return docs
