"""RMT's lambda * L_NTP in the trainer: the DeepSpeed update on 2 ranks equals Adam's first step on
the gradient of the NTP loss computed by hand with plain transformers autograd."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from tests.rl.test_engine import cfg_for, rollout_batch, weights_after_one_step


def ntp_documents():
    g = torch.Generator().manual_seed(11)
    lengths = torch.tensor([7, 4, 6])  # completion lengths (documents of 8, 5, 7 tokens)
    cmask = (torch.arange(7)[None] < lengths[:, None]).float()
    ntp_mask = cmask.clone()
    ntp_mask[0, 2] = ntp_mask[2, 5] = 0  # two positions in the RL set C
    return {"prompt_ids": torch.randint(3, 1000, (3, 1), generator=g), "prompt_mask": torch.ones(3, 1, dtype=torch.long),
            "completion_ids": torch.randint(3, 1000, (3, 7), generator=g), "completion_mask": cmask,
            "ntp_mask": ntp_mask}


def expected_weights(model_dir: str, docs: dict, coef: float, lr: float, eps: float, reduction: str) -> dict:
    """Adam's first step (m = g, v = g^2 after bias correction) on coef * NTP, by hand. cfg_for's
    eps >> |g| makes it nearly linear in g, so the comparison checks the gradient, not its sign."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = torch.cat([docs["prompt_ids"], docs["completion_ids"]], 1)
    att = torch.cat([docs["prompt_mask"], docs["completion_mask"].long()], 1)
    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, docs["completion_ids"][..., None]).squeeze(-1)
    nll = -(logp * docs["ntp_mask"]).sum()
    loss = coef * (nll / docs["ntp_mask"].sum() if reduction == "mean" else nll)
    loss.backward()
    with torch.no_grad():
        out = {k: p - lr * p.grad / (p.grad.abs() + eps) for k, p in model.named_parameters()}
    return out, float(nll.detach() / docs["ntp_mask"].sum())


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ntp_update_on_two_ranks_is_the_hand_computed_adam_step(tiny_model_dir, ray_local, reduction, tmp_path):
    over = {"trainer.num_ranks": 2, "trainer.micro_batch_size": 1,
            "algorithm.rmt.ntp_coef": 0.5, "algorithm.rmt.ntp_reduction": reduction}
    cfg = cfg_for(**over)
    batch = rollout_batch(groups=2)
    batch["rewards"] = torch.ones_like(batch["rewards"])  # no mixed group: the RL part has no gradient
    docs = ntp_documents()  # 3 documents over 2 ranks: rank 1 backprops a zero-mask copy
    got, out = weights_after_one_step(cfg, tiny_model_dir, batch, tmp_path, ntp=docs)
    want, nll = expected_weights(tiny_model_dir, docs, 0.5, cfg.trainer.lr, cfg.trainer.adam_eps, reduction)
    assert out["train/ntp_nll"] == pytest.approx(nll, rel=1e-5)
    for k, w in want.items():
        torch.testing.assert_close(got[k], w, atol=2e-6, rtol=1e-4, msg=k)
    start = load_file(f"{tiny_model_dir}/model.safetensors")
    assert max(float((got[k] - start[k]).abs().max()) for k in start if k in got) > 1e-5  # the step moved weights
