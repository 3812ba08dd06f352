"""benchmarks/credit_ablation.py: its pure parts - statistics, verdicts, curves, a run's record, the summary
and claims on made-up runs, the plan (overrides, fingerprints, D3S schedule) and the duration estimate."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


sys.path.insert(0, str(ROOT / "benchmarks"))
import credit_ablation as ab  # noqa: E402  (benchmarks/: the command line, summary and claims)
import credit_ablation_plan as ca_plan  # noqa: E402
import credit_ablation_report as ca_report  # noqa: E402
import credit_ablation_run as ca_run  # noqa: E402
import seed_stats as stats  # noqa: E402


def test_t_table() -> None:
    assert stats.t975(4) == pytest.approx(2.776)
    assert stats.t975(22) == pytest.approx(2.086)  # between rows: the smaller df's (larger, conservative) quantile
    assert stats.t975(1000) == pytest.approx(1.96)
    assert stats.t975(0) == math.inf


def test_spread_by_hand() -> None:
    s = stats.spread([0.2, 0.4, 0.6, None])
    assert s["n"] == 3 and s["missing"] == 1 and s["mean"] == pytest.approx(0.4) and s["sd"] == pytest.approx(0.2)
    half = 4.303 * 0.2 / math.sqrt(3)
    assert s["ci95"] == pytest.approx([0.4 - half, 0.4 + half], abs=1e-4)
    assert stats.spread([0.5])["sd"] is None and stats.spread([])["mean"] is None


def test_compare_verdicts() -> None:
    base = [0.30, 0.32, 0.34]  # sd 0.02
    # pooled sd 0.02, threshold = 2.776 * 0.02 * sqrt(2/3) = 0.0453
    up = stats.compare([0.40, 0.42, 0.44], base, +1)
    assert up["threshold"] == pytest.approx(0.0453, abs=1e-4) and up["diff"] == pytest.approx(0.10)
    assert up["verdict"] == "supports"
    assert stats.compare([0.40, 0.42, 0.44], base, -1)["verdict"] == "refutes"
    assert stats.compare([0.33, 0.35, 0.37], base, +1)["verdict"] == "cannot tell at this scale"
    assert stats.compare([0.9], base, +1)["verdict"].startswith("cannot tell (fewer than 2")
    # identical values: the floor (one held-out prompt) decides
    assert stats.compare([0.5, 0.5], [0.5, 0.5], +1, floor=0.005)["verdict"] == "cannot tell at this scale"
    assert stats.compare([0.51, 0.51], [0.5, 0.5], +1, floor=0.005)["verdict"] == "supports"


def test_compare_to_constant() -> None:
    assert stats.compare_to_constant([0.20, 0.22, 0.21], 0.30, below=True)["verdict"] == "supports"
    assert stats.compare_to_constant([0.40, 0.42, 0.41], 0.30, below=True)["verdict"] == "refutes"
    assert stats.compare_to_constant([0.10, 0.50, 0.30], 0.30, below=True)["verdict"] == "cannot tell at this scale"


def test_combine() -> None:
    assert stats.combine(["supports", "supports"]) == "supports"
    assert stats.combine(["supports", "refutes"]) == "refutes"
    assert stats.combine(["supports", "cannot tell at this scale"]) == "cannot tell at this scale"


CURVE = [{"step": 0, "trainer_s": 0.0, "greedy": 0.1}, {"step": 5, "trainer_s": 50.0, "greedy": 0.3},
         {"step": 10, "trainer_s": 100.0, "greedy": 0.5}]


def test_interp_crossing_area() -> None:
    assert stats.interp(CURVE, "trainer_s", 25.0) == pytest.approx(0.2)
    assert stats.interp(CURVE, "step", 10) == pytest.approx(0.5)
    assert stats.interp(CURVE, "trainer_s", 101.0) is None
    assert stats.first_crossing(CURVE, "trainer_s", 0.4) == pytest.approx(75.0)
    assert stats.first_crossing(CURVE, "trainer_s", 0.05) == 0.0
    assert stats.first_crossing(CURVE, "trainer_s", 0.6) is None
    # trapezoids: (5 * 0.2 + 5 * 0.4) / 10 = 0.3
    assert stats.area_under(CURVE, "step", 10) == pytest.approx(0.3)
    # up to step 5 only: 0.2; past the end: None
    assert stats.area_under(CURVE, "step", 5) == pytest.approx(0.2)
    assert stats.area_under(CURVE, "step", 7.5) == pytest.approx((5 * 0.2 + 2.5 * (0.3 + 0.4) / 2) / 7.5)
    assert stats.area_under(CURVE, "step", 11) is None


def test_band_over_seeds() -> None:
    other = [{"step": 0, "trainer_s": 0.0, "greedy": 0.1}, {"step": 5, "trainer_s": 40.0, "greedy": 0.5},
             {"step": 10, "trainer_s": 80.0, "greedy": 0.7}]
    b = stats.band([CURVE, other], "step")
    assert b["x"] == [0, 5, 10] and b["mean"] == pytest.approx([0.1, 0.4, 0.6])
    assert b["sd"][1] == pytest.approx(math.sqrt(0.02), abs=1e-4)
    bt = stats.band([CURVE, other], "trainer_s", points=5)
    assert bt["x"][-1] == pytest.approx(80.0)  # the shortest curve's end
    assert bt["x"] == pytest.approx([0, 20, 40, 60, 80])
    # at 80 s: CURVE 0.3 + 0.2 * 30 / 50 = 0.42, other 0.7
    assert bt["mean"][-1] == pytest.approx((0.42 + 0.7) / 2)


def rows_for(trainer: list[float], tokens: list[float], total: list[float], rows_bw: list[float]) -> list[dict]:
    out = []
    for i, (t, tok, tot, rb) in enumerate(zip(trainer, tokens, total, rows_bw)):
        out.append({"step": i + 1, "timing/old_logp": t / 2, "timing/credit": 0.0, "timing/update": t / 2,
                    "timing/step": t + 5.0, "timing/generation": 4.0, "batch/loss_tokens": tok, "batch/tokens": tot,
                    "batch/loss_tokens_frac": tok / tot, "train/rows_in_backward": rb, "reward/total/mean": 0.2})
    return out


def test_run_curve_and_totals() -> None:
    rows = rows_for([10, 10, 20, 20], [100, 100, 300, 300], [1000, 1000, 1000, 1000], [16, 16, 64, 64])
    rows.insert(0, {"step": 0, "eval/greedy_acc": 0.1})
    evals = {2: {"greedy_acc": 0.2, "pass_at_k": 0.5, "k": 8, "sample_acc": 0.1},
             4: {"greedy_acc": 0.4, "pass_at_k": None, "k": 1, "sample_acc": 0.2}}
    curve = ca_run.run_curve(rows, evals, {"greedy_acc": 0.1, "pass_at_k": 0.3, "k": 8, "sample_acc": 0.05})
    assert [p["step"] for p in curve] == [0, 2, 4]
    assert [p["trainer_s"] for p in curve] == [0.0, 20.0, 60.0]
    assert [p["wall_s"] for p in curve] == [0.0, 30.0, 80.0]
    assert curve[1]["pass_at_k"] == 0.5 and curve[0]["greedy"] == 0.1
    t = ca_run.totals(rows, 2, 64)
    assert t["tokens_in_backward"] == 200 and t["tokens_in_backward_frac"] == pytest.approx(0.1)
    assert t["rows_in_backward_frac"] == pytest.approx(0.25) and t["trainer_s"] == 20.0
    assert ca_run.totals(rows, 4, 64)["tokens_in_backward_frac"] == pytest.approx(0.2)


def make_run(arm: str, seed: int, greedy_s: float, pass_s: float, trainer_per_step: float, frac: float,
             steps: int = 10, extra_steps: int = 0, end_greedy: float | None = None) -> dict:
    """A made-up run: greedy rises linearly from 0.1 to ``greedy_s`` at step S, (D3S) on to ``end_greedy``."""
    curve = [{"step": 0, "trainer_s": 0.0, "wall_s": 0.0, "greedy": 0.1, "pass_at_k": 0.3, "k": 8, "sample_acc": 0.05}]
    for s in range(5, steps + 1, 5):
        g = 0.1 + (greedy_s - 0.1) * s / steps
        curve.append({"step": s, "trainer_s": trainer_per_step * s, "wall_s": 0.0, "greedy": g,
                      "pass_at_k": pass_s if s == steps else None, "k": 8 if s == steps else 1, "sample_acc": g})
    for s in range(steps + 5, steps + extra_steps + 1, 5):
        g = greedy_s + ((end_greedy or greedy_s) - greedy_s) * (s - steps) / extra_steps
        curve.append({"step": s, "trainer_s": trainer_per_step * s, "wall_s": 0.0, "greedy": g,
                      "pass_at_k": pass_s if s == steps + extra_steps else None, "k": 8, "sample_acc": g})
    tot = {"tokens_in_backward": int(1000 * frac), "tokens_in_backward_frac": frac, "rows_in_backward_frac": frac,
           "trainer_s": trainer_per_step * steps, "wall_s": 0.0}
    return {"arm": arm, "seed": seed, "curve": curve, "at_equal_steps": tot, "load": {"train": {"mean": 1.0, "max": 2.0}}}


def test_summary_and_claims_on_made_up_runs() -> None:
    noise = [-0.01, 0.0, 0.01]
    runs = {
        "grpo": [make_run("grpo", i, 0.40 + n, 0.60 + n, 10.0, 1.0) for i, n in enumerate(noise)],
        # D3S: a quarter of the tokens, half the time per step; after S it goes on to 0.5 by step 20
        "d3s": [make_run("d3s", i, 0.35 + n, 0.55 + n, 5.0, 0.25, extra_steps=10, end_greedy=0.5 + n)
                for i, n in enumerate(noise)],
        "thr_exploit": [make_run("thr_exploit", i, 0.50 + n, 0.60 + n, 13.0, 1.0) for i, n in enumerate(noise)],
        "thr_explore": [make_run("thr_explore", i, 0.40 + n, 0.50 + n, 13.0, 1.0) for i, n in enumerate(noise)],
        "tw": [make_run("tw", i, 0.41 + 3 * n, 0.60, 14.0, 1.0) for i, n in enumerate(noise)],
    }
    arms = {name: ab.summarise_arm(rs, 10) for name, rs in runs.items()}
    g = arms["grpo"]
    assert g["greedy"]["mean"] == pytest.approx(0.40) and g["trainer_s"]["mean"] == pytest.approx(100.0)
    assert arms["d3s"]["end"]["greedy"]["mean"] == pytest.approx(0.5)
    for name in arms:
        arms[name]["vs_grpo"] = ab.equal_time_and_accuracy(runs[name], g, runs["grpo"], 10)
    vs = arms["d3s"]["vs_grpo"]
    # D3S's curve (seed with no noise): 0.35 at 50 s, 0.425 at 75 s, 0.5 at 100 s -> 0.40 (GRPO's mean) at
    # 66.7 s; the other seeds 70 s and 63.3 s; at GRPO's 100 s: 0.5
    assert vs["reached"] == 3 and vs["trainer_s_to_grpo_greedy"]["mean"] == pytest.approx(66.67, abs=0.01)
    assert vs["trainer_s_to_grpo_greedy"]["values"] == pytest.approx([70.0, 66.67, 63.33], abs=0.01)
    assert vs["greedy_at_grpo_trainer_s"]["mean"] == pytest.approx(0.5)
    claims = {c["id"]: c for c in ab.judge_claims(arms, runs, 10, 0.005)}
    d3s = claims["d3s"]["checks"]
    assert d3s[0]["verdict"] == "supports"  # 25% < 30%
    assert d3s[1]["verdict"] == "supports"  # 0.5 vs 0.40 at equal time; threshold 2.776 * 0.01 * sqrt(2/3)
    assert d3s[2]["verdict"] == "supports"  # 66.7 s < 100 s
    assert d3s[3]["verdict"] == "arm lower" and d3s[3]["counts"] is False  # equal steps (information only)
    assert claims["d3s"]["verdict"] == "supports"
    assert claims["thr_exploit"]["verdict"] == "supports"
    assert claims["thr_explore"]["verdict"] == "refutes"  # pass@k 0.5 < 0.6
    assert claims["tw"]["verdict"] == "cannot tell at this scale"


def test_d3s_never_reaching_within_a_longer_run_refutes() -> None:
    noise = [-0.01, 0.0, 0.01]
    runs = {"grpo": [make_run("grpo", i, 0.40 + n, 0.6, 10.0, 1.0) for i, n in enumerate(noise)],
            "d3s": [make_run("d3s", i, 0.20 + n, 0.5, 10.0 / 3, 0.25, extra_steps=20, end_greedy=0.25)
                    for i, n in enumerate(noise)]}
    arms = {name: ab.summarise_arm(rs, 10) for name, rs in runs.items()}
    arms["d3s"]["vs_grpo"] = ab.equal_time_and_accuracy(runs["d3s"], arms["grpo"], runs["grpo"], 10)
    (claim,) = ab.judge_claims(arms, runs, 10, 0.005)
    assert claim["checks"][2]["verdict"] == "refutes" and claim["verdict"] == "refutes"


def plan(**kw):
    args = ab.parse_args(["--out", "/tmp/x", "--name", "t", *kw.pop("argv", [])])
    return ca_plan.Plan(args)


def test_plan_overrides_and_fingerprint(tmp_path: Path) -> None:
    p = plan()
    assert (ca_plan.STEPS, ca_plan.EVAL_EVERY) == (10, 5) and p.steps == 10 and p.d3s_steps == 15  # 10 + 10/2
    assert ca_plan.default_d3s_steps(40, 5) == 60 and ca_plan.default_d3s_steps(2, 2) == 4
    assert ca_plan.default_d3s_steps(12, 4) == 20  # 12 + 6, rounded up to whole evaluation intervals of 4
    d = p.overrides("d3s", 1, tmp_path)
    assert "trainer.steps=15" in d and f"algorithm.d3s.schedule_steps={ca_plan.STEPS}" in d
    assert "trainer.seed=43" in d and "rollout.seed=1" in d and "algorithm.d3s.n_batch=0.5" in d
    g = p.overrides("grpo", 0, tmp_path)
    assert f"trainer.steps={ca_plan.STEPS}" in g and not any("d3s" in o for o in g)
    assert f"checkpoint.export_hf_every={ca_plan.EVAL_EVERY}" in g and "eval.every=0" in g
    assert p.fingerprint("grpo", 0) != p.fingerprint("grpo", 1) != p.fingerprint("tw", 1)
    assert p.fingerprint("grpo", 0) == plan().fingerprint("grpo", 0)
    assert plan(argv=["--steps", "30"]).fingerprint("grpo", 0) != p.fingerprint("grpo", 0)
    p = plan(argv=["--steps", "40", "--d3s-steps", "80", "--final-k", "8"])
    assert ca_plan.eval_steps(p, "grpo") == list(range(5, 41, 5))
    assert ca_plan.k_at(p, "grpo", 40) == 8 and ca_plan.k_at(p, "grpo", 35) == 1 and ca_plan.k_at(p, "d3s", 40) == 8
    assert ca_plan.k_at(p, "d3s", 80) == 8 and ca_plan.k_at(p, "d3s", 45) == 1


def test_overrides_load_as_a_config(tmp_path: Path) -> None:
    from rl.config import load_config

    p = plan()
    cfg = load_config(p.recipe, p.overrides("d3s", 2, tmp_path))
    assert cfg.algorithm.d3s.schedule_steps == ca_plan.STEPS and cfg.trainer.steps == p.d3s_steps
    assert cfg.data.task.digits == 2 and cfg.data.task.ops == ["add"] and cfg.rollout.max_tokens == 32
    assert cfg.eval.num_prompts == 200 and cfg.eval.pass_k == ca_plan.INLOOP_K and cfg.trainer.seed == 44
    assert cfg.checkpoint.export_hf_every == ca_plan.EVAL_EVERY and cfg.eval.every == 0
    inloop = load_config(p.recipe, plan(argv=["--eval", "inloop"]).overrides("grpo", 0, tmp_path))
    assert inloop.eval.pass_k == ca_plan.FINAL_K and inloop.eval.every == ca_plan.EVAL_EVERY
    assert inloop.checkpoint.export_hf_every == 0
    for arm in ca_plan.ARMS:
        load_config(p.recipe, p.overrides(arm, 0, tmp_path))


def test_quick_defaults_and_guards() -> None:
    a = ab.parse_args(["--quick"])
    assert a.steps == 2 and a.d3s_steps == 4 and a.seeds == [0] and a.arms == ["grpo", "d3s"]
    assert a.out == Path("/tmp/credit_ablation_quick") and a.name == "credit_ablation_quick"
    assert f"eval.num_prompts={ca_plan.QUICK_PROMPTS}" in a.extra
    with pytest.raises(SystemExit):
        ab.parse_args(["--quick", "--out", str(ca_plan.RESULTS), "--name", "credit_ablation"])
    with pytest.raises(SystemExit):
        ab.parse_args(["--steps", "12", "--eval-every", "5"])


def test_estimate_from_a_smoke() -> None:
    def run(arm, wall, trainer, **extra):
        return {"arm": arm, "per_step": {"wall_s": wall, "trainer_s": trainer, **extra},
                "seconds": {"startup": 100.0},
                # 50 prompts x (1 + 8) completions in 90 s: 0.2 s per completion
                "eval_seconds": [{"k": 8, "num_prompts": 50, "startup": 20.0, "total": 110.0}]}

    runs = [run("grpo", 30.0, 20.0), run("d3s", 18.0, 8.0, wall_s_schedule=15.0, wall_s_after_schedule=21.0)]
    e = ab.estimate_seconds(runs, None, list(ca_plan.ARMS), 3, 40, 80, 5, num_prompts=200)
    # 200 prompts: 20 + (1 + k) * 200 * 0.2, k = 1 between and FINAL_K = 4 at the ends
    assert ca_plan.FINAL_K == 4
    assert e["eval_s_curve"] == pytest.approx(100.0) and e["eval_s_final"] == pytest.approx(220.0)
    grpo = e["per_arm"]["grpo"]
    assert grpo["seconds_per_run"] == round(100 + 40 * 30 + 7 * 100 + 220)
    d3s = e["per_arm"]["d3s"]
    assert d3s["seconds_per_step"] == pytest.approx(18.0)  # (40 * 15 + 40 * 21) / 80
    assert d3s["seconds_per_run"] == round(100 + 80 * 18 + 14 * 100 + 2 * 220)
    assert e["per_arm"]["tw"]["seconds_per_step"] == pytest.approx(10 + 20 * ab.TRAINER_RATIO_PRIOR["tw"], abs=0.05)
    assert e["total_s"] == round(220 + 3 * sum(v["seconds_per_run"] for v in e["per_arm"].values()))
    # a smoke whose runs evaluated 50 prompts x (1 + 8) in-loop: 90 s of its start-up are that evaluation,
    # a full run's (200 prompts, greedy + pass@1) takes 80 s
    for r in runs:
        r.update({"inloop_k": 8, "inloop_prompts": 50})
    e2 = ab.estimate_seconds(runs, None, list(ca_plan.ARMS), 3, 40, 80, 5, num_prompts=200)
    assert e2["startup_s"] == pytest.approx(100 - 90 + 80)


def test_summary_table_and_plot_on_made_up_runs(tmp_path: Path, capsys) -> None:
    noise = [-0.01, 0.0, 0.01]
    runs = {"grpo": [make_run("grpo", i, 0.40 + n, 0.6 + n, 10.0, 1.0) for i, n in enumerate(noise)],
            "d3s": [make_run("d3s", i, 0.35 + n, 0.55 + n, 5.0, 0.25, extra_steps=10, end_greedy=0.5 + n)
                    for i, n in enumerate(noise)],
            "tw": [make_run("tw", i, 0.41 + n, 0.6, 14.0, 1.0) for i, n in enumerate(noise)]}
    p = plan(argv=["--steps", "10", "--d3s-steps", "20"])
    result = ab.summarise(p, runs, [0, 1, 2], {"greedy_acc": 0.1, "pass_at_k": 0.3, "k": 8}, None)
    assert result["task_check"]["learns"] and result["task_check"]["headroom_left"]
    assert result["command"] == ("python benchmarks/credit_ablation.py --arms grpo d3s tw --seeds 0 1 2 --steps 10 "
                                 "--d3s-steps 20 --eval-every 5 --final-k 4 --curve-k 1 --checkpoint-every 10 "
                                 "--eval heldout")
    assert [c["id"] for c in result["claims"]] == ["d3s", "tw"]
    assert result["arms"]["d3s"]["trainer_time_ratio_to_grpo"] == pytest.approx(0.5)
    ca_report.print_table(result)
    out = capsys.readouterr().out
    assert "SUPPORTS" in out and "task check" in out and "(end)" in out
    ca_report.plot(result, tmp_path / "x.png")
    assert (tmp_path / "x.png").stat().st_size > 10_000


def test_cached_evaluation_settings_ignore_the_memory_share_only() -> None:
    base = ["--recipe", "r.yaml", "--override", "data.task.digits=2", "--k", "8"]
    assert ca_run._same_numbers(base + ["--override", "rollout.memory_fraction=0.1"], base)
    assert not ca_run._same_numbers(base, ["--recipe", "r.yaml", "--override", "data.task.digits=3", "--k", "8"])
    assert not ca_run._same_numbers(base, base[:-1] + ["1"])


def test_d3s_shorter_in_trainer_time_than_grpo_is_compared_at_its_own_end() -> None:
    """D3S's whole run spends less trainer time than GRPO's S steps (as on the committed run): equal time is
    then D3S's last point against GRPO's curve interpolated at the same trainer seconds."""
    noise = [-0.01, 0.0, 0.01]
    runs = {"grpo": [make_run("grpo", i, 0.40 + n, 0.6, 10.0, 1.0) for i, n in enumerate(noise)],
            # 3 trainer s a step, 20 steps: ends at 60 s (GRPO: 100 s) with greedy 0.45 + n
            "d3s": [make_run("d3s", i, 0.35 + n, 0.5, 3.0, 0.25, extra_steps=10, end_greedy=0.45 + n)
                    for i, n in enumerate(noise)]}
    arms = {name: ab.summarise_arm(rs, 10) for name, rs in runs.items()}
    arms["d3s"]["vs_grpo"] = ab.equal_time_and_accuracy(runs["d3s"], arms["grpo"], runs["grpo"], 10)
    assert arms["d3s"]["vs_grpo"]["greedy_at_grpo_trainer_s"]["n"] == 0  # never spent GRPO's 100 s
    (claim,) = ab.judge_claims(arms, runs, 10, 0.005)
    eq = claim["checks"][1]
    # GRPO at 60 s: between (50 s, 0.25 + n/2) and (100 s, 0.40 + n), a fifth of the way: 0.28 + 0.6 n
    assert eq["at_trainer_s"] == pytest.approx(60.0)
    assert eq["arm"]["values"] == pytest.approx([0.44, 0.45, 0.46], abs=1e-4)
    assert eq["grpo"]["values"] == pytest.approx([0.274, 0.28, 0.286], abs=1e-4)
    assert eq["verdict"] == "supports" and "D3S's end" in eq["check"]
