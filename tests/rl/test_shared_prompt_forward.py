"""The shared-prompt forward: each distinct prompt of a micro-batch runs once and its keys/values serve every
completion of it. Checked against the plain forward of every whole row (hidden states and gradients)."""

from __future__ import annotations

import pytest
import torch

from rl.models import tiny_llama_config
from rl.prompt_sharing import completion_hidden


def _model():
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(vocab_size=97, hidden=64, layers=2, heads=4)).double()  # float64 (RMSNorm still rounds through float32: ~1e-7 relative)


def _batch(groups: list[list[int]], rows_per_group: int, t: int = 5) -> dict:
    """Left-padded prompts (one per group, repeated), right-padded completions of varying length."""
    p = max(len(g) for g in groups)
    gen = torch.Generator().manual_seed(1)
    prompt_ids, prompt_mask, comp_ids, comp_mask = [], [], [], []
    for g in groups:
        for r in range(rows_per_group):
            prompt_ids.append([2] * (p - len(g)) + g)
            prompt_mask.append([0] * (p - len(g)) + [1] * len(g))
            n = 1 + (r + len(g)) % t
            comp_ids.append(torch.randint(3, 97, (t,), generator=gen).tolist())
            comp_mask.append([1] * n + [0] * (t - n))
    return {"prompt_ids": torch.tensor(prompt_ids), "prompt_mask": torch.tensor(prompt_mask),
            "completion_ids": torch.tensor(comp_ids), "completion_mask": torch.tensor(comp_mask)}


def _plain(backbone, batch):
    """Every row's whole sequence through the backbone (what each row's hidden states are by definition)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    attn = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    h = backbone(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=False).last_hidden_state
    p, t = batch["prompt_ids"].shape[1], batch["completion_ids"].shape[1]
    return h[:, p - 1 : p + t - 1]


def _loss_and_grads(model, h, batch):
    mask = batch["completion_mask"].unsqueeze(-1).float()
    loss = (h * mask).square().sum() + (h * mask).sum()
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])
    return loss.detach(), grads


@pytest.mark.parametrize("groups,rows", [([[5, 6, 7, 8], [9, 10]], 3),  # 2 prompts x 3 rows, left padding
                                         ([[11, 12, 13]], 4),            # one prompt, no padding
                                         ([[5, 6], [7, 8, 9], [10]], 1)])  # nothing shared: the plain path
def test_hidden_states_and_gradients_match_the_plain_forward_of_every_row(groups, rows):
    model = _model()
    batch = _batch(groups, rows)
    want_h = _plain(model.model, batch)
    got_h, shared = completion_hidden(model.model, batch, share_prompts=True)
    assert shared == (rows > 1)
    mask = batch["completion_mask"].bool()
    torch.testing.assert_close(got_h[mask], want_h[mask], rtol=1e-7, atol=1e-7)
    want_loss, want_g = _loss_and_grads(model, _plain(model.model, batch), batch)
    got_loss, got_g = _loss_and_grads(model, completion_hidden(model.model, batch, share_prompts=True)[0], batch)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-7, atol=1e-7)
    for g, w in zip(got_g, want_g):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * float(w.abs().max()))


def test_shared_rows_need_not_be_adjacent_and_switching_off_runs_the_plain_forward():
    model = _model()
    batch = _batch([[5, 6, 7], [8, 9]], 2)
    perm = torch.tensor([0, 2, 1, 3])  # A B A B
    batch = {k: v[perm] for k, v in batch.items()}
    want = _plain(model.model, batch)
    got, shared = completion_hidden(model.model, batch, share_prompts=True)
    mask = batch["completion_mask"].bool()
    assert shared
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-7, atol=1e-7)
    off, shared = completion_hidden(model.model, batch, share_prompts=False)
    assert not shared
    torch.testing.assert_close(off, want)
