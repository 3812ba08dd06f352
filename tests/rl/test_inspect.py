"""`tokencredit inspect`: the saved batch becomes an HTML page with one coloured span per token."""

from __future__ import annotations

import re

import torch

from rl.experience import Experience
from rl.inspect_dump import save_batch
from rl.inspect_html import write_inspect_page


class Tok:
    def batch_decode(self, ids, skip_special_tokens=True):
        return [f"prompt {i}" for i in range(len(ids))]

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


def test_page_colours_kept_and_dropped_tokens(tmp_path):
    exp = Experience(
        prompt_ids=torch.ones(2, 2, dtype=torch.long), prompt_mask=torch.ones(2, 2, dtype=torch.long),
        completion_ids=torch.tensor([[5, 6, 7], [8, 9, 0]]), completion_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]),
        group_id=torch.tensor([0, 0]), rewards=torch.tensor([1.0, 0.0]))
    weight = torch.tensor([[1.0, 1.0, 1.7], [1.0, 1.2, 1.0]])
    credit = {"advantages": torch.tensor([[0.7, 0.7, 0.7], [-0.7, -0.7, -0.7]]),
              "token_mask": torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]),  # e.g. D3S dropped t6
              "token_weight": weight, "entropy": None, "extras": {"tw_weight": weight.clone()}}
    save_batch(tmp_path, 3, exp, credit, Tok())
    page = write_inspect_page(tmp_path).read_text()
    spans = re.findall(r"<span class='tok' style='([^']*)' title='([^']*)'>([^<]*)</span>", page)
    assert [s[2] for s in spans] == ["t5", "t6", "t7", "t8", "t9"]  # padding not shown
    assert "line-through" in spans[1][0] and "line-through" not in spans[0][0]  # dropped vs kept
    assert "46,160,67" in spans[2][0] and "215,58,73" in spans[3][0]  # positive green, negative red
    assert "w=1.700" in spans[2][1] and "tw_weight=1.7" in spans[2][1]
    assert "4 of 5 tokens enter the loss" in page
