"""A non-finite loss or gradient norm never reaches the weights or the optimizer state (trainer.on_nonfinite).

Through the real Ray ranks at ZeRO 0 (a plain torch AdamW: the gradient norm is checked before
``engine.step()``), ZeRO 1 and 3 (DeepSpeed's optimizers drop a non-finite step themselves) and bf16 weights:
a step on a batch whose rewards are NaN leaves the exported weights bit-identical to the start, and the
next, finite step gives exactly the update a fresh run's first step gives (Adam's step count and moments
were not touched). With two ranks a NaN on one rank alone drops the step on both. A checkpoint of
non-finite weights is refused.
"""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import load_file

from rl.faults import NonFiniteError, check_nonfinite
from tests.rl.test_engine import cfg_for, rollout_batch


def nan_batch(rows=slice(0, 4)):
    """One group's sampler log-probs are NaN: with truncated importance sampling on, their per-token weights
    and so the loss become NaN (rewards are checked before they get that far: rl/algorithms/advantage.py)."""
    b = rollout_batch()
    b["sampler_logp"] = b["sampler_logp"].clone()
    b["sampler_logp"][rows] = float("nan")
    return b


def cfg_with_tis(**over):
    return cfg_for(**{"algorithm.tis.enable": True, "algorithm.tis.cap": 1e6, **over})


def run_steps(cfg, model_dir, batches, tmp_path) -> list[tuple[dict, dict]]:
    """[(exported weights, metrics)] after each train_step, on one TrainerGroup."""
    from rl.trainer_group import TrainerGroup

    group = TrainerGroup(cfg, model_dir, 10)
    out = []
    try:
        for i, b in enumerate(batches):
            metrics, _ = group.train_step(b, None, i, 10)
            path = tmp_path / f"export_{len(list(tmp_path.iterdir()))}"
            group.export_hf(str(path), model_dir)
            out.append((load_file(str(path / "model.safetensors")), metrics))
    finally:
        group.shutdown()
    return out


@pytest.fixture(scope="module")
def one_good_step(tiny_model_dir, ray_local, tmp_path_factory):
    ((weights, metrics),) = run_steps(cfg_with_tis(), tiny_model_dir, [rollout_batch()], tmp_path_factory.mktemp("ref"))
    return weights


CASES = {
    "zero0": {},
    "zero0_two_ranks_nan_on_one": {"trainer.num_ranks": 2},
    "zero1": {"trainer.zero_stage": 1},
    "zero3": {"trainer.zero_stage": 3},
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_nonfinite_step_changes_nothing_and_the_next_step_is_a_first_step(case, tiny_model_dir, ray_local,
                                                                               tmp_path, one_good_step):
    start = load_file(f"{tiny_model_dir}/model.safetensors")
    (after_nan, m_nan), (after_good, m_good) = run_steps(cfg_with_tis(**CASES[case]), tiny_model_dir,
                                                         [nan_batch(), rollout_batch()], tmp_path)
    assert m_nan["train/nonfinite_steps"] == 1 and m_nan["train/nonfinite_loss"] == 1
    assert m_nan["train/optimizer_steps"] == 0
    for k in start:
        assert torch.equal(after_nan[k], start[k]), k  # not one bit moved
    assert m_good["train/nonfinite_steps"] == 0 and m_good["train/optimizer_steps"] == 1
    for k in one_good_step:
        torch.testing.assert_close(after_good[k], one_good_step[k], atol=2e-6, rtol=1e-4, msg=k)


def test_bf16_weights_drop_a_nonfinite_step_too(tiny_model_dir, ray_local, tmp_path):
    cfg = cfg_with_tis(**{"model.dtype": "bfloat16", "trainer.bf16_weights": True})
    (after_nan, m_nan), (after_good, m_good) = run_steps(cfg, tiny_model_dir, [nan_batch(), rollout_batch()], tmp_path)
    ((fresh, _),) = run_steps(cfg, tiny_model_dir, [rollout_batch()], tmp_path)
    start = load_file(f"{tiny_model_dir}/model.safetensors")
    assert m_nan["train/nonfinite_steps"] == 1
    for k in start:
        assert torch.equal(after_nan[k], start[k].to(after_nan[k].dtype)), k
    for k in fresh:
        assert torch.equal(after_good[k], fresh[k]), k


def test_a_checkpoint_of_nonfinite_weights_is_refused(tiny_model_dir, tmp_path):
    from rl.engine import PolicyEngine

    eng = PolicyEngine(cfg_for(), tiny_model_dir, 0, 1, "127.0.0.1", 29473, 10)
    assert eng.nonfinite_parameter() is None
    name, p = next(iter(eng.engine.module.named_parameters()))
    with torch.no_grad():
        p.view(-1)[3] = float("inf")
    with pytest.raises(FloatingPointError, match=f"parameter {name} holds NaN or inf"):
        eng.save(str(tmp_path / "ds"), {"step": 1})
    assert not (tmp_path / "ds").exists()


def test_the_driver_logs_a_dropped_update_or_stops_by_config(caplog, tmp_path):
    m = {"train/nonfinite_steps": 1.0, "train/nonfinite_loss": 0.0}
    with caplog.at_level(logging.WARNING, logger="rl.faults"):
        check_nonfinite("skip", 4, m, None)
    assert "step 4: non-finite gradient norm" in caplog.text and "on_nonfinite=skip" in caplog.text
    with pytest.raises(NonFiniteError, match=r"step 4: non-finite gradient norm.*the run stops.*step_3 is intact"):
        check_nonfinite("stop", 4, m, tmp_path / "step_3")
    check_nonfinite("stop", 5, {"train/nonfinite_steps": 0.0}, None)  # nothing dropped: nothing to say
