"""Credit-module ablation: GRPO vs D3S vs THR(p>0) vs THR(p<0) vs TW, several seeds, on a task with headroom.

Why a new task (issue 14). The first version ran one seed of the quickstart (1-digit + - *):
GRPO reached 0.97 held-out greedy accuracy in 12 steps and every arm ended within 1-3 of 100
prompts of every other, so the differences were noise. This version runs, on every arm, the
same recipe with these changes (``TASK``; the arms differ only in ``algorithm.credit``):

* **2-digit addition** ("What is 23 + 58? Answer with just the number.", ``data.task.ops=[add]
  digits=2``), 2000 training / 200 held-out prompts. benchmarks/results/base_accuracy.json
  (SmolLM2-135M-Instruct, 24 tokens): greedy 0.15 (0.26 when it writes an equation, 0.04 when
  it rambles), sampled accuracy 0.069 at T=0.7 and a third of the 8-sample groups mixed
  (0.325), so GRPO gets a signal on ~2.6 of 8 prompts a step, has room from 0.15 up, and the
  credit modules see both all-wrong groups (D3S drops them) and mixed ones (THR's positive set).
  Rejected: three 1-digit operands (``add1x3``: greedy 0.11, 35% mixed - as hard, but a
  format the model writes less often), 2-digit subtraction / 3-digit addition (greedy 0.04-0.05,
  10% mixed: too little signal for 8x8 groups), countdown (not measured by base_accuracy; a
  135M model that gets 15% of 2-digit sums barely solves it, so every arm would stay near 0).
* **longer completions**: 32 new tokens (the quickstart's 16 cut off half the greedy
  answers at 24 tokens: greedy EOS rate 0.52 in base_accuracy.json).
* **more steps**: 40 steps of 8 prompts x 8 samples were planned, lr 2e-5 constant, T=0.7 (quickstart's);
  the committed run has 10 (``STEPS``): 3 seeds x 5 arms at 40 steps would take ~7 h on 2 cores (the
  --quick estimate), 10 steps ~1.6 h, and GRPO still has headroom at step 10 (0.69 held-out greedy).
* Probes (``PROBE``, with their load average): at 32 tokens the base model's held-out greedy
  accuracy is 0.18 and its sampled accuracy at T=0.7 0.08 (100 prompts; mean greedy length 21
  tokens, so 32 tokens cut off few answers). The planned 6-step GRPO probe could not measure
  the learning curve: other jobs held the 2 cores at load 16-33 and step 1 alone took over
  6 minutes (killed at the 10-minute probe budget). What 2-digit addition leaves GRPO: the
  README's task note (errors are "mostly real arithmetic errors, which 12 steps cannot fix")
  says a long budget is needed and the ceiling is far; the summary's ``task_check`` says, after
  the full run, whether GRPO learned (gain over the base > 2 binomial SE) and kept headroom
  (<= 0.85), so a task that turns out flat or saturated is flagged, not silently reported.

Arms (every one the same recipe, seeds and budget; ``ARMS``):

    grpo        no credit module
    d3s         credit=[d3s] as recipes/grpo_d3s.yaml (spec schedule N_s G/4 -> G, K 20% -> 100%,
                cross-group n_batch=0.5), schedule over the GRPO step budget (below)
    thr_exploit credit=[thr], thr.p=+0.5  (paper: higher greedy accuracy)
    thr_explore credit=[thr], thr.p=-0.5  (paper: higher pass@k)
    tw          credit=[tw], tw.alpha=1.7 (paper: faster learning)

Seeds (``--seeds 0 1 2``): seed s runs with trainer.seed = 42 + s (data order, sampling, init)
and rollout.seed = s (the engine's sampler), so seed 0 is the recipe's own seeds.

D3S at equal steps, equal trainer time and equal accuracy. D3S's schedule is tied to training
progress p = step / (steps - 1); it trains on a fraction of rows and tokens, so at equal steps
it has also spent less trainer time. To compare it at GRPO's trainer time and at GRPO's
accuracy, its run must go on past GRPO's step budget S - but stretching ``trainer.steps`` would
stretch the schedule too (a different method). So the D3S arm runs ``--d3s-steps`` (default
S + S/2, rounded up to whole evaluation intervals) steps with ``algorithm.d3s.schedule_steps=S``
(rl/credit/config.py): its first S steps are exactly the S-step D3S run (tests/rl/credit/test_d3s_schedule_steps.py), after which it goes on
at the final values (all non-zero-advantage rows of N_s = G, all tokens, cross-group half).
One run then gives all three comparisons: at step S (equal steps), its accuracy at GRPO's
trainer seconds (equal time, interpolated between evaluations) and the trainer seconds it
needs to reach GRPO's final accuracy (equal accuracy). A schedule that follows wall time
was rejected: it would make the selection depend on machine load (not reproducible).

Evaluation. benchmarks/eval_heldout.py (independent: a fresh process per saved folder, vLLM,
the training prompts' tokens and reward): the base model once (step 0) and every run's
``hf_model_step_N`` exports (``checkpoint.export_hf_every = --eval-every``) on the 200 held-out
prompts: greedy accuracy at every point, pass@k (k = ``--final-k``, 4) at step S and at the
run's last step, one sample per prompt (``--curve-k`` 1: pass@1) at the points in between (the
sampled part of an evaluation is most of its cost). The pass@k sampler seed is the same
for every evaluation. A run's own evaluation after its last step (greedy and pass@1 on the
same prompts; it cannot be turned off) is kept as a cross-check (``inloop_final``). Without eval_heldout.py (or with ``--eval inloop``) the run's own
in-loop evaluation every ``--eval-every`` steps is used. Weights are deleted after a run is
evaluated (``--keep-weights`` keeps them).

Reported per arm, mean, sample SD and 95% t-interval over seeds: held-out greedy accuracy and
pass@k at step S; tokens in the backward pass (summed over S steps, and as a fraction of the
completion tokens); trainer seconds (old-policy pass + credit + update, summed over steps:
generation, weight sync and evaluation are the same work in every arm and left out); the
area under the greedy-vs-step curve over [0, S] (mean accuracy over training: "learns
faster"); greedy accuracy at GRPO's trainer seconds. Each paper's claim sits next to the
measurement with a verdict (``CLAIMS``, rule in ``compare``): a difference supports or refutes a
claim only when it exceeds the two-sample 95% t threshold of the seed spread
(t_{0.975, n1+n2-2} * pooled SD * sqrt(1/n1 + 1/n2), and at least one held-out prompt);
otherwise "cannot tell at this scale".

Cost and resuming. Arms run one after another (seed-major: every arm of seed 0, then seed 1,
... so a partial ablation is balanced), each ``tokencredit train`` in its own process under
``--runs-dir``; each finished arm x seed writes one result file ``<out>/<name>_runs/<arm>_seed<s>.json``
and is never re-run (a result of a different plan stops the script). A killed run resumes from
its newest checkpoint (``checkpoint.every = --checkpoint-every``); a trained but unevaluated run
is only evaluated. The 1-minute load average is sampled during every training and evaluation
and kept with every result (mean, max, start and end). Run it on a quiet machine.

    python benchmarks/credit_ablation.py --seeds 0 1 2     # the full ablation (hours: see --quick's estimate)
    python benchmarks/credit_ablation.py --reuse           # re-summarise the finished arm x seed results only
    python benchmarks/credit_ablation.py --quick           # smoke: 2 steps, 1 seed, grpo + d3s -> /tmp; prints
                                                           # the full run's command and estimated duration

Writes ``<out>/<name>.json`` (default benchmarks/results/credit_ablation.json) and ``.png``
and prints the table and the claims.

This file: the summary, the claims and the command line. Next to it: credit_ablation_plan.py (the
task, the arms, one run's overrides), credit_ablation_run.py (training and evaluating one arm x seed),
credit_ablation_report.py (table and figure), seed_stats.py (the statistics and curve arithmetic).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from credit_ablation_plan import (  # noqa: E402
    ARMS,
    EVAL_EVERY,
    FINAL_K,
    INLOOP_K,
    QUICK_ARMS,
    QUICK_PROMPTS,
    RECIPE,
    RESULTS,
    ROOT,
    STEPS,
    TASK,
    Plan,
    default_d3s_steps,
)
from credit_ablation_report import plot, print_table  # noqa: E402
from credit_ablation_run import base_evaluation, point_at, run_one  # noqa: E402
from seed_stats import area_under, band, combine, compare, compare_to_constant, first_crossing, interp, spread  # noqa: E402

# The probes behind the choice (GRPO on TASK with the quickstart recipe, logs in /tmp/abl_probe on 2026-12-04).
PROBE: dict = {
    "command": "timeout 600 python -m rl.cli train recipes/quickstart.yaml <TASK> trainer.steps=6 eval.num_prompts=100 "
               "eval.pass_k=1 checkpoint.export_hf=false logging.save_batches=false",
    "step0_heldout_100_prompts": {"greedy": 0.18, "sample_acc_T0.7": 0.08, "greedy_len_tokens": 21.0},
    "base_accuracy_json_24_tokens": {"greedy": 0.15, "greedy_equation_form": 0.26, "greedy_other_form": 0.04,
                                     "sample_acc_T0.7": 0.069, "mixed_groups_T0.7": 0.325, "greedy_eos_rate": 0.52},
    "load_average_1min": {"start": 11.2, "during": "31-33", "end": 16.6},
    "outcome": "step 1's update took > 6 min at load ~30 (others' jobs on the 2 cores); killed by the 600 s "
               "timeout: no learning curve. A first attempt (eval 200 prompts x pass@8 at step 0, load 5.5 -> 22) "
               "did not finish its step-0 evaluation in 12 min.",
}

# Trainer time of THR / TW relative to GRPO (benchmarks/results/credit_ablation.json, 3 seeds, 2026-12-04):
# used only to estimate the full run's duration for arms --quick skips.
TRAINER_RATIO_PRIOR = {"thr_exploit": 1.25, "thr_explore": 1.26, "tw": 1.39}

CLAIMS = [
    {"id": "d3s", "arm": "d3s", "paper": "D3S (arXiv 2509.22115)",
     "claim": "reaches GRPO's accuracy with less trainer time, with under 30% of the tokens in backward"},
    {"id": "thr_exploit", "arm": "thr_exploit", "paper": "THR p > 0 (arXiv 2510.03669)",
     "claim": "higher held-out greedy accuracy than GRPO"},
    {"id": "thr_explore", "arm": "thr_explore", "paper": "THR p < 0 (arXiv 2510.03669)",
     "claim": "higher held-out pass@k than GRPO"},
    {"id": "tw", "arm": "tw", "paper": "TW-GRPO (arXiv 2505.24718)",
     "claim": "learns faster than GRPO (greedy accuracy rises sooner: area under the accuracy-vs-step curve)"},
]
VERDICT_RULE = ("a difference (arm - GRPO, per-seed values at step S) supports / refutes a claim when it exceeds, in "
                "the claimed / opposite direction, t_{0.975, n1+n2-2} * pooled SD * sqrt(1/n1 + 1/n2) (two-sample "
                "95% t threshold of the seed spread), and at least one held-out prompt (1/num_prompts) for accuracies; "
                "otherwise 'cannot tell at this scale'. One-sample (tokens < 30%): the 95% t-interval of the mean "
                "lies below / above 0.30. Fewer than 2 seeds: 'cannot tell'.")


# ----------------------------------------------------------------------------- summary (pure)

def summarise_arm(runs: list[dict], equal_steps: int) -> dict:
    """Mean / SD / CI over seeds of an arm's results at step S (``equal_steps``) and of its whole run."""
    at_s = [point_at(r["curve"], equal_steps) or {} for r in runs]
    tot = [r["at_equal_steps"] for r in runs]
    out = {
        "seeds": [r["seed"] for r in runs],
        "greedy": spread([p.get("greedy") for p in at_s]),
        "pass_at_k": spread([p.get("pass_at_k") for p in at_s]),
        "sample_acc": spread([p.get("sample_acc") for p in at_s]),
        "tokens_in_backward": spread([t["tokens_in_backward"] for t in tot]),
        "tokens_in_backward_frac": spread([t["tokens_in_backward_frac"] for t in tot]),
        "rows_in_backward_frac": spread([t["rows_in_backward_frac"] for t in tot]),
        "trainer_s": spread([t["trainer_s"] for t in tot]),
        "wall_s": spread([t["wall_s"] for t in tot]),
        "auc_steps": spread([area_under(r["curve"], "step", equal_steps) for r in runs]),
        "load_mean": spread([r["load"]["train"].get("mean") for r in runs]),
        "load_max": max((r["load"]["train"].get("max") or 0.0 for r in runs), default=None),
        "band_step": band([r["curve"] for r in runs], "step"),
        "band_trainer_s": band([r["curve"] for r in runs], "trainer_s"),
    }
    last = [r["curve"][-1] for r in runs if r["curve"]]
    if any(p["step"] != equal_steps for p in last):  # a longer run (D3S): its end too
        out["end"] = {"steps": [p["step"] for p in last], "greedy": spread([p["greedy"] for p in last]),
                      "pass_at_k": spread([p.get("pass_at_k") for p in last]),
                      "trainer_s": spread([p["trainer_s"] for p in last])}
    return out


def equal_time_and_accuracy(runs: list[dict], grpo: dict, grpo_runs: list[dict], equal_steps: int) -> dict:
    """The arm at GRPO's trainer seconds (mean over GRPO seeds at step S) and its trainer seconds to reach
    GRPO's mean greedy accuracy at step S (first crossing, linear between evaluations)."""
    t_grpo = grpo["trainer_s"]["mean"]
    target = grpo["greedy"]["mean"]
    if t_grpo is None or target is None:
        return {}
    at_t = [interp(r["curve"], "trainer_s", t_grpo) for r in runs]
    reach = [first_crossing(r["curve"], "trainer_s", target) for r in runs]
    ran_to = [r["curve"][-1]["trainer_s"] for r in runs if r["curve"]]
    return {
        "grpo_trainer_s": t_grpo, "grpo_greedy": target,
        "greedy_at_grpo_trainer_s": spread(at_t),
        "trainer_s_to_grpo_greedy": spread(reach),
        "reached": sum(x is not None for x in reach), "runs": len(runs),
        "ran_to_trainer_s": spread(ran_to),
        "grpo_trainer_s_to_own_greedy": spread([first_crossing(r["curve"], "trainer_s", target) for r in grpo_runs]),
    }


def judge_claims(arms: dict[str, dict], runs: dict[str, list[dict]], equal_steps: int, floor: float) -> list[dict]:
    """Each paper's claim next to the measurement, with a verdict (``VERDICT_RULE``)."""
    out = []
    if "grpo" not in arms:
        return out
    g_runs = runs["grpo"]
    g_at = [point_at(r["curve"], equal_steps) or {} for r in g_runs]

    def at(arm: str, key: str) -> list:
        return [(point_at(r["curve"], equal_steps) or {}).get(key) for r in runs[arm]]

    for c in CLAIMS:
        arm = c["arm"]
        if arm not in arms:
            continue
        parts: list[dict] = []
        if arm == "d3s":
            frac = [r["at_equal_steps"]["tokens_in_backward_frac"] for r in runs[arm]]
            parts.append({"check": "tokens in backward over S steps < 30% of completion tokens",
                          **compare_to_constant(frac, 0.30, below=True)})
            eq = arms[arm].get("vs_grpo", {})
            t_grpo = eq.get("grpo_trainer_s")
            at_t = [interp(r["curve"], "trainer_s", t_grpo) if t_grpo is not None else None for r in runs[arm]]
            if any(v is not None for v in at_t):
                parts.append({"check": "greedy at GRPO's trainer seconds (equal time) vs GRPO's greedy at step S",
                              **compare(at_t, [p.get("greedy") for p in g_at], +1, floor)})
            else:  # D3S's whole run spent less than GRPO's S steps: equal time is where the shortest D3S run ends
                t_end = min(r["curve"][-1]["trainer_s"] for r in runs[arm])
                parts.append({"check": f"greedy at D3S's end ({t_end:.0f} trainer s, equal time) vs GRPO's greedy "
                                       "interpolated at the same trainer seconds",
                              **compare([interp(r["curve"], "trainer_s", t_end) for r in runs[arm]],
                                        [interp(r["curve"], "trainer_s", t_end) for r in g_runs], +1, floor),
                              "at_trainer_s": round(t_end, 1)})
            reach = [first_crossing(r["curve"], "trainer_s", eq["grpo_greedy"]) if eq else None for r in runs[arm]]
            g_time = [r["at_equal_steps"]["trainer_s"] for r in g_runs]
            if reach and all(x is not None for x in reach):
                part = compare(reach, g_time, -1)
            else:
                ran_past = [r["curve"][-1]["trainer_s"] >= (t_grpo or math.inf) for r in runs[arm]]
                never = [x is None for x in reach]
                part = {"arm": spread(reach), "grpo": spread(g_time), "direction": "lower",
                        "reached": sum(not n for n in never), "runs": len(reach)}
                part["verdict"] = ("refutes" if reach and all(n and p for n, p in zip(never, ran_past))
                                   else "cannot tell at this scale")
            parts.append({"check": "trainer seconds to reach GRPO's mean greedy at step S (equal accuracy) vs "
                                   "GRPO's trainer seconds for S steps", **part})
            parts.append({"check": "(information) greedy at step S (equal steps)",
                          **compare(at(arm, "greedy"), [p.get("greedy") for p in g_at], +1, floor), "counts": False})
        elif arm == "thr_exploit":
            parts.append({"check": "greedy at step S", **compare(at(arm, "greedy"), [p.get("greedy") for p in g_at], +1,
                                                                 floor)})
            parts.append({"check": "(information) pass@k at step S",
                          **compare(at(arm, "pass_at_k"), [p.get("pass_at_k") for p in g_at], +1, floor),
                          "counts": False})
        elif arm == "thr_explore":
            parts.append({"check": "pass@k at step S",
                          **compare(at(arm, "pass_at_k"), [p.get("pass_at_k") for p in g_at], +1, floor)})
            parts.append({"check": "(information) greedy at step S",
                          **compare(at(arm, "greedy"), [p.get("greedy") for p in g_at], +1, floor), "counts": False})
        elif arm == "tw":
            auc = [area_under(r["curve"], "step", equal_steps) for r in runs[arm]]
            g_auc = [area_under(r["curve"], "step", equal_steps) for r in g_runs]
            parts.append({"check": "mean greedy over steps 0..S (area under the curve)", **compare(auc, g_auc, +1)})
            t_ref = arms["grpo"]["trainer_s"]["mean"]
            auc_t = [area_under(r["curve"], "trainer_s", t_ref) for r in runs[arm]]
            g_auc_t = [area_under(r["curve"], "trainer_s", t_ref) for r in g_runs]
            parts.append({"check": "(information) mean greedy over GRPO's trainer seconds (per trainer second)",
                          **compare(auc_t, g_auc_t, +1), "counts": False})
        for p in parts:  # information rows: say which way, not whether a claim holds
            if not p.get("counts", True):
                p["verdict"] = {"supports": "arm higher", "refutes": "arm lower"}.get(p["verdict"],
                                                                                     "no difference detected")
        verdict = combine([p["verdict"] for p in parts if p.get("counts", True)])
        out.append({**c, "verdict": verdict, "checks": parts})
    return out


# ----------------------------------------------------------------------------- duration estimate (pure)

def estimate_seconds(runs: list[dict], base_eval_s: float | None, arms: list[str], seeds: int, steps: int,
                     d3s_steps: int, eval_every: int, num_prompts: int = 200) -> dict:
    """Seconds of a full ablation from measured runs (a --quick smoke): per arm, start-up + steps x seconds per
    step + evaluations. D3S's steps before / after its schedule end are timed separately; arms the smoke did
    not run take GRPO's generation/sync time and GRPO's trainer time x ``TRAINER_RATIO_PRIOR``."""
    by_arm = {r["arm"]: r for r in runs}
    if "grpo" not in by_arm:
        return {}
    g = by_arm["grpo"]
    startup = sum(r["seconds"]["startup"] for r in runs) / len(runs)  # process start to end minus the steps
    evals = [e for r in runs for e in r["eval_seconds"]]
    # generation seconds per completion of a held-out prompt (the smoke may evaluate fewer prompts)
    per_completion = [(e["total"] - e["startup"]) / ((1 + e["k"]) * (e.get("num_prompts") or num_prompts))
                      for e in evals if e.get("k")]
    eval_startup = sum(e["startup"] for e in evals) / len(evals) if evals else 30.0
    gen = sum(per_completion) / len(per_completion) if per_completion else 0.1

    def eval_s(k: int) -> float:
        return eval_startup + (1 + k) * num_prompts * gen

    # a run's start-up as measured includes its own final evaluation at the smoke's size: count it at full size
    inloop = [(1 + r.get("inloop_k", INLOOP_K)) * (r.get("inloop_prompts") or num_prompts) * gen for r in runs]
    startup = max(startup - sum(inloop) / len(inloop), 0.0) + (1 + INLOOP_K) * num_prompts * gen
    g_trainer = g["per_step"]["trainer_s"]
    g_other = g["per_step"]["wall_s"] - g_trainer
    out: dict = {"per_arm": {}}
    total = eval_s(FINAL_K) if base_eval_s is None else base_eval_s
    for arm in arms:
        n_steps = d3s_steps if arm == "d3s" else steps
        if arm in by_arm and arm != "d3s":
            step_s = by_arm[arm]["per_step"]["wall_s"]
            source = "measured"
        elif arm == "d3s" and "d3s" in by_arm:
            d = by_arm["d3s"]
            sched, after = d["per_step"].get("wall_s_schedule"), d["per_step"].get("wall_s_after_schedule")
            sched = sched if sched is not None else d["per_step"]["wall_s"]
            after = after if after is not None else g["per_step"]["wall_s"]
            step_s = (steps * sched + (n_steps - steps) * after) / n_steps
            source = "measured (schedule and after)"
        else:
            step_s = g_other + g_trainer * TRAINER_RATIO_PRIOR.get(arm, 1.0)
            source = f"GRPO x trainer-time prior {TRAINER_RATIO_PRIOR.get(arm, 1.0)}"
        n_points = n_steps // eval_every
        finals = 2 if n_steps != steps else 1
        one = startup + n_steps * step_s + (n_points - finals) * eval_s(1) + finals * eval_s(FINAL_K)
        out["per_arm"][arm] = {"seconds_per_run": round(one), "seconds_per_step": round(step_s, 1), "source": source}
        total += seeds * one
    out.update({"total_s": round(total), "total_h": round(total / 3600, 2), "eval_s_curve": round(eval_s(1), 1),
                "eval_s_final": round(eval_s(FINAL_K), 1), "startup_s": round(startup, 1)})
    return out


# ----------------------------------------------------------------------------- summary, command line

def summarise(plan: Plan, runs: dict[str, list[dict]], seeds: list[int], base: dict | None, args) -> dict:
    arms = {name: summarise_arm(rs, plan.steps) for name, rs in runs.items() if rs}
    num_prompts = next((int(o.split("=")[1]) for o in TASK + plan.extra if o.startswith("eval.num_prompts=")), 100)
    if "grpo" in arms:
        g = arms["grpo"]
        for name, a in arms.items():
            gt, at = g["trainer_s"]["mean"], a["trainer_s"]["mean"]
            a["trainer_time_ratio_to_grpo"] = round(at / gt, 3) if gt and at is not None else None
            a["vs_grpo"] = equal_time_and_accuracy(runs[name], g, runs["grpo"], plan.steps)
            a["grpo_trainer_s_ref"] = g["trainer_s"]
    claims = judge_claims(arms, runs, plan.steps, 1.0 / num_prompts)
    task_check = None
    if "grpo" in arms and base is not None and arms["grpo"]["greedy"]["mean"] is not None:
        b0, fin = base["greedy_acc"], arms["grpo"]["greedy"]["mean"]
        se = math.sqrt(max(b0 * (1 - b0), 1e-4) / num_prompts)
        task_check = {"base_greedy": b0, "grpo_greedy_at_S": fin, "gain": round(fin - b0, 4),
                      "learns": fin - b0 > 2 * se, "headroom_left": fin <= 0.85,
                      "rule": "learns: GRPO's mean gain over the base > 2 binomial SE of the base; headroom: <= 0.85"}
    loads = [r["load"]["train"].get("mean") for rs in runs.values() for r in rs if r["load"]["train"].get("mean")]
    return {
        "benchmark": "credit_ablation",
        "command": plan.command(list(runs), seeds),
        "invoked_as": "python " + " ".join(["benchmarks/credit_ablation.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "recipe": Path(plan.recipe).name, "task_overrides": TASK, "extra_overrides": plan.extra,
        "task": "2-digit addition (builtin:arithmetic add, 2 digits), 8 prompts x 8 samples, 32 tokens, T=0.7, lr 2e-5",
        "steps": plan.steps, "d3s_steps": plan.d3s_steps, "eval_every": plan.eval_every, "final_k": plan.final_k,
        "curve_k": plan.curve_k, "evaluation": ("benchmarks/eval_heldout.py (fresh process per saved folder)"
                                                 if plan.eval_mode == "heldout" else "in-loop (eval.every)"),
        "seeds": seeds, "seed_map": "trainer.seed = 42 + s, rollout.seed = s",
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "load_range": (f"{min(loads):.1f}-{max(loads):.1f} (mean per run)" if loads else "-"),
        "load_average_at_summary": [round(x, 2) for x in os.getloadavg()],
        "probe": PROBE, "base_eval": base, "task_check": task_check,
        "verdict_rule": VERDICT_RULE, "claims": claims,
        "arms": arms,
        "runs": runs,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=None, choices=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seed s: trainer.seed=42+s, rollout.seed=s")
    p.add_argument("--steps", type=int, default=None, help=f"step budget S of every arm (default {STEPS})")
    p.add_argument("--d3s-steps", type=int, default=None,
                   help="D3S runs this many steps with its schedule over S (default S + S/2, whole evaluation intervals)")
    p.add_argument("--eval-every", type=int, default=None, help=f"evaluation (export) every k steps (default {EVAL_EVERY})")
    p.add_argument("--final-k", type=int, default=FINAL_K, help="k of pass@k at step S and at a run's end")
    p.add_argument("--curve-k", type=int, default=1, help="samples per prompt at the evaluations in between")
    p.add_argument("--checkpoint-every", type=int, default=None, help="checkpoint every k steps to resume a killed run "
                   "(default 10; 0 = off)")
    p.add_argument("--eval", choices=["heldout", "inloop"], default=None,
                   help="heldout: benchmarks/eval_heldout.py on exported weights (default when it exists) | inloop")
    p.add_argument("--recipe", default=str(RECIPE))
    p.add_argument("--out", default=None, help="folder of <name>.json / .png and <name>_runs/ (default "
                   "benchmarks/results; --quick: /tmp/credit_ablation_quick)")
    p.add_argument("--name", default=None, help="results name (default credit_ablation; --quick: credit_ablation_quick)")
    p.add_argument("--runs-dir", default=None, help="run folders (default runs/<name>)")
    p.add_argument("--extra", nargs="*", default=[], help="more dotted overrides for every arm")
    p.add_argument("--reuse", action="store_true", help="run nothing: re-summarise the finished arm x seed results")
    p.add_argument("--keep-weights", action="store_true", help="keep exported weights and checkpoints of finished runs")
    p.add_argument("--run-timeout", type=float, default=None, help="seconds one training process may take")
    p.add_argument("--quick", action="store_true", help="smoke: 2 steps (D3S 4), 1 seed, grpo + d3s, into /tmp; "
                   "prints the full run's command and estimated duration")
    args = p.parse_args(argv)
    q = args.quick
    args.arms = args.arms or (QUICK_ARMS if q else list(ARMS))
    args.seeds = args.seeds if args.seeds is not None else ([0] if q else [0, 1, 2])
    args.steps = args.steps or (2 if q else STEPS)
    args.eval_every = args.eval_every or (2 if q else EVAL_EVERY)
    args.d3s_steps = args.d3s_steps or default_d3s_steps(args.steps, args.eval_every)
    if q and not any(o.startswith("eval.num_prompts=") for o in args.extra):
        args.extra = [*args.extra, f"eval.num_prompts={QUICK_PROMPTS}"]  # plumbing, not numbers
    args.checkpoint_every = args.checkpoint_every if args.checkpoint_every is not None else (0 if q else 10)
    args.name = args.name or ("credit_ablation_quick" if q else "credit_ablation")
    args.out = Path(args.out or ("/tmp/credit_ablation_quick" if q else RESULTS))
    if q and args.out.resolve() == RESULTS.resolve() and args.name == "credit_ablation":
        p.error("--quick would overwrite the committed results: pass another --name or --out")
    args.runs_dir = Path(args.runs_dir or (args.out / f"{args.name}_work" if q else ROOT / "runs" / args.name))
    if args.eval is None:
        args.eval = "heldout" if (ROOT / "benchmarks" / "eval_heldout.py").is_file() else "inloop"
    for n in [args.steps] + ([args.d3s_steps] if "d3s" in args.arms else []):
        if n % args.eval_every:
            p.error(f"--eval-every {args.eval_every} must divide the step budgets ({args.steps}, D3S {args.d3s_steps})")
    if args.d3s_steps < args.steps:
        p.error("--d3s-steps must be >= --steps (D3S's first S steps are the equal-step run)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    plan = Plan(args)
    out, runs_dir = args.out, args.runs_dir.resolve()
    runs_out = out / f"{args.name}_runs"
    runs_out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    base = None
    if plan.eval_mode == "heldout":
        base_cache = runs_out / "base_eval.json"
        base = json.loads(base_cache.read_text()) if base_cache.is_file() else None
        if base is None and not args.reuse:
            base = base_evaluation(plan, runs_out)
    runs: dict[str, list[dict]] = {arm: [] for arm in args.arms}
    missing = []
    for seed in args.seeds:  # seed-major: a partial ablation has every arm of the first seeds
        for arm in args.arms:
            path = runs_out / f"{arm}_seed{seed}.json"
            if path.is_file():
                res = json.loads(path.read_text())
                if res.get("fingerprint") != plan.fingerprint(arm, seed):
                    raise SystemExit(f"[ablation] {path} was made by another plan (steps, task, overrides or k); "
                                     "use another --out/--name or delete it")
                print(f"[ablation] {arm} seed {seed}: finished result {path.name}", flush=True)
            elif args.reuse:
                missing.append(f"{arm}_seed{seed}")
                continue
            else:
                res = run_one(plan, arm, seed, runs_dir, runs_out, base, args.keep_weights, args.run_timeout)
            runs[arm].append(res)
    if missing:
        print(f"[ablation] --reuse: not finished, left out: {' '.join(missing)}", flush=True)
    result = summarise(plan, runs, args.seeds, base, args)
    result["wall_s_this_invocation"] = round(time.perf_counter() - t_start, 1)
    if args.quick:
        full = estimate_seconds([r for rs in runs.values() for r in rs],
                                None, list(ARMS), 3, STEPS, default_d3s_steps(STEPS, EVAL_EVERY), EVAL_EVERY)
        result["full_run"] = {"command": "python benchmarks/credit_ablation.py --seeds 0 1 2",
                              "estimate": full, "measured_under_load": result["load_range"]}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / f"{args.name}.png")
    print_table(result)
    print(f"\nwrote {out / (args.name + '.json')} and {out / (args.name + '.png')} "
          f"({result['wall_s_this_invocation']:.0f} s this invocation)")
    if args.quick and result["full_run"]["estimate"]:
        e = result["full_run"]["estimate"]
        print(f"\nfull run: {result['full_run']['command']}\nestimated {e['total_h']} h at this smoke's load "
              f"({result['load_range']}): " + ", ".join(f"{a} {v['seconds_per_run'] / 60:.0f} min/run "
                                                       f"({v['seconds_per_step']} s/step, {v['source']})"
                                                       for a, v in e["per_arm"].items())
              + f"; evaluations {e['eval_s_curve']} s (k=1) / {e['eval_s_final']} s (k={FINAL_K}); start-up "
                f"{e['startup_s']} s per run")


if __name__ == "__main__":
    main()
