"""benchmarks/vs_trl.py without training anything: the tokencredit command line is a valid config, the
recipe check, time to target without interpolation, TRL's step breakdown, the summary over seeds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("vs_trl", ROOT / "benchmarks" / "vs_trl.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


vs_trl = _load()


def test_tokencredit_overrides_are_a_valid_quickstart_config(tmp_path):
    from rl.config import load_config

    s = vs_trl.Settings(eval_every=4)
    cfg = load_config(s.recipe_path(), vs_trl.tokencredit_overrides(s, 2, tmp_path, "x"))
    assert cfg.checkpoint.export_hf_every == 4 and cfg.checkpoint.export_hf is False  # 12 % 4 == 0: step 12 exported
    assert (cfg.trainer.seed, cfg.rollout.seed, cfg.trainer.steps) == (2, 2, 12)
    assert cfg.eval.at_start is False and cfg.logging.save_batches is False
    # the quickstart's settings that TRL is configured from
    assert (cfg.trainer.prompts_per_step, cfg.rollout.n, cfg.rollout.max_tokens) == (8, 8, 16)
    assert (cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.trainer.lr) == (0.7, 1.0, -1, 2e-5)
    assert cfg.trainer.lr_schedule == "constant" and cfg.trainer.bf16_weights is False
    vs_trl.check_recipe_matches_trl(cfg)
    odd = load_config(s.recipe_path(), vs_trl.tokencredit_overrides(vs_trl.Settings(steps=10, eval_every=4), 0, tmp_path,
                                                                            "x"))
    assert odd.checkpoint.export_hf is True  # step 10 is not a multiple of 4: the final export is step 10's


def test_the_tokencredit_variants_differ_only_in_prompt_sharing(tmp_path):
    from rl.config import load_config

    s = vs_trl.Settings()
    base = vs_trl.tokencredit_overrides(s, 0, tmp_path, "x")
    shared = load_config(s.recipe_path(), base + vs_trl.SYSTEMS["tokencredit"]["overrides"])
    unshared = load_config(s.recipe_path(), base + vs_trl.SYSTEMS["tokencredit_unshared"]["overrides"])
    assert shared.trainer.share_prompt_forward is True and unshared.trainer.share_prompt_forward is False
    unshared.trainer.share_prompt_forward = True
    assert unshared == shared


def test_recipe_check_rejects_what_trl_is_not_configured_for():
    from rl.config import load_config

    cfg = load_config(vs_trl.Settings().recipe_path(), ["algorithm.credit=[d3s]", "trainer.lr_schedule=cosine"])
    with pytest.raises(ValueError, match="credit.*lr_schedule|lr_schedule.*credit"):
        vs_trl.check_recipe_matches_trl(cfg)


def test_eval_steps():
    assert vs_trl.Settings(steps=12, eval_every=4).eval_steps() == [4, 8, 12]
    assert vs_trl.Settings(steps=10, eval_every=4).eval_steps() == [4, 8, 10]
    assert vs_trl.Settings(steps=2, eval_every=2).eval_steps() == [2]


def _steps(step_s, startup):
    out, t = [], 0.0
    for k, d in enumerate(step_s, 1):
        t += d
        out.append({"step": k, "step_s": d, "train_s": t, "wall_s": startup + t, "reward": 0.1 * k,
                    "breakdown": {"generation": d / 2, "update": d / 2, "sync": 0.0}})
    return out


def test_time_to_target_is_the_first_evaluated_point_at_or_above():
    steps = _steps([10.0] * 12, startup=30.0)
    points = {0: {"greedy_acc": 0.6}, 4: {"greedy_acc": 0.84}, 8: {"greedy_acc": 0.85}, 12: {"greedy_acc": 0.9}}
    got = vs_trl.time_to_targets(points, steps, [0.85, 0.95, 0.5], 30.0)
    assert got["0.85"] == {"step": 8, "train_s": 80.0, "wall_s": 110.0, "greedy_acc": 0.85}  # not interpolated
    assert got["0.95"] is None
    assert got["0.5"] == {"step": 0, "train_s": 0.0, "wall_s": 30.0, "greedy_acc": 0.6}


def test_trl_breakdown_from_its_profiling_names():
    prof = {"GRPOTrainer._prepare_inputs": 30.0, "GRPOTrainer.transformers.generate": 25.0,
            "GRPOTrainer.compute_loss": 12.0}
    b = vs_trl.trl_breakdown(50.0, prof)
    assert b == {"generation": 30.0, "update": 20.0, "sync": 0.0, "generate_call": 25.0, "loss_forward": 12.0}
    b = vs_trl.trl_breakdown(50.0, {**prof, "GRPOTrainer.sync_weights": 2.0, "GRPOTrainer.vLLM.generate": 5.0})
    assert b["generation"] == 28.0 and b["sync"] == 2.0 and b["generate_call"] == 30.0


def _run(system, seed, step_s, startup, accs, status="ok"):
    s = vs_trl.Settings()
    if status != "ok":
        return {"system": system, "seed": seed, "status": status, "error": "AttributeError: boom"}
    steps = _steps(step_s, startup)
    points = {k: {"greedy_acc": a} for k, a in zip([0, 4, 8, 12], accs)}
    return {"system": system, "seed": seed, "status": "ok", "steps": steps, "startup_s": startup,
            "memory_load": {"peak_tree_rss_mib": 1000.0 + seed, "peak_tree_pss_mib": 900.0, "load1_mean": 1.0},
            "evals": {str(k): {"greedy_acc": v["greedy_acc"], "pass_at_k": v["greedy_acc"] + 0.02}
                      for k, v in points.items()},
            "time_to_target": vs_trl.time_to_targets(points, steps, s.targets, startup)}


def test_summary_over_seeds_and_ratio(tmp_path):
    s = vs_trl.Settings()
    results = [_run("tokencredit", 0, [10.0] * 12, 60.0, [0.67, 0.8, 0.9, 0.96]),
               _run("tokencredit", 1, [12.0] * 12, 60.0, [0.67, 0.86, 0.9, 0.94]),
               _run("trl", 0, [40.0] * 12, 10.0, [0.67, 0.9, 0.92, 0.96]),
               _run("trl", 1, [40.0] * 12, 10.0, [0.67, 0.7, 0.88, 0.96]),
               _run("trl_vllm", 0, [], 0, [], status="failed")]
    summary = vs_trl.summarise(results, s)
    tc, trl = summary["systems"]["tokencredit"], summary["systems"]["trl"]
    assert tc["seconds_per_step"]["mean"] == pytest.approx(11.0)
    assert (tc["seconds_per_step"]["min"], tc["seconds_per_step"]["max"]) == (10.0, 12.0)
    # 0.85: tokencredit at step 8 (seed 0: 60 + 80) and step 4 (seed 1: 60 + 48); TRL at 4 (170) and 8 (330)
    t85 = tc["time_to_target"]["0.85"]
    assert t85["reached"] == "2/2" and t85["wall_s"]["mean"] == pytest.approx((140 + 108) / 2)
    assert trl["time_to_target"]["0.85"]["wall_s"]["mean"] == pytest.approx((170 + 330) / 2)
    ratio = summary["ratios"]["tokencredit/trl"]["time_to_target"]["0.85"]
    assert ratio["wall_s"] == pytest.approx(124 / 250) and ratio["complete"] is True
    # 0.95: tokencredit seed 1 never reaches it -> the ratio is over reaching seeds only, flagged incomplete
    r95 = summary["ratios"]["tokencredit/trl"]["time_to_target"]["0.95"]
    assert r95["complete"] is False and r95["reached"]["tokencredit"] == "1/2"
    assert summary["systems"]["trl_vllm"]["failed"][0]["error"] == "AttributeError: boom"
    assert tc["held_out"]["12"]["greedy_acc"]["mean"] == pytest.approx(0.95)
    text = vs_trl.table(summary, s)
    assert "trl_vllm     FAILED: AttributeError: boom" in text and "tokencredit/trl" in text
    vs_trl.plot(results, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 0
