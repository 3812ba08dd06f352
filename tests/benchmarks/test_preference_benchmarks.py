"""Pure helper logic of benchmarks/preference_ablation.py, benchmarks/dpo_vs_trl.py and
benchmarks/bench_common.py: statistics, process roles and the tree sampler, the run summary, paired
differences and verdicts, the critical-token check, the arms' overrides, and resuming / re-summarising
from result files (no training is run)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


bc = _load("bench_common")
pa = _load("preference_ablation")
dv = _load("dpo_vs_trl")


# ----------------------------------------------------------------------------- bench_common


def test_spread_and_median_spread():
    s = bc.spread([1.0, 2.0, 3.0, None, float("nan")])
    assert s["n"] == 3 and s["mean"] == 2.0 and s["sd"] == 1.0 and s["min"] == 1.0 and s["max"] == 3.0
    assert bc.spread([5.0])["sd"] == 0.0
    assert bc.spread([])["mean"] is None
    m = bc.median_spread([4.0, 1.0, 3.0, 2.0])
    assert m["median"] == 2.5 and m["q1"] == 1.75 and m["q3"] == 3.25 and m["n"] == 4
    assert bc.median_spread([None])["median"] is None


def test_process_role():
    assert bc.process_role(["ray::TrainerRank.train_pairs"]) == "TrainerRank"
    assert bc.process_role(["ray::RolloutWorker"]) == "RolloutWorker"
    assert bc.process_role(["ray::IDLE"]) == "ray_idle_worker"
    assert (
        bc.process_role(["/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server", "--x"])
        == "ray_daemons"
    )
    assert bc.process_role(["/usr/bin/python", "-m", "rl.cli"]) is None  # inherits its parent's role
    worker = [
        "/venv/bin/python",
        "/venv/lib/python3.11/site-packages/ray/_private/workers/default_worker.py",
        "--x",
    ]
    assert (
        bc.process_role(worker) == "ray_idle_worker"
    )  # not yet an actor: looked up again on the next sample


def test_tree_sampler_sees_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; x = bytearray(64 * 2**20); time.sleep(3)"])
    try:
        time.sleep(1.0)
        with bc.TreeSampler(interval=0.05, root_role="me") as s:
            s.phase("work")
            time.sleep(0.3)
            s.phase(None)
        rep = s.report()
    finally:
        child.kill()
        child.wait()
    assert rep["rss_samples"] >= 2
    assert set(rep["peak_rss_by_role_gib"]) >= {"me"}
    assert (
        rep["peak_rss_by_role_gib"].get("me", 0) > 0.05
    )  # this process + the child's 64 MiB (role inherited)
    assert rep["peak_rss_tree_gib"] >= rep["peak_rss_largest_process_gib"] > 0
    assert "work" in rep["peak_rss_tree_by_phase_gib"]


# ----------------------------------------------------------------------------- preference_ablation


def metrics_rows():
    return [
        {
            "step": 0,
            "data/pairs": 12,
            "eval/greedy_acc": 0.5,
            "eval/pass_at_k": 0.7,
            "eval/reward_accuracy": 0.0,
        },
        {"step": 1, "timing/train": 4.0, "timing/ref_pass": 1.0, "timing/update": 2.5, "train/loss": 0.69},
        {
            "step": 2,
            "timing/train": 2.0,
            "timing/ref_pass": 0.5,
            "timing/update": 1.4,
            "train/loss": 0.60,
            "train/reward_accuracy": 0.75,
        },
        {
            "step": 2,
            "eval/greedy_acc": 0.6,
            "eval/pass_at_k": 0.8,
            "eval/reward_accuracy": 0.7,
            "eval/reward_margin": 0.2,
            "eval/dpo_loss": 0.6,
            "eval/pairs": 10,
        },
    ]


def test_summarise_run():
    s = pa.summarise_run(metrics_rows())
    assert s["steps"] == 2 and s["train_pairs"] == 12
    assert s["greedy_start"] == 0.5 and s["greedy_final"] == 0.6 and s["greedy_gain"] == pytest.approx(0.1)
    assert s["reward_accuracy_final"] == 0.7 and s["eval_dpo_loss_final"] == 0.6 and s["eval_pairs"] == 10
    assert s["seconds_per_step"] == 3.0 and s["ref_pass_s"] == 0.75 and s["update_s"] == pytest.approx(1.95)
    assert s["train_loss_first"] == 0.69 and s["train_loss_last"] == 0.60
    assert [p["step"] for p in s["curve"]] == [0, 2]
    # no final evaluation after step 0 -> no final numbers
    assert pa.summarise_run(metrics_rows()[:3])["greedy_final"] is None


def result(arm, seed, greedy, rew, secs=3.0, independent=None):
    rows = metrics_rows()
    rows[-1] = {**rows[-1], "eval/greedy_acc": greedy, "eval/reward_accuracy": rew}
    rows[1]["timing/train"] = rows[2]["timing/train"] = secs
    r = {
        "arm": arm,
        "seed": seed,
        "ok": True,
        "metrics": pa.summarise_run(rows),
        "claim": pa.CLAIMS[arm],
        "pairs_fingerprint": "fp",
        "process": {
            "peak_rss_tree_gib": 3.0,
            "wall_s": 60.0,
            "peak_rss_by_role_gib": {"TrainerRank": 2.0},
            "load_average_1min": {"mean": 1.0},
        },
    }
    if independent is not None:
        r["independent_eval"] = {"ok": True, "greedy_acc": independent, "pass_at_k": 0.9}
    return r


def test_flat_prefers_the_independent_evaluation():
    r = result("dpo", 0, greedy=0.6, rew=0.7, independent=0.65)
    f = pa.flat(r, {"ok": True, "greedy_acc": 0.55, "pass_at_k": 0.85})
    assert f["greedy_final"] == 0.65 and f["greedy_start"] == 0.55 and f["greedy_source"] == "eval_heldout"
    assert (
        f["greedy_gain"] == pytest.approx(0.1)
        and f["pass_at_k_final"] == 0.9
        and f["pass_at_k_start"] == 0.85
    )
    assert f["peak_rss_trainer_gib"] == 2.0 and f["reward_accuracy_final"] == 0.7
    loop = pa.flat(result("dpo", 0, greedy=0.6, rew=0.7))
    assert loop["greedy_final"] == 0.6 and loop["greedy_start"] == 0.5 and loop["greedy_source"] == "loop"
    no_base = pa.flat(r, None)
    assert (
        no_base["greedy_final"] == 0.65 and no_base["greedy_start"] is None and no_base["greedy_gain"] is None
    )


def test_aggregate_paired_differences_and_verdicts():
    results = [
        result("dpo", 0, 0.50, 0.6),
        result("dpo", 1, 0.60, 0.7),
        result("dpo", 2, 0.70, 0.8),
        result("cdpo", 0, 0.55, 0.6, secs=4.0),
        result("cdpo", 1, 0.62, 0.7, secs=4.0),
        result("cdpo", 2, 0.71, 0.8, secs=4.0),
        result("treg", 0, 0.40, 0.6),
        result("treg", 1, 0.70, 0.7),
        {"arm": "tgdpo", "seed": 0, "ok": False, "claim": pa.CLAIMS["tgdpo"]},
    ]
    s = pa.aggregate(results, ["dpo", "cdpo", "tgdpo", "treg"])
    assert s["dpo"]["greedy_final"]["mean"] == pytest.approx(0.6) and s["dpo"]["greedy_final"][
        "sd"
    ] == pytest.approx(0.1)
    assert s["dpo"]["verdict"] == "baseline"
    d = s["cdpo"]["minus_dpo"]["greedy_final"]
    assert d["n"] == 3 and d["values"] == pytest.approx([0.05, 0.02, 0.01])
    assert s["cdpo"]["verdict"].startswith("greedy_final above DPO in all 3 seed(s)")
    assert s["cdpo"]["minus_dpo"]["seconds_per_step"]["mean"] == pytest.approx(1.0)
    assert s["treg"]["verdict"].startswith("greedy_final mixed across 2 seeds")
    assert s["tgdpo"]["seeds"] == [] and s["tgdpo"]["verdict"] == "no finished run"
    assert s["cdpo"]["claim"]["paper"].startswith("cDPO")


def test_verdict_words():
    assert pa.verdict([], "m") == "no paired DPO run"
    assert pa.verdict([-0.1, -0.2], "m").startswith("m below DPO in all 2")
    assert pa.verdict([0.0, 0.0], "m").startswith("m equal to DPO")


def verify_report():
    trajs = [
        {
            "prompt_index": 3,
            "pair_index": 0,
            "length": 4,
            "critical_index": 2,
            "random": [{"position": 0}],
            "with": {},
            "without": {},
        },
        {"prompt_index": 5, "pair_index": 1, "length": 3, "critical_index": None, "random": []},
        {"prompt_index": 7, "pair_index": 2, "length": 5, "critical_index": 1, "random": [{"position": 4}]},
        {
            "prompt_index": 9,
            "pair_index": 3,
            "length": 6,
            "critical_index": 0,
            "random": [],
        },  # no weights row
    ]
    summary = {
        "trajectories": 4,
        "found": 3,
        "rollouts": 8,
        "ks": [1, 2],
        "random_positions": 2,
        "critical": {"with": {"1": 0.0, "2": 0.0}, "without": {"1": 0.5, "2": 0.7}},
        "random": {"with": {"1": 0.1, "2": 0.2}, "without": {"1": 0.2, "2": 0.3}},
    }
    return {"summary": summary, "trajectories": trajs}


def test_critical_check_and_pce_alignment():
    rows = [
        {"prompt_index": 3, "rejected_weight": [0.9, 0.8, 0.1, 0.7, 1.0]},  # + EOS slot
        {"prompt_index": 7, "rejected_weight": [0.5, 0.6, 0.2, 0.9, 0.3, 1.0]},
    ]
    c = pa.critical_check(verify_report(), rows)
    assert c["forced_critical_minus_forced_random"] == {"1": 0.3, "2": 0.4}
    assert c["pass_at_k"]["critical_forced"] == {"1": 0.5, "2": 0.7}
    al = c["pce_alignment"]
    assert al["n"] == 2 and al["skipped"] == 1
    assert al["mean_pce_at_critical"] == pytest.approx((0.1 + 0.6) / 2)
    assert al["mean_pce_at_random_positions"] == pytest.approx((0.9 + 0.3) / 2)
    # traj 1: k=2 has the lowest of 4 -> rank 0; traj 2: p=0.6 above 0.5, 0.2, 0.3 (3 of 4 others) -> 0.75
    assert al["mean_normalised_rank_of_critical"] == pytest.approx(0.375)
    assert al["argmin_pce_is_critical"] == 0.5 and al["argmin_chance"] == pytest.approx((1 / 4 + 1 / 5) / 2)
    assert "above forcing at random" in c["verdict"]
    assert pa.critical_check(None, rows) is None


def test_arm_overrides_share_everything_but_the_arm():
    a = pa.parse_args(["--quick", "--arms", "dpo", "cdpo", "tgdpo", "--out", "/tmp/x"])
    runs, data = Path("/tmp/x/runs"), Path("/tmp/x/pairs/data")
    o = {arm: pa.arm_overrides(a, arm, 1, data, runs) for arm in ("dpo", "cdpo", "tgdpo", "treg")}
    common = set(o["treg"]) - {"name=pabl_treg_s1", "logging.run_name=treg_s1"}
    for arm in ("dpo", "cdpo", "tgdpo"):
        rest = set(o[arm]) - common
        assert all(
            x.startswith(
                (
                    "name=",
                    "logging.run_name=",
                    "checkpoint.export_hf=",
                    "preference_data.",
                    "dpo.guidance_model=",
                )
            )
            for x in rest
        ), (arm, rest)
    assert (
        f"preference_data.source={data}" in o["dpo"]
        and "trainer.seed=1" in o["dpo"]
        and "rollout.seed=1" in o["dpo"]
    )
    assert (
        o["cdpo"][-1] == "preference_data.rejected_weight_field=rejected_weight"
    )  # after the common '' ones
    assert o["tgdpo"][-1] == f"dpo.guidance_model={runs / 'dpo_s1' / 'hf_model'}"
    assert "checkpoint.export_hf=true" in o["dpo"]
    assert (
        a.arms == ["dpo", "cdpo", "tgdpo"]
        and a.seeds == [0]
        and a.epochs == 0
        and "trainer.steps=2" in o["dpo"]
    )
    with pytest.raises(SystemExit):
        pa.parse_args(["--arms", "tgdpo"])  # needs the DPO arm's export


def test_summarise_only_resumes_from_result_files(tmp_path, monkeypatch):
    """--summarise-only (and --reuse) read arms/<arm>_s<seed>.json whose pairs fingerprint matches the pairs'
    manifest; a result for other pairs is ignored; the JSON has the summary and the critical-token check."""
    out = tmp_path / "work"
    args = ["--quick", "--out", str(out), "--summarise-only", "--seeds", "0", "1"]
    a = pa.parse_args(args)
    fp = pa.fingerprint(pa.pairs_settings(a))
    crit = out / "pairs" / "critical"
    (out / "pairs" / "data").mkdir(parents=True)
    crit.mkdir(parents=True)
    for f in ("train.jsonl", "test.jsonl"):
        (out / "pairs" / "data" / f).write_text("{}\n")
    (crit / "verify.json").write_text(json.dumps(verify_report()))
    (crit / "weighted_pairs.jsonl").write_text(
        json.dumps({"prompt_index": 3, "rejected_weight": [0.9, 0.8, 0.1, 0.7, 1]})
    )
    (out / "pairs" / "manifest.json").write_text(
        json.dumps(
            {
                "fingerprint": fp,
                "settings": {},
                "train_pairs": 12,
                "test_pairs": 10,
                "data": str(out / "pairs" / "data"),
                "critical_dir": str(crit),
            }
        )
    )
    arms = out / "arms"
    arms.mkdir()
    for arm, seed, g in (("dpo", 0, 0.5), ("cdpo", 0, 0.6), ("dpo", 1, 0.55), ("cdpo", 1, 0.5)):
        r = result(arm, seed, g, 0.7)
        r["pairs_fingerprint"] = fp if (arm, seed) != ("cdpo", 1) else "other-pairs"
        (arms / f"{arm}_s{seed}.json").write_text(json.dumps(r))
    monkeypatch.setattr(pa, "EVAL_SCRIPT", tmp_path / "absent.py")  # the loop's numbers (no base evaluation)
    pa.main(args)  # cdpo seed 1 has no usable result: left out (and said so)
    res = json.loads((out / "preference_ablation.json").read_text())
    assert (out / "preference_ablation.png").is_file()
    s = res["summary"]["arms"]
    assert s["dpo"]["seeds"] == [0, 1] and s["cdpo"]["seeds"] == [0]
    assert s["cdpo"]["minus_dpo"]["greedy_final"]["values"] == pytest.approx([0.1])
    assert res["summary"]["critical_tokens"]["found"] == 3
    assert res["machine"]["cores"] >= 1 and res["config"]["greedy_evaluation"].startswith(
        "the DPO loop's own"
    )


# ----------------------------------------------------------------------------- dpo_vs_trl


def test_batch_positions_and_digest():
    assert dv.batch_positions(0, 4, 12) == [0, 1, 2, 3]
    assert dv.batch_positions(2, 4, 12) == [8, 9, 10, 11]
    assert dv.batch_positions(3, 4, 12) == [
        0,
        1,
        2,
        3,
    ]  # the next epoch, in the same order (sequential sampler)
    assert dv.rows_digest([[1, 2], [3]]) == dv.rows_digest([[3], [1, 2]])
    assert dv.rows_digest([[1, 2], [3]]) != dv.rows_digest([[1, 2], [4]])


def test_dpo_vs_trl_summary():
    def step(i, s, **kw):
        return {
            "step": i,
            "seconds": s,
            "digest": "d",
            "tokens_real": 100,
            "tokens_completion": 20,
            "tokens_padded": 120,
            **kw,
        }

    steps = {
        "trl": [step(0, 9.0, ref_forward_s=1.0, optimizer_s=0.5, rest_s=7.5)]
        + [step(i, 2.0, ref_forward_s=0.5, optimizer_s=0.2, rest_s=1.3) for i in range(1, 4)],
        "tokencredit": [step(0, 20.0, ref_pass_s=1, update_s=2, outside_rank_s=17, collate_s=0.01)]
        + [
            step(i, x, ref_pass_s=0.4, update_s=1.0, outside_rank_s=x - 1.4, collate_s=0.01)
            for i, x in ((1, 1.6), (2, 1.8), (3, 2.2))
        ],
        "inproc": [step(0, 5.0, ref_pass_s=1, update_s=2, outside_rank_s=2)]
        + [step(i, 1.5, ref_pass_s=0.4, update_s=1.0, outside_rank_s=0.1) for i in range(1, 4)],
    }
    steps["inproc"][2]["digest"] = "other"
    s = dv.summarise(steps, warmup=1, sides=["trl", "tokencredit", "inproc"])
    tc = s["sides"]["tokencredit"]
    assert tc["seconds_per_step"]["median"] == 1.8 and tc["steps_measured"] == 3
    assert (
        tc["ratio_to_trl_per_round"]["median"] == pytest.approx(0.9) and tc["ratio_of_medians_to_trl"] == 0.9
    )
    assert (
        tc["same_token_ids_as_trl"] == "4/4 steps"
        and s["sides"]["inproc"]["same_token_ids_as_trl"] == "3/4 steps"
    )
    assert s["sides"]["trl"]["ref_forward_s"] == 0.5 and tc["ref_pass_s"] == 0.4
    assert s["ray_overhead_s_per_step"]["median"] == pytest.approx(0.3)
    assert dv.verdict(s).startswith("meets the target")
    slow = dv.summarise(
        {"trl": steps["trl"], "tokencredit": [step(i, 3.0) for i in range(4)]}, 1, ["trl", "tokencredit"]
    )
    assert dv.verdict(slow).startswith("MISSES the target") and "1.500" in dv.verdict(slow)
