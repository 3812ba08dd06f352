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
* **more steps**: 40 steps of 8 prompts x 8 samples, lr 2e-5 constant, T=0.7 (quickstart's).
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
2S) steps with ``algorithm.d3s.schedule_steps=S`` (rl/credit/config.py): its first S steps are
exactly the S-step D3S run (tests/rl/credit/test_d3s_schedule_steps.py), after which it goes on
at the final values (all non-zero-advantage rows of N_s = G, all tokens, cross-group half).
One run then gives all three comparisons: at step S (equal steps), its accuracy at GRPO's
trainer seconds (equal time, interpolated between evaluations) and the trainer seconds it
needs to reach GRPO's final accuracy (equal accuracy). A schedule that follows wall time
was rejected: it would make the selection depend on machine load (not reproducible).

Evaluation. benchmarks/eval_heldout.py (independent: a fresh process per saved folder, vLLM,
the training prompts' tokens and reward): the base model once (step 0) and every run's
``hf_model_step_N`` exports (``checkpoint.export_hf_every = --eval-every``) on the 200 held-out
prompts: greedy accuracy at every point, pass@k (k = ``--final-k``, 8) at step S and at the
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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "recipes" / "quickstart.yaml"

# The task and budget (on top of the quickstart recipe): see the module docstring.
TASK = [
    "data.task.ops=[add]", "data.task.digits=2", "data.task.num_operands=2", "data.task.template=short",
    "data.task.num_train=2000", "data.task.num_test=200",
    "rollout.max_tokens=32", "rollout.max_model_len=192",
    "eval.num_prompts=200",
]
STEPS = 40
EVAL_EVERY = 5
FINAL_K = 8

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

ARMS: dict[str, list[str]] = {
    "grpo": [],
    "d3s": ["algorithm.credit=[d3s]", "algorithm.d3s.n_batch=0.5"],
    "thr_exploit": ["algorithm.credit=[thr]", "algorithm.thr.p=0.5"],
    "thr_explore": ["algorithm.credit=[thr]", "algorithm.thr.p=-0.5"],
    "tw": ["algorithm.credit=[tw]", "algorithm.tw.alpha=1.7"],
}
QUICK_ARMS = ["grpo", "d3s"]
INLOOP_K = 1  # pass@k of a run's own final evaluation when eval_heldout measures the numbers
QUICK_PROMPTS = 50  # --quick evaluates the first 50 held-out prompts (the estimate scales to 200)
TRAINER_TIMINGS = ("timing/old_logp", "timing/credit", "timing/update")
STEP_TIMINGS = ("timing/generation", "timing/old_logp", "timing/credit", "timing/update", "timing/sync",
                "timing/train", "timing/step")
# Trainer time of THR / TW relative to GRPO (benchmarks/results/credit_ablation.json of the 12-step
# quickstart ablation, 2026-12): used only to estimate the full run's duration for arms --quick skips.
TRAINER_RATIO_PRIOR = {"thr_exploit": 1.32, "thr_explore": 1.30, "tw": 1.38}

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

# Student t quantiles t_{0.975, df} (no scipy in the environment)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


# ----------------------------------------------------------------------------- statistics (pure)

def t975(df: int) -> float:
    """Two-sided 95% Student t quantile for ``df`` degrees of freedom (table; conservative between rows)."""
    if df < 1:
        return math.inf
    for d in sorted(_T975):
        if d >= df:
            return _T975[d] if d == df else _T975[max(k for k in _T975 if k <= df)]
    return 1.96


def spread(values: list[float | None]) -> dict:
    """Mean, sample SD, 95% t-interval, min/max and the values (None values are left out and counted)."""
    vals = [float(v) for v in values if v is not None]
    out: dict = {"n": len(vals), "values": [round(v, 4) for v in vals], "missing": len(values) - len(vals)}
    if not vals:
        return out | {"mean": None, "sd": None, "ci95": None, "min": None, "max": None}
    mean = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    half = t975(len(vals) - 1) * sd / math.sqrt(len(vals)) if sd is not None else None
    return out | {"mean": round(mean, 4), "sd": None if sd is None else round(sd, 4),
                  "ci95": None if half is None else [round(mean - half, 4), round(mean + half, 4)],
                  "min": round(min(vals), 4), "max": round(max(vals), 4)}


def compare(arm: list[float | None], base: list[float | None], direction: int, floor: float = 0.0) -> dict:
    """Verdict on "arm is higher (direction=+1) / lower (-1) than base" from per-seed values (``VERDICT_RULE``)."""
    a = [float(v) for v in arm if v is not None]
    b = [float(v) for v in base if v is not None]
    out: dict = {"arm": spread(a), "grpo": spread(b), "direction": "higher" if direction > 0 else "lower"}
    if not a or not b:
        return out | {"diff": None, "threshold": None, "verdict": "cannot tell (no values)"}
    diff = sum(a) / len(a) - sum(b) / len(b)
    out["diff"] = round(diff, 4)
    if len(a) < 2 or len(b) < 2:
        return out | {"threshold": None, "verdict": "cannot tell (fewer than 2 seeds)"}
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ss = sum((v - ma) ** 2 for v in a) + sum((v - mb) ** 2 for v in b)
    pooled = math.sqrt(ss / (len(a) + len(b) - 2))
    threshold = max(t975(len(a) + len(b) - 2) * pooled * math.sqrt(1 / len(a) + 1 / len(b)), floor)
    out.update({"pooled_sd": round(pooled, 4), "effect_size": None if pooled == 0 else round(diff / pooled, 2),
                "threshold": round(threshold, 4)})
    signed = diff * direction
    verdict = "supports" if signed > threshold else "refutes" if -signed > threshold else "cannot tell at this scale"
    return out | {"verdict": verdict}


def compare_to_constant(values: list[float | None], bound: float, below: bool) -> dict:
    """Verdict on "the mean is below (``below``) / above ``bound``" from the 95% t-interval of the mean."""
    s = spread(values)
    out = {"arm": s, "bound": bound, "direction": "below" if below else "above"}
    if s["n"] < 2:
        return out | {"verdict": "cannot tell (fewer than 2 seeds)"}
    lo, hi = s["ci95"]
    if (hi < bound) if below else (lo > bound):
        return out | {"verdict": "supports"}
    if (lo > bound) if below else (hi < bound):
        return out | {"verdict": "refutes"}
    return out | {"verdict": "cannot tell at this scale"}


def combine(verdicts: list[str]) -> str:
    """A claim with several parts: refuted if a part is, supported if every part is, else cannot tell."""
    if any(v == "refutes" for v in verdicts):
        return "refutes"
    if verdicts and all(v == "supports" for v in verdicts):
        return "supports"
    return "cannot tell at this scale"


# ----------------------------------------------------------------------------- curves (pure)

def interp(curve: list[dict], x_key: str, x: float, y_key: str = "greedy") -> float | None:
    """``y_key`` at ``x`` along ``curve`` (points sorted by x_key), linear between points; None past either end."""
    pts = [p for p in curve if p.get(y_key) is not None]
    if not pts or x < pts[0][x_key] - 1e-9 or x > pts[-1][x_key] + 1e-9:
        return None
    for a, b in zip(pts, pts[1:]):
        if a[x_key] <= x <= b[x_key]:
            w = (x - a[x_key]) / max(b[x_key] - a[x_key], 1e-12)
            return a[y_key] + w * (b[y_key] - a[y_key])
    return pts[-1][y_key]


def first_crossing(curve: list[dict], x_key: str, target: float, y_key: str = "greedy") -> float | None:
    """Smallest x at which the curve (linear between points) reaches ``target``; None if it never does."""
    pts = [p for p in curve if p.get(y_key) is not None]
    if pts and pts[0][y_key] >= target:
        return float(pts[0][x_key])
    for a, b in zip(pts, pts[1:]):
        if b[y_key] >= target > a[y_key]:
            w = (target - a[y_key]) / (b[y_key] - a[y_key])
            return a[x_key] + w * (b[x_key] - a[x_key])
    return None


def area_under(curve: list[dict], x_key: str, x_end: float, y_key: str = "greedy") -> float | None:
    """Mean of y over [first x, x_end] (trapezoids); None if the curve does not reach x_end."""
    pts = [p for p in curve if p.get(y_key) is not None and p[x_key] <= x_end + 1e-9]
    end = interp(curve, x_key, x_end, y_key)
    if not pts or end is None:
        return None
    if pts[-1][x_key] < x_end - 1e-9:
        pts = pts + [{x_key: x_end, y_key: end}]
    if len(pts) == 1:
        return float(pts[0][y_key])
    total = sum((b[x_key] - a[x_key]) * (a[y_key] + b[y_key]) / 2 for a, b in zip(pts, pts[1:]))
    return total / (pts[-1][x_key] - pts[0][x_key])


def band(curves: list[list[dict]], x_key: str, y_key: str = "greedy", points: int = 40) -> dict:
    """Mean and SD over seeds of y on a common x grid (0 .. the shortest curve's end); points where any
    seed has a value. ``x_key='step'`` uses the evaluation steps every seed has."""
    if not curves:
        return {"x": [], "mean": [], "sd": []}
    if x_key == "step":
        xs = sorted(set.intersection(*[{p["step"] for p in c if p.get(y_key) is not None} for c in curves]))
    else:
        end = min(max(p[x_key] for p in c) for c in curves)
        xs = [end * i / (points - 1) for i in range(points)] if end > 0 else [0.0]
    mean, sd = [], []
    for x in xs:
        ys = [v for c in curves if (v := interp(c, x_key, x, y_key)) is not None]
        m = sum(ys) / len(ys)
        mean.append(round(m, 4))
        sd.append(round(math.sqrt(sum((y - m) ** 2 for y in ys) / (len(ys) - 1)), 4) if len(ys) > 1 else 0.0)
    return {"x": [round(x, 2) for x in xs], "mean": mean, "sd": sd}


# ----------------------------------------------------------------------------- a run's record (pure)

def run_curve(rows: list[dict], evals: dict[int, dict], base: dict | None) -> list[dict]:
    """Evaluation points [{step, trainer_s, wall_s, greedy, pass_at_k, k, sample_acc}] with the trainer and
    wall seconds summed over the steps up to each point; step 0 is the base model's evaluation."""
    cum_trainer, cum_wall = {0: 0.0}, {0: 0.0}
    t = w = 0.0
    for r in sorted((r for r in rows if r["step"] > 0), key=lambda r: r["step"]):
        t += sum(r.get(k, 0.0) for k in TRAINER_TIMINGS)
        w += r.get("timing/step", 0.0)
        cum_trainer[r["step"]], cum_wall[r["step"]] = t, w
    points = dict(evals)
    if base is not None:
        points.setdefault(0, base)
    curve = []
    for step in sorted(points):
        if step not in cum_trainer:
            continue
        e = points[step]
        curve.append({"step": step, "trainer_s": round(cum_trainer[step], 3), "wall_s": round(cum_wall[step], 3),
                      "greedy": e["greedy_acc"], "pass_at_k": e.get("pass_at_k"), "k": e.get("k"),
                      "sample_acc": e.get("sample_acc")})
    return curve


def totals(rows: list[dict], upto: int, rows_per_step: int) -> dict:
    """Tokens / rows in backward and seconds summed over steps 1..upto."""
    steps = [r for r in rows if 0 < r["step"] <= upto]
    tokens = sum(r.get("batch/loss_tokens", 0.0) for r in steps)
    completion = sum(r.get("batch/tokens", r.get("batch/loss_tokens", 0.0) / max(r.get("batch/loss_tokens_frac", 1.0),
                                                                                    1e-9)) for r in steps)
    rows_bw = sum(r.get("train/rows_in_backward", 0.0) for r in steps)
    return {
        "steps": len(steps),
        "trainer_s": round(sum(sum(r.get(k, 0.0) for k in TRAINER_TIMINGS) for r in steps), 3),
        "wall_s": round(sum(r.get("timing/step", 0.0) for r in steps), 3),
        "tokens_in_backward": int(tokens), "completion_tokens": int(completion),
        "tokens_in_backward_frac": round(tokens / completion, 4) if completion else None,
        "rows_in_backward": int(rows_bw), "rows": rows_per_step * len(steps),
        "rows_in_backward_frac": round(rows_bw / (rows_per_step * len(steps)), 4) if steps else None,
    }


def point_at(curve: list[dict], step: int) -> dict | None:
    return next((p for p in curve if p["step"] == step), None)


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
            parts.append({"check": "greedy at GRPO's trainer seconds (equal time) vs GRPO's greedy at step S",
                          **compare(at_t, [p.get("greedy") for p in g_at], +1, floor)})
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


# ----------------------------------------------------------------------------- load average

class LoadSampler:
    """Samples the 1-minute load average every ``interval`` s in a thread: start / end (1, 5, 15) and 1-min mean / max."""

    def __init__(self, interval: float = 15.0) -> None:
        self.interval, self.samples = interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self.start = [round(x, 2) for x in os.getloadavg()]
        self.samples.append(self.start[0])
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end = [round(x, 2) for x in os.getloadavg()]
        self.samples.append(self.end[0])

    def record(self) -> dict:
        s = self.samples
        return {"start_1_5_15": self.start, "end_1_5_15": self.end, "mean": round(sum(s) / len(s), 2),
                "max": round(max(s), 2), "samples": len(s), "interval_s": self.interval}


# ----------------------------------------------------------------------------- running

class Plan:
    """What one ablation runs: the fingerprint of a result says which plan made it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.recipe, self.steps, self.d3s_steps = str(args.recipe), args.steps, args.d3s_steps
        self.eval_every, self.final_k, self.curve_k = args.eval_every, args.final_k, args.curve_k
        self.extra, self.eval_mode = list(args.extra), args.eval
        self.checkpoint_every = args.checkpoint_every

    def steps_of(self, arm: str) -> int:
        return self.d3s_steps if arm == "d3s" else self.steps

    def overrides(self, arm: str, seed: int, runs_dir: Path) -> list[str]:
        o = [*TASK, f"name=credit_ablation_{arm}", f"logging.dir={runs_dir}", f"logging.run_name={arm}_seed{seed}",
             "logging.progress=false", "logging.save_batches=false", f"trainer.steps={self.steps_of(arm)}",
             f"trainer.seed={42 + seed}", f"rollout.seed={seed}", "checkpoint.save_final=false",
             "checkpoint.resume=auto", "checkpoint.keep_last=1", f"checkpoint.every={self.checkpoint_every}",
             "checkpoint.export_hf=false"]
        if self.eval_mode == "heldout":  # exported weights, evaluated afterwards in fresh processes; the run's
            # own evaluation after its last step (it cannot be turned off) stays cheap: greedy + pass@1, a
            # cross-check of eval_heldout's greedy on the same prompts
            o += [f"checkpoint.export_hf_every={self.eval_every}", "eval.every=0", "eval.at_start=false",
                  f"eval.pass_k={INLOOP_K}"]
        else:  # the run's own evaluation
            o += [f"eval.every={self.eval_every}", "eval.at_start=true", f"eval.pass_k={self.final_k}"]
        if arm == "d3s":
            o.append(f"algorithm.d3s.schedule_steps={self.steps}")
        return o + ARMS[arm] + self.extra

    def fingerprint(self, arm: str, seed: int) -> str:
        key = json.dumps([Path(self.recipe).name, self.overrides(arm, seed, Path("RUNS")), self.final_k, self.curve_k,
                          self.eval_mode])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a torn last line of a killed run
    return rows


def eval_steps(plan: Plan, arm: str) -> list[int]:
    n = plan.steps_of(arm)
    return [s for s in range(plan.eval_every, n + 1, plan.eval_every)] or [n]


def k_at(plan: Plan, arm: str, step: int) -> int:
    return plan.final_k if step in (plan.steps, plan.steps_of(arm)) else plan.curve_k


def train(plan: Plan, arm: str, seed: int, run_dir: Path, runs_dir: Path, timeout: float | None) -> dict:
    """Train (or resume) one arm x seed; a run already trained to the end is left alone. Returns the load record."""
    from rl.checkpoint import latest_checkpoint

    steps = plan.steps_of(arm)
    stamp = run_dir / "ablation_plan.json"
    fp = plan.fingerprint(arm, seed)
    if run_dir.exists() and (not stamp.is_file() or json.loads(stamp.read_text()).get("fingerprint") != fp):
        shutil.rmtree(run_dir)  # another plan's run (or a run that never started): start afresh
    rows = read_rows(run_dir)
    if rows and max(r["step"] for r in rows) >= steps and all(
            (run_dir / f"hf_model_step_{s}").is_dir() or (run_dir / "eval" / f"step_{s}.json").is_file()
            for s in (eval_steps(plan, arm) if plan.eval_mode == "heldout" else [])):
        print(f"[ablation] {arm} seed {seed}: trained already ({run_dir})", flush=True)
        prev = json.loads(stamp.read_text())
        return prev.get("load", {})
    ckpt = latest_checkpoint(run_dir) if run_dir.exists() else None
    done = int(ckpt.name.split("_")[1].split(".")[0]) if ckpt is not None else 0
    for p in list(run_dir.glob("hf_model_step_*")) + list((run_dir / "eval").glob("step_*.json")):
        if int(p.name.split("_")[-1].split(".")[0]) > done:  # made after the checkpoint we resume from
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fp, "arm": arm, "seed": seed}))
    cmd = [sys.executable, "-m", "rl.cli", "train", plan.recipe, *plan.overrides(arm, seed, runs_dir)]
    print(f"[ablation] {arm} seed {seed}: {'resuming at step ' + str(done) if done else 'training'}: "
          f"{' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    with LoadSampler() as load:
        proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy(), timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"[ablation] {arm} seed {seed} failed with exit code {proc.returncode} (run dir {run_dir}); "
                         "run the same command again to resume it")
    made = max((r["step"] for r in read_rows(run_dir)), default=0)
    if made < steps:  # e.g. a module of the shared working tree caught mid-edit: exit 0 without training
        raise SystemExit(f"[ablation] {arm} seed {seed}: the training process exited 0 but the run reached step {made} "
                         f"of {steps} (run dir {run_dir}); run the same command again to resume it")
    record = {**load.record(), "wall_s": round(time.perf_counter() - t0, 1), "resumed_at_step": done}
    stamp.write_text(json.dumps({"fingerprint": fp, "arm": arm, "seed": seed, "load": record}))
    print(f"[ablation] {arm} seed {seed}: trained in {record['wall_s']:.0f} s (load mean {record['mean']}, "
          f"max {record['max']})", flush=True)
    return record


def heldout_module():
    path = ROOT / "benchmarks" / "eval_heldout.py"
    if not path.is_file():
        return None
    sys.path.insert(0, str(path.parent))
    import eval_heldout

    return eval_heldout


def eval_settings(plan: Plan, k: int):
    """The held-out evaluation of every point: the task's prompts / reward / sampling, the recipe's pass@k seed."""
    return heldout_module().EvalSettings(recipe=plan.recipe, overrides=tuple(TASK + [
        o for o in plan.extra if o.startswith(("data.", "rollout.", "rewards.", "eval."))]), k=k)


def slim(result: dict) -> dict:
    keep = ("greedy_acc", "pass_at_k", "sample_acc", "greedy_len", "k", "seed", "num_prompts", "prompt_fingerprint",
            "folder_tokenizer_matches", "seconds", "load", "settings")
    return {k: result[k] for k in keep if k in result}


def _same_numbers(a: list[str], b: list[str]) -> bool:
    """Equal evaluation settings up to the engine's memory share (which changes no number)."""
    def key(args: list[str]) -> list[str]:
        pairs = [(x, args[i + 1] if i + 1 < len(args) else "") for i, x in enumerate(args) if x.startswith("--")]
        return [f"{x}={v}" for x, v in pairs if not v.startswith("rollout.memory_fraction=")]

    return key(a) == key(b)


def evaluate_folder(folder: Path, plan: Plan, k: int, cache: Path) -> dict:
    """eval_heldout of one saved folder in a fresh process, cached in ``cache``."""
    settings = eval_settings(plan, k)
    if cache.is_file():
        got = json.loads(cache.read_text())
        if got.get("k") == k and _same_numbers(got.get("settings") or [], settings.args()):
            return got
    with LoadSampler(interval=5.0) as load:
        (res,) = heldout_module().evaluate_folders([str(folder)], settings)
    res = slim(res) | {"load": load.record(), "settings": settings.args()}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(res, indent=1))
    print(f"[ablation]   eval {folder.name}: greedy {res['greedy_acc']:.3f} pass@{k} {res['pass_at_k']:.3f} "
          f"({res['seconds']['process']:.0f} s, load {res['load']['mean']})", flush=True)
    return res


def base_evaluation(plan: Plan, runs_out: Path) -> dict | None:
    """The base model's held-out evaluation (step 0 of every curve), once per ablation."""
    if plan.eval_mode != "heldout":
        return None
    from rl.models import resolve_model

    cfg_model = "smollm2-135m"
    for o in plan.extra:
        if o.startswith("model.name_or_path="):
            cfg_model = o.split("=", 1)[1]
    return evaluate_folder(Path(resolve_model(cfg_model)), plan, plan.final_k, runs_out / "base_eval.json")


def evaluate_run(plan: Plan, arm: str, run_dir: Path) -> dict[int, dict]:
    evals = {}
    for s in eval_steps(plan, arm):
        folder, cache = run_dir / f"hf_model_step_{s}", run_dir / "eval" / f"step_{s}.json"
        if not cache.is_file() and not folder.is_dir():
            raise SystemExit(f"[ablation] {folder} is missing and was never evaluated: delete {run_dir} and re-run")
        evals[s] = evaluate_folder(folder, plan, k_at(plan, arm, s), cache)
    return evals


def inloop_evals(rows: list[dict], k: int) -> dict[int, dict]:
    return {r["step"]: {"greedy_acc": r["eval/greedy_acc"], "pass_at_k": r.get("eval/pass_at_k"), "k": k,
                        "sample_acc": r.get("eval/sample_acc")} for r in rows if "eval/greedy_acc" in r}


def per_step_seconds(rows: list[dict], schedule_steps: int | None) -> dict:
    steps = [r for r in rows if r["step"] > 0]

    def mean(rs: list[dict], keys: tuple[str, ...]) -> float | None:
        return round(sum(sum(r.get(k, 0.0) for k in keys) for r in rs) / len(rs), 3) if rs else None

    out = {"trainer_s": mean(steps, TRAINER_TIMINGS), "wall_s": mean(steps, ("timing/step",))}
    out.update({k.split("/")[1]: mean(steps, (k,)) for k in STEP_TIMINGS})
    if schedule_steps is not None:
        out["wall_s_schedule"] = mean([r for r in steps if r["step"] <= schedule_steps], ("timing/step",))
        out["wall_s_after_schedule"] = mean([r for r in steps if r["step"] > schedule_steps], ("timing/step",))
        out["trainer_s_schedule"] = mean([r for r in steps if r["step"] <= schedule_steps], TRAINER_TIMINGS)
        out["trainer_s_after_schedule"] = mean([r for r in steps if r["step"] > schedule_steps], TRAINER_TIMINGS)
    return out


def run_one(plan: Plan, arm: str, seed: int, runs_dir: Path, runs_out: Path, base: dict | None,
            keep_weights: bool, timeout: float | None) -> dict:
    """Train, evaluate and record one arm x seed (resumable at every stage); returns its result."""
    run_dir = runs_dir / f"{arm}_seed{seed}"
    t0 = time.perf_counter()
    train_load = train(plan, arm, seed, run_dir, runs_dir, timeout)
    train_wall = time.perf_counter() - t0
    rows = read_rows(run_dir)
    t1 = time.perf_counter()
    if plan.eval_mode == "heldout":
        evals = evaluate_run(plan, arm, run_dir)
    else:
        evals = inloop_evals(rows, plan.final_k)
        base = evals.pop(0, None)
    eval_wall = time.perf_counter() - t1
    steps = plan.steps_of(arm)
    curve = run_curve(rows, evals, base)
    last_row = max(rows, key=lambda r: r["step"])
    rows_per_step, inloop_k, inloop_prompts = 8 * 8, None, None
    try:
        from rl.config import load_config

        cfg = load_config(plan.recipe, plan.overrides(arm, seed, runs_dir))
        rows_per_step = cfg.trainer.prompts_per_step * cfg.rollout.n
        inloop_k, inloop_prompts = cfg.eval.pass_k, cfg.eval.num_prompts
    except Exception as e:  # noqa: BLE001 - only the rows denominator and the estimate depend on it
        print(f"[ablation] could not load the config for the row count ({e}); assuming 8 x 8", flush=True)
    in_step_wall = sum(r.get("timing/step", 0.0) for r in rows if r["step"] > 0)
    result = {
        "arm": arm, "seed": seed, "fingerprint": plan.fingerprint(arm, seed), "steps": steps,
        "equal_steps": plan.steps, "schedule_steps": plan.steps if arm == "d3s" else None,
        "overrides": plan.overrides(arm, seed, runs_dir), "run_dir": str(run_dir), "curve": curve,
        "at_equal_steps": totals(rows, plan.steps, rows_per_step), "at_end": totals(rows, steps, rows_per_step),
        "per_step": per_step_seconds(rows, plan.steps if arm == "d3s" else None),
        "train_reward": [round(r.get("reward/total/mean", float("nan")), 4) for r in sorted(rows, key=lambda r: r["step"])
                         if r["step"] > 0],
        "mixed_groups_frac": [round(r.get("batch/mixed_groups_frac", float("nan")), 3)
                              for r in sorted(rows, key=lambda r: r["step"]) if r["step"] > 0],
        "completion_len": [round(r.get("batch/completion_len", float("nan")), 2)
                           for r in sorted(rows, key=lambda r: r["step"]) if r["step"] > 0],
        "inloop_final": {"step": last_row["step"], "greedy": last_row.get("eval/greedy_acc"),
                         "pass_at_k": last_row.get("eval/pass_at_k")},
        "inloop_k": inloop_k, "inloop_prompts": inloop_prompts,
        "seconds": {"train_process": round(train_wall, 1), "evaluate": round(eval_wall, 1),
                    "steps": round(in_step_wall, 1),
                    "startup": round(max(train_load.get("wall_s", train_wall) - in_step_wall, 0.0), 1)},
        "eval_seconds": [{"step": s, "k": e.get("k"), "num_prompts": e.get("num_prompts"),
                          "startup": e.get("seconds", {}).get("startup", 0.0),
                          "total": e.get("seconds", {}).get("process", e.get("seconds", {}).get("total", 0.0))}
                         for s, e in evals.items() if "seconds" in e],
        "load": {"train": train_load, "evaluate": [{"step": s, **e["load"]} for s, e in evals.items() if "load" in e]},
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
    }
    if arm == "d3s":
        result["d3s_kept_token_frac"] = [round(r.get("d3s/kept_token_frac", float("nan")), 3)
                                         for r in sorted(rows, key=lambda r: r["step"]) if r["step"] > 0]
    (runs_out / f"{arm}_seed{seed}.json").write_text(json.dumps(result, indent=1) + "\n")
    if not keep_weights:
        for p in list(run_dir.glob("hf_model_step_*")) + [run_dir / "checkpoints", run_dir / "hf_model"]:
            if p.is_dir():
                shutil.rmtree(p)
    return result


# ----------------------------------------------------------------------------- reporting

def fmt(s: dict | None, pct: bool = False, digits: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "-"
    scale = 100 if pct else 1
    d = 0 if pct else digits
    sd = "" if s.get("sd") is None else f"±{s['sd'] * scale:.{d}f}"
    return f"{s['mean'] * scale:.{d}f}{sd}"


def print_table(result: dict) -> None:
    k = result["final_k"]
    S = result["steps"]
    print(f"\ncredit ablation: {result['task']}; {S} steps (D3S {result['d3s_steps']}, schedule over {S}); seeds "
          f"{result['seeds']}; mean ± SD over seeds at step {S}; load = mean 1-min load average during training")
    head = (f"{'arm':<12} {'n':>2} {'greedy':>12} {'pass@' + str(k):>12} {'tokens bw %':>12} {'trainer s':>12} "
            f"{'x GRPO':>6} {'AUC steps':>12} {'greedy@GRPO s':>14} {'load':>9}")
    print(head)
    print("-" * len(head))
    for name, a in result["arms"].items():
        ratio = a.get("trainer_time_ratio_to_grpo")
        vs = a.get("vs_grpo", {})
        print(f"{name:<12} {a['greedy']['n']:>2} {fmt(a['greedy']):>12} {fmt(a['pass_at_k']):>12} "
              f"{fmt(a['tokens_in_backward_frac'], pct=True):>12} {fmt(a['trainer_s'], digits=0):>12} "
              f"{'-' if ratio is None else f'{ratio:.2f}':>6} {fmt(a['auc_steps']):>12} "
              f"{fmt(vs.get('greedy_at_grpo_trainer_s')):>14} {fmt(a['load_mean'], digits=1):>9}")
        if "end" in a:
            e = a["end"]
            print(f"{'  (end)':<12} {'':>2} {fmt(e['greedy']):>12} {fmt(e['pass_at_k']):>12} {'':>12} "
                  f"{fmt(e['trainer_s'], digits=0):>12}   at step {e['steps'][0] if e['steps'] else '-'}; "
                  f"reached GRPO's greedy in {vs.get('reached', '-')}/{vs.get('runs', '-')} seeds after "
                  f"{fmt(vs.get('trainer_s_to_grpo_greedy'), digits=0)} trainer s (GRPO: "
                  f"{fmt(a.get('grpo_trainer_s_ref'), digits=0)} s)")
    tc = result.get("task_check")
    if tc:
        print(f"\ntask check: base greedy {tc['base_greedy']:.3f} -> GRPO {tc['grpo_greedy_at_S']:.3f} at step {S}: "
              f"{'learns' if tc['learns'] else 'DOES NOT LEARN measurably'}, "
              f"{'headroom left' if tc['headroom_left'] else 'SATURATED (> 0.85)'} ({tc['rule']})")
    print(f"\nclaims ({result['verdict_rule']})")
    for c in result["claims"]:
        print(f"* {c['paper']}: {c['claim']}\n  -> {c['verdict'].upper()}")
        for p in c["checks"]:
            diff = p.get("diff")
            what = (f"arm {fmt(p['arm'])} vs GRPO {fmt(p['grpo'])}, diff {diff:+.3f}, threshold "
                    f"{p.get('threshold') if p.get('threshold') is not None else '-'}" if "grpo" in p and diff is not None
                    else f"arm {fmt(p['arm'])} (95% CI {p['arm'].get('ci95')}) vs bound {p.get('bound')}" if "bound" in p
                    else f"arm {fmt(p['arm'])}, reached {p.get('reached', '-')}/{p.get('runs', '-')}")
            print(f"    {p['check']}: {what}: {p['verdict']}")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    (ax_step, ax_time), (ax_pass, ax_bar) = axes
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, a) in enumerate(arms.items()):
        c = colors[i % len(colors)]
        for ax, key in ((ax_step, "band_step"), (ax_time, "band_trainer_s")):
            b = a[key]
            if not b["x"]:
                continue
            lo = [m - s for m, s in zip(b["mean"], b["sd"])]
            hi = [m + s for m, s in zip(b["mean"], b["sd"])]
            ax.plot(b["x"], b["mean"], color=c, label=f"{name} (n={a['greedy']['n']})",
                    marker="o" if key == "band_step" else None, ms=3)
            ax.fill_between(b["x"], lo, hi, color=c, alpha=0.15)
        runs = result["runs"].get(name, [])
        for r in runs:
            pts = [p for p in r["curve"] if p.get("pass_at_k") is not None and p.get("k") == result["final_k"]]
            ax_pass.plot([p["step"] for p in pts], [p["pass_at_k"] for p in pts], color=c, marker="o", alpha=0.6,
                         label=name if r is runs[0] else None)
    S = result["steps"]
    ax_step.axvline(S, color="gray", ls=":", lw=1)
    ax_step.set(xlabel="step", ylabel="held-out greedy accuracy",
                title=f"greedy vs step (mean ± SD over seeds; D3S runs on past step {S})")
    ax_time.set(xlabel="trainer seconds (old-policy pass + credit + update)", ylabel="held-out greedy accuracy",
                title="greedy vs trainer time (mean ± SD, interpolated between evaluations)")
    ax_pass.set(xlabel="step", ylabel=f"held-out pass@{result['final_k']}",
                title=f"pass@{result['final_k']} (step 0, step {S}, D3S's last step; one point per seed)")
    names = list(arms)
    fr = [arms[n]["tokens_in_backward_frac"] for n in names]
    ts = [arms[n]["trainer_s"] for n in names]
    x = list(range(len(names)))
    ax_bar.bar([i - 0.2 for i in x], [100 * (f["mean"] or 0) for f in fr], 0.4,
               yerr=[100 * (f["sd"] or 0) for f in fr], color="tab:gray", label="% tokens in backward")
    ax_bar.set_ylabel("% of completion tokens in the loss (S steps)")
    ax2 = ax_bar.twinx()
    ax2.bar([i + 0.2 for i in x], [t["mean"] or 0 for t in ts], 0.4, yerr=[t["sd"] or 0 for t in ts],
            color="tab:blue", alpha=0.6, label="trainer seconds")
    ax2.set_ylabel(f"trainer seconds over {S} steps")
    ax_bar.set_xticks(x, names)
    ax_bar.set_title("tokens in backward (gray) and trainer seconds (blue), mean ± SD")
    for ax in (ax_step, ax_time, ax_pass):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"credit ablation: {result['task']}, seeds {result['seeds']}\n{result['machine']}; 1-min load "
                 f"average during training {result['load_range']}; {result['date']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
        "command": "python " + " ".join(["benchmarks/credit_ablation.py", *sys.argv[1:]]),
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
                   help="D3S runs this many steps with its schedule over S (default 2S)")
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
    args.d3s_steps = args.d3s_steps or 2 * args.steps
    args.eval_every = args.eval_every or (2 if q else EVAL_EVERY)
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
                                None, list(ARMS), 3, STEPS, 2 * STEPS, EVAL_EVERY)
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
