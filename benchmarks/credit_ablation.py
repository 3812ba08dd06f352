"""Credit-module ablation: GRPO vs D3S vs THR(p>0) vs THR(p<0) vs TW on the quickstart task.

Every arm is the quickstart recipe (bundled SmolLM2-135M-Instruct, 1-digit mixed arithmetic,
8 prompts x 8 samples, 12 steps, lr 2e-5, vLLM rollouts, DeepSpeed trainer) with the same
seeds and step budget; the arms differ only in ``algorithm.credit`` (and its module's keys):

    grpo        no credit module (the quickstart itself)
    d3s         credit=[d3s], the spec's recommended schedule (N_s G/4 -> G, K 20% -> 100%)
    thr_exploit credit=[thr], thr.p=+0.5  (exploitation: expected to help greedy accuracy)
    thr_explore credit=[thr], thr.p=-0.5  (exploration: expected to help pass@k)
    tw          credit=[tw], tw.alpha=1.7 (the official code's weights in [1, alpha])

Each arm is a real ``tokencredit train`` run (one subprocess each, run one after another in
this one invocation), evaluated on the 100 held-out prompts every ``--eval-every`` steps
(greedy accuracy, and pass@k with k = eval.pass_k samples at the rollout temperature).

Reported per arm: final held-out greedy accuracy and pass@k, tokens and rows entering the
backward pass (summed over steps), and trainer seconds: the trainer-side wall time of a step,
i.e. the old-policy pass (log-probs, entropy, hidden states) + the credit computation + the
update, summed over steps. Generation, weight sync and evaluation are excluded: they are the
same work for every arm. "Seconds to GRPO's final greedy accuracy" is the trainer time up to
the first evaluation at which the arm reached the GRPO arm's final accuracy (None if never);
"GRPO greedy at same s" is the GRPO arm's accuracy after as many trainer seconds as the arm
used in all (linear between GRPO's evaluations): the comparison at equal trainer time.

    python benchmarks/credit_ablation.py                  # all arms, ~40 min on 2 CPU cores
    python benchmarks/credit_ablation.py --arms grpo d3s  # a subset
    python benchmarks/credit_ablation.py --steps 2 --eval-every 1 --out /tmp/abl  # smoke
    python benchmarks/credit_ablation.py --reuse grpo d3s thr_exploit thr_explore tw  # re-summarise only

Writes benchmarks/results/credit_ablation.json and .png and prints a table. One seed: the
differences between arms at this scale are a few held-out prompts; read them as such.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

ARMS: dict[str, list[str]] = {
    "grpo": [],
    "d3s": ["algorithm.credit=[d3s]"],
    "thr_exploit": ["algorithm.credit=[thr]", "algorithm.thr.p=0.5"],
    "thr_explore": ["algorithm.credit=[thr]", "algorithm.thr.p=-0.5"],
    "tw": ["algorithm.credit=[tw]", "algorithm.tw.alpha=1.7"],
}
TRAINER_TIMINGS = ("timing/old_logp", "timing/credit", "timing/update")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "quickstart.yaml"))
    p.add_argument("--steps", type=int, default=None, help="override trainer.steps (default: the recipe's)")
    p.add_argument("--eval-every", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS), help="folder for credit_ablation.{json,png}")
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "credit_ablation"))
    p.add_argument("--extra", nargs="*", default=[], help="more dotted overrides for every arm")
    p.add_argument("--reuse", nargs="*", default=[], choices=list(ARMS),
                   help="arms whose finished run folder under --runs-dir is summarised, not re-run "
                        "(e.g. to re-run one arm that shared the machine with another job)")
    return p.parse_args()


def run_arm(arm: str, args: argparse.Namespace) -> Path:
    overrides = [f"name=ablation_{arm}", f"logging.dir={args.runs_dir}", f"logging.run_name={arm}",
                 f"eval.every={args.eval_every}", "logging.progress=false", "checkpoint.save_final=false",
                 "checkpoint.export_hf=false",
                 *ARMS[arm], *args.extra]
    if args.steps is not None:
        overrides.append(f"trainer.steps={args.steps}")
    run_dir = Path(args.runs_dir) / arm
    if run_dir.exists():  # a fresh run each time; never resume an older arm by accident
        shutil.rmtree(run_dir)
    cmd = [sys.executable, "-m", "rl.cli", "train", args.recipe, *overrides]
    print(f"[ablation] {arm}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"[ablation] arm {arm!r} failed with exit code {proc.returncode} (run dir {run_dir})")
    print(f"[ablation] {arm}: done in {time.perf_counter() - t0:.0f} s", flush=True)
    return run_dir


def summarise(arm: str, run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    trainer_s, curve = 0.0, []
    tokens = rows_bw = 0.0
    for r in rows:
        if r["step"] > 0:
            trainer_s += sum(r.get(k, 0.0) for k in TRAINER_TIMINGS)
            tokens += r.get("batch/loss_tokens", 0.0)
            rows_bw += r.get("train/rows_in_backward", 0.0)
        if "eval/greedy_acc" in r:
            curve.append({"step": r["step"], "trainer_s": round(trainer_s, 2), "greedy": r["eval/greedy_acc"],
                          "pass_at_k": r["eval/pass_at_k"]})
    steps = [r for r in rows if r["step"] > 0]
    completion_tokens = sum(r["batch/loss_tokens"] / max(r["batch/loss_tokens_frac"], 1e-9) for r in steps)
    return {
        "arm": arm, "overrides": ARMS[arm], "run_dir": str(run_dir), "curve": curve,
        "greedy_final": curve[-1]["greedy"], "pass_at_k_final": curve[-1]["pass_at_k"],
        "greedy_start": curve[0]["greedy"], "pass_at_k_start": curve[0]["pass_at_k"],
        "trainer_s": round(trainer_s, 2),
        "tokens_in_backward": int(tokens), "tokens_in_backward_frac": round(tokens / max(completion_tokens, 1), 4),
        "rows_in_backward": int(rows_bw),
        "train_reward_last": steps[-1].get("train/reward_mean") if steps else None,
    }


def seconds_to_reach(arm: dict, target: float) -> float | None:
    for point in arm["curve"]:
        if point["greedy"] >= target:
            return point["trainer_s"]
    return None


def greedy_at(arm: dict, seconds: float) -> float:
    """The arm's greedy accuracy at ``seconds`` of trainer time, linear between evaluations
    (its final value past its last one)."""
    pts = arm["curve"]
    for a, b in zip(pts, pts[1:]):
        if a["trainer_s"] <= seconds <= b["trainer_s"]:
            w = (seconds - a["trainer_s"]) / max(b["trainer_s"] - a["trainer_s"], 1e-9)
            return round(a["greedy"] + w * (b["greedy"] - a["greedy"]), 4)
    return pts[-1]["greedy"]


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = result["arms"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for a in arms:
        xs = [p["trainer_s"] for p in a["curve"]]
        axes[0].plot(xs, [p["greedy"] for p in a["curve"]], marker="o", label=a["arm"])
        axes[1].plot([p["step"] for p in a["curve"]], [p["pass_at_k"] for p in a["curve"]], marker="o", label=a["arm"])
    axes[0].set(xlabel="trainer seconds (old-policy pass + credit + update)", ylabel="held-out greedy accuracy",
                title="greedy accuracy vs trainer time")
    axes[1].set(xlabel="step", ylabel=f"held-out pass@{result['pass_k']}", title=f"pass@{result['pass_k']} vs step")
    names = [a["arm"] for a in arms]
    axes[2].bar(names, [100 * a["tokens_in_backward_frac"] for a in arms], color="tab:gray")
    axes[2].set(ylabel="% of completion tokens in the loss", title="tokens entering backward")
    for i, a in enumerate(arms):
        axes[2].text(i, 100 * a["tokens_in_backward_frac"], f"{a['trainer_s']:.0f} s", ha="center", va="bottom")
    for ax in axes[:2]:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"credit ablation on {result['recipe']} ({result['steps']} steps, one seed); bar labels: trainer seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    args = parse_args()
    from omegaconf import OmegaConf
    recipe = OmegaConf.load(args.recipe)
    steps = args.steps or int(recipe.trainer.steps)
    arms = [summarise(arm, Path(args.runs_dir) / arm if arm in args.reuse else run_arm(arm, args))
            for arm in args.arms]
    by_name = {a["arm"]: a for a in arms}
    summary = {}
    if "grpo" in by_name:
        base = by_name["grpo"]
        for a in arms:
            reach = seconds_to_reach(a, base["greedy_final"])
            a["trainer_s_to_grpo_final_greedy"] = reach
            a["trainer_time_ratio_to_grpo"] = round(a["trainer_s"] / base["trainer_s"], 3)
            a["reach_time_ratio_to_grpo"] = None if reach is None else round(reach / base["trainer_s"], 3)
            a["grpo_greedy_at_same_trainer_s"] = greedy_at(base, a["trainer_s"])
        summary = {a["arm"]: {k: a[k] for k in ("greedy_final", "pass_at_k_final", "tokens_in_backward_frac",
                                                "trainer_time_ratio_to_grpo", "reach_time_ratio_to_grpo",
                                                "grpo_greedy_at_same_trainer_s")}
                   for a in arms}
    result = {
        "benchmark": "credit_ablation",
        "command": "python " + " ".join(["benchmarks/credit_ablation.py", *sys.argv[1:]]),
        "recipe": Path(args.recipe).name, "steps": steps, "eval_every": args.eval_every, "reused": args.reuse,
        "pass_k": int(recipe.get("eval", {}).get("pass_k", 4)),
        "machine": f"{os.cpu_count()} CPU cores, no GPU; load average at end {os.getloadavg()[0]:.1f}",
        "summary": summary, "arms": arms,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "credit_ablation.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "credit_ablation.png")
    k = result["pass_k"]
    print(f"\n{'arm':<12} {'greedy':>7} {'pass@' + str(k):>7} {'tokens bw':>10} {'rows bw':>8} {'trainer s':>10} "
          f"{'x GRPO':>7} {'s to GRPO final':>16} {'GRPO greedy at same s':>22}")
    for a in arms:
        reach = a.get("trainer_s_to_grpo_final_greedy")
        print(f"{a['arm']:<12} {a['greedy_final']:>7.2f} {a['pass_at_k_final']:>7.2f} "
              f"{a['tokens_in_backward']:>5} ({100 * a['tokens_in_backward_frac']:>3.0f}%) {a['rows_in_backward']:>6} "
              f"{a['trainer_s']:>10.1f} {a.get('trainer_time_ratio_to_grpo', float('nan')):>7.2f} "
              f"{'never' if reach is None else f'{reach:.1f}':>16} {a.get('grpo_greedy_at_same_trainer_s', float('nan')):>22.3f}")
    print(f"\nwrote {out / 'credit_ablation.json'} and {out / 'credit_ablation.png'}")


if __name__ == "__main__":
    main()
