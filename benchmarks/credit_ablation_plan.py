"""What benchmarks/credit_ablation.py runs: the task and budget on top of the quickstart recipe (its
docstring says why this task), the arms, and ``Plan``: one arm x seed's overrides and the fingerprint that
ties a finished result to the plan that made it."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RECIPE = ROOT / "recipes" / "quickstart.yaml"

# The task and budget (on top of the quickstart recipe): see benchmarks/credit_ablation.py's docstring.
TASK = [
    "data.task.ops=[add]", "data.task.digits=2", "data.task.num_operands=2", "data.task.template=short",
    "data.task.num_train=2000", "data.task.num_test=200",
    "rollout.max_tokens=32", "rollout.max_model_len=192",
    "eval.num_prompts=200",
]
STEPS = 10  # the committed run's budget: 40 was planned, ~7 h for 3 seeds x 5 arms on 2 cores; 10 take ~1.6 h
EVAL_EVERY = 5
FINAL_K = 4


def default_d3s_steps(steps: int, eval_every: int) -> int:
    """D3S's run length: S plus half of S (rounded up to whole evaluation intervals), past its schedule."""
    half = -(-steps // 2)
    return steps + -(-half // eval_every) * eval_every

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

    def command(self, arms: list[str], seeds: list[int]) -> str:
        """The invocation that runs these arms x seeds under this plan (a --reuse summary records it too)."""
        parts = ["python benchmarks/credit_ablation.py", "--arms", *arms, "--seeds", *map(str, seeds),
                 "--steps", str(self.steps), "--d3s-steps", str(self.d3s_steps), "--eval-every", str(self.eval_every),
                 "--final-k", str(self.final_k), "--curve-k", str(self.curve_k),
                 "--checkpoint-every", str(self.checkpoint_every), "--eval", self.eval_mode]
        if Path(self.recipe).resolve() != RECIPE.resolve():
            parts += ["--recipe", self.recipe]
        return " ".join(parts + (["--extra", *self.extra] if self.extra else []))

    def fingerprint(self, arm: str, seed: int) -> str:
        key = json.dumps([Path(self.recipe).name, self.overrides(arm, seed, Path("RUNS")), self.final_k, self.curve_k,
                          self.eval_mode])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def eval_steps(plan: Plan, arm: str) -> list[int]:
    n = plan.steps_of(arm)
    return [s for s in range(plan.eval_every, n + 1, plan.eval_every)] or [n]


def k_at(plan: Plan, arm: str, step: int) -> int:
    return plan.final_k if step in (plan.steps, plan.steps_of(arm)) else plan.curve_k
