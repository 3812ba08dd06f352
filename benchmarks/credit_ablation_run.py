"""Running one arm x seed of benchmarks/credit_ablation.py: ``tokencredit train`` in its own process
(resumed from its newest checkpoint when killed), the held-out evaluation of its exported weights by
benchmarks/eval_heldout.py in fresh processes (cached per step), the 1-minute load average sampled
throughout, and the run's record (curve of accuracy against steps and trainer seconds, token and time
totals) written as ``<arm>_seed<s>.json``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from credit_ablation_plan import ROOT, STEP_TIMINGS, TASK, TRAINER_TIMINGS, Plan, eval_steps, k_at  # noqa: E402

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


# ----------------------------------------------------------------------------- a run's record

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
