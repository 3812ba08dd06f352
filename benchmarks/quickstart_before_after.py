"""Quickstart step time of this checkout against an older commit, side by side on one machine.

The older commit is checked out in a git worktree (``--worktree``, default under /tmp) and both run
``recipes/quickstart.yaml`` for ``--steps`` steps with the same venv, in alternating order
(before, after, before, after, ...) so that a change in machine load hits both alike. Each extra
``--after-variant`` runs this checkout again with those overrides (e.g. ``trainer.bf16_weights=true``,
the pre-refactor precision). Reported per variant: the median of ``timing/step`` (generation + update
+ sync, the loop's own timer) over every step but the first of every repeat, its quartiles, and the
ratio to the before commit's median; the 1-minute load average before each run.

    python benchmarks/quickstart_before_after.py --before 8afcc64 --steps 6 --repeats 2 \\
        --after-variant trainer.bf16_weights=true

Writes benchmarks/results/quickstart_before_after.{json,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from bench_common import load_average, machine, median_spread  # noqa: E402


def ensure_worktree(commit: str, path: Path) -> Path:
    if not (path / ".git").exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), commit], check=True)
    subprocess.run(["git", "-C", str(path), "checkout", "--detach", commit], check=True, capture_output=True)
    return path


def run_quickstart(code_dir: Path, out_dir: Path, name: str, steps: int, extra: list[str]) -> dict:
    """One quickstart run of the code in ``code_dir``; its per-step seconds and the load before it."""
    over = [f"trainer.steps={steps}", f"name={name}", f"logging.dir={out_dir}", *extra]
    shutil.rmtree(out_dir / name, ignore_errors=True)  # the old commit appends to an existing metrics.jsonl
    load = load_average()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rl.cli", "train", "recipes/quickstart.yaml", *over],
                          cwd=code_dir, env={**os.environ, "PYTHONPATH": str(code_dir)}, capture_output=True, text=True,
                          timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"quickstart in {code_dir} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out_dir / name / "metrics.jsonl").read_text().splitlines()]
    steps_s = [r["timing/step"] for r in rows if "timing/step" in r]
    return {"name": name, "overrides": over, "load_before": load, "wall_s": round(time.perf_counter() - t0, 1),
            "step_s": steps_s}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="the older commit")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--after-variant", action="append", default=[],
                    help="space-separated overrides for one more run of this checkout per repeat")
    ap.add_argument("--worktree", type=Path, default=Path("/tmp/tokencredit-before"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "quickstart_before_after.json")
    args = ap.parse_args(argv)

    before_dir = ensure_worktree(args.before, args.worktree)
    after_commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, check=True).stdout.strip()
    variants = {"before": (before_dir, []), "after": (REPO, [])}
    for v in args.after_variant:
        variants[f"after {v}"] = (REPO, v.split())
    runs_dir = Path("/tmp/quickstart_before_after_runs")
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    for r in range(args.repeats):
        for label, (code, extra) in variants.items():
            name = f"{label.replace(' ', '_').replace('=', '-')}_{r}"
            print(f"[{r + 1}/{args.repeats}] {label} ...", flush=True)
            runs[label].append(run_quickstart(code, runs_dir, name, args.steps, extra))
            print(f"    step seconds {[round(s, 1) for s in runs[label][-1]['step_s']]}", flush=True)

    def later_steps(label):  # the first step of each run includes one-off warm-up (compilation, caches)
        return [s for run in runs[label] for s in run["step_s"][1:]]

    base = statistics.median(later_steps("before"))
    summary = {label: {**median_spread(later_steps(label)),
                       "ratio_to_before": round(statistics.median(later_steps(label)) / base, 3)}
               for label in variants}
    command = "python benchmarks/quickstart_before_after.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"benchmark": "quickstart_before_after", "command": command, "before_commit": args.before,
              "after_commit": after_commit, "machine": machine(), "date": time.strftime("%Y-%m-%d"),
              "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(summary, runs, args.out.with_suffix(".png"))
    for label, s in summary.items():
        print(f"{label:40s} median {s['median']:.2f} s/step  ratio {s['ratio_to_before']:.3f}")


def plot(summary: dict, runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    for i, (label, rs) in enumerate(runs.items()):
        ys = [s for run in rs for s in run["step_s"][1:]]
        ax.scatter([i] * len(ys), ys, alpha=0.5)
        ax.hlines(summary[label]["median"], i - 0.3, i + 0.3, color="k")
    ax.set_xticks(range(len(runs)), [f"{k}\n×{summary[k]['ratio_to_before']:.2f}" for k in runs], fontsize=7)
    ax.set_ylabel("seconds per step (steps 2..N)")
    ax.set_title("quickstart step time, before vs after (alternating runs)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
