"""What does each credit module add to one training step, in time and in resident memory?

One process, no Ray: a ``PolicyEngine`` (DeepSpeed, the bundled SmolLM2-135M-Instruct, the
quickstart recipe's settings) runs a trainer rank's step pieces on one synthetic rollout batch
(``--rows`` rows = prompts x ``rollout.n`` samples, prompts ~40 tokens shared by their group,
completions of 1/2 to 1 x ``--completion-len`` random tokens, Bernoulli(0.4) rewards per row):

    forward        the old-policy pass (log-probs, + entropy / hidden states the chain needs)
    credit         advantages, a ``PolicySnapshot`` of the live output head, the modules
    update         ``engine.train_step`` over the rows still in the loss (as rl/trainer_rank.py)

The first two are ``GRPOObjective.prepare``, the very code a rank executes (D3S's sample
level runs before the old-policy pass, which then covers only the kept rows).

Configs: ``grpo`` (forward_stats + update, the baseline the ratios use), ``grpo_onpolicy``
(update only: what a rank actually runs for plain one-update GRPO,
``GRPOObjective.needs_old_pass``), ``d3s`` (at training progress ``--d3s-progress``, default 0: the most rows
and tokens dropped), ``thr_group``, ``thr_full`` (``algorithm.thr.vocab``) and ``tw``.
Configs are interleaved within each repeat (order rotated per repeat) and the median over
repeat (by CPU time) is reported whole, wall seconds and process CPU seconds (steadier on
shared cores) side by side.

Memory is the process's resident set (RSS), not tracemalloc, which does not see torch's
allocator. The kernel's high-water mark (VmHWM) is reset before each phase through
/proc/self/clear_refs (after gc and malloc_trim); where that is not allowed a thread samples
VmRSS every 2 ms instead. "peak" is the highest RSS of the step; "extra" is that minus the RSS
before the step (model, optimizer state and the batch already resident).

    python benchmarks/credit_overhead.py                  # 64 rows x 32 tokens, 3 repeats
    python benchmarks/credit_overhead.py --quick          # 16 rows x 16 tokens, 1 repeat (smoke)

Runs with 1 torch thread by default. On the 2 shared cores (load average 5-10) 2 threads made
the same 16-row step 10-20x slower (OpenMP threads spinning against other jobs' processes) and
still 2-3x slower with OMP_WAIT_POLICY=PASSIVE, measured here; ``--threads 2`` to try again.

Writes benchmarks/results/credit_overhead.json (with a "summary") and .png, and prints a table.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from rl.batch import build_experience
from rl.config import Config, load_config
from rl.metrics import RankMetrics
from rl.models import resolve_model
from rl.objectives.grpo import GRPOObjective
from rl.trainer_rank import micro_batches
from rollout.types import Completion

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/quickstart.yaml"
# name -> (credit chain, extra recipe overrides, run the old-policy pass even if a rank would not)
CONFIGS: dict[str, tuple[list[str], list[str], bool]] = {
    "grpo_onpolicy": ([], [], False),
    "grpo": ([], [], True),
    "d3s": (["d3s"], [], True),
    "thr_group": (["thr"], ["algorithm.thr.vocab=group"], True),
    "thr_full": (["thr"], ["algorithm.thr.vocab=full"], True),
    "tw": (["tw"], [], True),
}
BASELINE = "grpo"


# ---------------------------------------------------------------- resident memory
def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed heap back so the next phase starts clean
    except OSError:
        pass


class PeakRSS:
    """Highest resident set size (MiB) between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5 = reset VmHWM to the current RSS
            self.method = "VmHWM reset via /proc/self/clear_refs"
        except OSError:
            self.method = "VmRSS sampled every 2 ms"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, _kib("VmRSS"))

    def start(self) -> float:
        _trim()
        rss = _kib("VmRSS")
        if self.method.startswith("VmHWM"):
            Path("/proc/self/clear_refs").write_text("5")
        else:
            self._peak, self._stop = rss, threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return rss / 1024

    def stop(self) -> float:
        if self._thread is None:
            return _kib("VmHWM") / 1024
        self._stop.set()
        self._thread.join()
        self._thread = None
        return max(self._peak, _kib("VmRSS")) / 1024


# ---------------------------------------------------------------- synthetic rollout batch
def make_rollout(args, vocab: int, group_size: int, seed: int = 0):
    """(prompt ids, groups of Completions, rewards): real group structure, random token ids."""
    g = torch.Generator().manual_seed(seed)
    n_prompts = args.rows // group_size
    prompts, groups, rewards = [], [], []
    for i in range(n_prompts):
        plen = int(torch.randint(args.prompt_len - 4, args.prompt_len + 5, (1,), generator=g))
        prompts.append(torch.randint(100, vocab, (plen,), generator=g).tolist())
        comps = []
        for _ in range(group_size):
            n = int(torch.randint(max(1, args.completion_len // 2), args.completion_len + 1, (1,), generator=g))
            comps.append(Completion(i, torch.randint(100, vocab, (n,), generator=g).tolist(), None, "",
                                    "length" if n == args.completion_len else "stop"))
        groups.append(comps)
        rewards += torch.bernoulli(torch.full((group_size,), args.p_correct), generator=g).tolist()
    return prompts, groups, rewards


class Clock:
    """``with clock(phase):`` adds wall seconds and process CPU seconds to ``res`` and keeps the
    phase's peak RSS (a phase may be entered more than once; ``old_logp`` is the "forward" phase).

    CPU seconds count only what this process ran, so they are steadier than wall time when
    other jobs share the cores; with one torch thread they are the work done.
    """

    ALIAS = {"old_logp": "forward"}

    def __init__(self, mem: PeakRSS, res: dict) -> None:
        self.mem, self.res = mem, res
        for phase in ("forward", "credit", "update"):
            res.update({f"{phase}_s": 0.0, f"{phase}_cpu_s": 0.0, f"{phase}_peak_mb": 0.0, f"{phase}_extra_mb": 0.0})

    @contextmanager
    def __call__(self, phase: str):
        phase = self.ALIAS.get(phase, phase)
        rss = self.mem.start()
        w0, c0 = time.perf_counter(), time.process_time()
        yield
        self.res[f"{phase}_s"] += time.perf_counter() - w0
        self.res[f"{phase}_cpu_s"] += time.process_time() - c0
        peak = self.mem.stop()
        self.res.setdefault("rss_before_mb", rss)
        if peak > self.res[f"{phase}_peak_mb"]:
            self.res[f"{phase}_peak_mb"], self.res[f"{phase}_extra_mb"] = peak, peak - rss


# ---------------------------------------------------------------- one rank step
def run_step(engine, cfg: Config, objective: GRPOObjective, force_old: bool, rollout, pad_id: int,
             progress: float, mem: PeakRSS) -> dict:
    """What a trainer rank runs for one batch: ``GRPOObjective.prepare`` (old pass + credit, the same
    code) and one optimizer step over the rows still in the loss; seconds and peak RSS per phase."""
    exp = build_experience(*rollout, pad_id, correct=[r > 0.5 for r in rollout[2]])
    res: dict = {"load_1min": os.getloadavg()[0]}
    clock = Clock(mem, res)
    total = 100
    means, _ = objective.prepare(engine, exp, round(progress * (total - 1)), total, clock, force_old_pass=force_old)
    res["credit_metrics"] = means
    with clock("update"):
        rows = torch.arange(exp.num_rows)[exp.active_rows()]
        batch = objective.train_rows(exp, rows)
        parts = micro_batches(batch, -(-rows.numel() // cfg.trainer.micro_batch_size), "loss_mask", batch)
        engine.train_step([(objective, parts, objective.norm_counts(batch))], RankMetrics())
    res["step_cpu_s"] = res["forward_cpu_s"] + res["credit_cpu_s"] + res["update_cpu_s"]
    res["step_s"] = res["forward_s"] + res["credit_s"] + res["update_s"]
    res["peak_mb"] = max(res["forward_peak_mb"], res["credit_peak_mb"], res["update_peak_mb"])
    res["extra_peak_mb"] = res["peak_mb"] - res["rss_before_mb"]
    res["rows_in_backward"] = int(rows.numel())
    res["old_pass_rows"] = int(res["credit_metrics"].get("batch/old_pass_rows", 0))
    res["tokens_in_backward"] = int(batch["prompt_ids"].numel() + batch["completion_ids"].numel())  # padded
    res["real_tokens_in_backward"] = int(batch["prompt_mask"].sum() + batch["completion_mask"].sum())
    res["loss_tokens"] = int(batch["loss_mask"].sum())
    return res


# ---------------------------------------------------------------- reporting
def median_run(runs: list[dict]) -> dict:
    """The repeat with the median CPU time (lower middle for an even count), all its figures kept
    together so that the phases add up to the step; every repeat is kept under "runs"."""
    order = sorted(range(len(runs)), key=lambda i: runs[i]["step_cpu_s"])
    out = dict(runs[order[(len(runs) - 1) // 2]])
    out["runs"] = [{k: v for k, v in r.items() if k != "credit_metrics"} for r in runs]
    return out


def add_ratios(results: dict) -> None:
    base, onpolicy = results[BASELINE], results.get("grpo_onpolicy")
    for r in results.values():
        if onpolicy is not None:  # what a rank runs for plain one-update GRPO (no old pass)
            r["step_cpu_ratio_vs_onpolicy"] = r["step_cpu_s"] / onpolicy["step_cpu_s"]
        for clock in ("", "_cpu"):
            r[f"step{clock}_ratio"] = r[f"step{clock}_s"] / base[f"step{clock}_s"]
            r[f"credit{clock}_frac_of_step"] = r[f"credit{clock}_s"] / r[f"step{clock}_s"]
        r["peak_ratio"] = r["peak_mb"] / base["peak_mb"]


COLUMNS = (  # header, result key, format spec (the header gets the same width)
    ("config", None, "<14"), ("fwd s", "forward_s", ">8.2f"), ("credit s", "credit_s", ">9.2f"),
    ("update s", "update_s", ">9.2f"), ("step s", "step_s", ">8.2f"), ("x grpo", "step_ratio", ">7.2f"),
    ("credit%", "credit_frac_of_step", ">8.1%"), ("cpu s", "step_cpu_s", ">8.2f"),
    ("x cpu", "step_cpu_ratio", ">7.2f"), ("x onp", "step_cpu_ratio_vs_onpolicy", ">7.2f"), ("crd cpu%", "credit_cpu_frac_of_step", ">9.1%"),
    ("peak MiB", "peak_mb", ">9.0f"), ("x peak", "peak_ratio", ">7.3f"),
    ("step+MiB", "extra_peak_mb", ">9.0f"), ("crd+MiB", "credit_extra_mb", ">8.0f"),
    ("rows", "rows_in_backward", ">5.0f"), ("tok bwd", "tokens_in_backward", ">8.0f"),
    ("loss tok", "loss_tokens", ">9.0f"),
)


def print_table(results: dict) -> None:
    print("".join(format(head, spec.split(".")[0]) for head, _, spec in COLUMNS))
    for name, r in results.items():
        print("".join(format(name if key is None else r[key], spec) for _, key, spec in COLUMNS))


def plot(results: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = range(len(names))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    bottom = [0.0] * len(names)
    for phase, color in (("forward", "#4c72b0"), ("credit", "#dd8452"), ("update", "#55a868")):
        vals = [results[n][f"{phase}_cpu_s"] for n in names]
        ax1.bar(x, vals, bottom=bottom, color=color, label=f"{phase} (CPU s)")
        bottom = [b + v for b, v in zip(bottom, vals)]
    wall = [results[n]["step_s"] for n in names]
    ax1.plot(x, wall, "kD", ms=5, label="step wall s")
    for i, n in enumerate(names):
        ax1.text(i, max(bottom[i], wall[i]) * 1.03, f"{results[n]['step_cpu_ratio']:.2f}x", ha="center",
                 va="bottom", fontsize=8)
    ax1.set_ylim(0, max(max(bottom), max(wall)) * 1.15)
    ax1.set_ylabel("seconds per step (median-CPU repeat)")
    ax1.set_title("step time by phase; label: CPU-time ratio to grpo", fontsize=9)
    ax1.legend(fontsize=7)
    base = results[BASELINE]["peak_mb"]
    before = [results[n]["rss_before_mb"] for n in names]
    ax2.bar(x, before, color="#8c8c8c", label="RSS before the step")
    ax2.bar(x, [results[n]["extra_peak_mb"] for n in names], bottom=before, color="#c44e52",
            label="step's extra peak")
    ax2.axhline(1.5 * base, ls="--", color="k", lw=1, label="1.5 x grpo peak")
    ax2.set_ylim(0, 1.6 * base)
    ax2.set_ylabel("resident memory, MiB")
    ax2.set_title("peak RSS of the step", fontsize=9)
    ax2.legend(fontsize=7, loc="lower right")
    for ax in (ax1, ax2):
        ax.set_xticks(list(x), names, rotation=30, fontsize=8)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summarize(results: dict, args, command: str) -> dict:
    base = results[BASELINE]
    thr = {n: r for n, r in results.items() if n.startswith("thr")}
    credit = {n: r for n, r in results.items() if not n.startswith("grpo")}

    def pick(key: str, rows: dict, nd: int = 3) -> dict:
        return {n: round(r[key], nd) for n, r in rows.items()}

    return {
        "command": command,
        "how_to_read": "each config's figures come from its repeat with the median CPU time; CPU seconds are the "
                       "process's own work (1 torch thread) and are the figures to trust on shared cores, wall "
                       "seconds include waiting for other jobs; ratios are to 'grpo' (old-policy pass + update), "
                       "'_vs_onpolicy' to the update alone (what a rank runs for plain one-update GRPO)",
        "batch": f"{args.rows} rows ({args.rows // args.group_size} prompts x {args.group_size}), prompt ~{args.prompt_len} "
                 f"tokens, completion <= {args.completion_len} tokens, median of {args.repeats} repeats",
        "grpo_step_s": round(base["step_s"], 2), "grpo_step_cpu_s": round(base["step_cpu_s"], 2),
        "grpo_onpolicy_step_cpu_s": round(results["grpo_onpolicy"]["step_cpu_s"], 2) if "grpo_onpolicy" in results else None,
        "step_ratio_wall": pick("step_ratio", credit), "step_ratio_cpu": pick("step_cpu_ratio", credit),
        "step_ratio_cpu_vs_onpolicy": pick("step_cpu_ratio_vs_onpolicy", credit) if "grpo_onpolicy" in results else None,
        "credit_s": pick("credit_s", credit), "credit_cpu_s": pick("credit_cpu_s", credit),
        "credit_frac_of_step_wall": pick("credit_frac_of_step", credit, 4),
        "credit_frac_of_step_cpu": pick("credit_cpu_frac_of_step", credit, 4),
        "peak_mb": pick("peak_mb", results, 0), "peak_ratio": pick("peak_ratio", credit),
        "step_extra_peak_mb": pick("extra_peak_mb", results, 0), "credit_extra_peak_mb": pick("credit_extra_mb", credit, 0),
        "rows_in_backward": {n: int(r["rows_in_backward"]) for n, r in results.items()},
        "loss_tokens": {n: int(r["loss_tokens"]) for n, r in results.items()},
        "target_thr_credit_le_10pct_of_step_cpu": {n: r["credit_cpu_frac_of_step"] <= 0.10 for n, r in thr.items()},
        "target_thr_credit_le_10pct_of_step_wall": {n: r["credit_frac_of_step"] <= 0.10 for n, r in thr.items()},
        "target_peak_le_1.5x_grpo": {n: r["peak_ratio"] <= 1.5 for n, r in credit.items()},
    }


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=64, help="rollout rows (prompts x group size)")
    ap.add_argument("--group-size", type=int, default=8, help="samples per prompt (rollout.n)")
    ap.add_argument("--prompt-len", type=int, default=40, help="mean prompt length (+-4)")
    ap.add_argument("--completion-len", type=int, default=32, help="longest completion; lengths uniform in [L/2, L]")
    ap.add_argument("--p-correct", type=float, default=0.4, help="Bernoulli reward probability per row")
    ap.add_argument("--repeats", type=int, default=3, help="steps per config (median reported)")
    ap.add_argument("--d3s-progress", type=float, default=0.0, help="training progress p of the D3S schedule")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (trainer.torch_threads); see module doc")
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--quick", action="store_true", help="16 rows x 16 tokens, 1 repeat (smoke test)")
    ap.add_argument("--override", nargs="*", default=[], help="extra recipe overrides, e.g. model.dtype=float32")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/credit_overhead.json"))
    args = ap.parse_args()
    if args.quick:
        args.rows, args.completion_len, args.repeats = 16, 16, 1
    if args.rows % args.group_size:
        ap.error(f"--rows {args.rows} must be a multiple of --group-size {args.group_size}")
    if BASELINE not in args.configs:
        args.configs = [BASELINE] + args.configs
    command = "python " + " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])
    load_before = uptime()
    t_start = time.perf_counter()

    from rl.engine import PolicyEngine

    common = [f"trainer.torch_threads={args.threads}", f"rollout.n={args.group_size}",
              f"trainer.prompts_per_step={args.rows // args.group_size}",
              f"rollout.max_tokens={args.completion_len}"] + list(args.override)
    cfgs = {n: load_config(RECIPE, common + [f"algorithm.credit=[{','.join(c)}]"] + o)
            for n, (c, o, _) in CONFIGS.items() if n in args.configs}
    chains = {n: GRPOObjective(cfg) for n, cfg in cfgs.items()}
    model_path = resolve_model("smollm2-135m")
    base_cfg = cfgs[BASELINE]
    t0 = time.perf_counter()
    engine = PolicyEngine(base_cfg, model_path, 0, 1, "127.0.0.1", free_port(), 10)
    load_s = time.perf_counter() - t0
    from transformers import AutoConfig

    hf = AutoConfig.from_pretrained(model_path)
    pad_id = hf.pad_token_id if hf.pad_token_id is not None else (hf.eos_token_id or 0)
    rollout = make_rollout(args, hf.vocab_size, args.group_size)
    mem = PeakRSS()

    # warm-up: allocates the optimizer state and first-call buffers, so repeats compare like with like
    run_step(engine, base_cfg, chains[BASELINE], True, rollout, pad_id, args.d3s_progress, mem)
    runs: dict[str, list[dict]] = {n: [] for n in args.configs}
    for rep in range(args.repeats):
        order = args.configs[rep % len(args.configs):] + args.configs[:rep % len(args.configs)]
        for name in order:  # rotated each repeat so that no config always follows the same one
            r = run_step(engine, cfgs[name], chains[name], CONFIGS[name][2], rollout, pad_id, args.d3s_progress, mem)
            runs[name].append(r)
            print(f"[{rep + 1}/{args.repeats}] {name:<14} step {r['step_s']:.2f}s wall {r['step_cpu_s']:.2f}s cpu "
                  f"(fwd {r['forward_s']:.2f} credit {r['credit_s']:.2f} update {r['update_s']:.2f}) "
                  f"peak {r['peak_mb']:.0f} MiB, load {r['load_1min']:.1f}",
                  file=sys.stderr, flush=True)
    results = {n: median_run(runs[n]) for n in args.configs}
    add_ratios(results)
    load_after = uptime()
    run_s = time.perf_counter() - t_start

    print_table(results)
    rewards = torch.tensor(rollout[2]).view(-1, args.group_size)
    mixed = int(((rewards.sum(1) > 0) & (rewards.sum(1) < args.group_size)).sum())
    out = {
        "description": __doc__.split("\n\n")[0],
        "summary": summarize(results, args, command),
        "setup": {
            "model": "smollm2-135m", "recipe": str(RECIPE.relative_to(REPO)), "overrides": common,
            "dtype": base_cfg.model.dtype, "micro_batch_size": base_cfg.trainer.micro_batch_size,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "engine_load_s": round(load_s, 1), "total_run_s": round(run_s, 1), "memory_method": mem.method,
            "groups_mixed": mixed, "groups": rewards.shape[0], "reward_mean": float(rewards.mean()),
            "completion_tokens": int(sum(len(c.token_ids) for grp in rollout[1] for c in grp)),
            "d3s_progress": args.d3s_progress, "uptime_before": load_before, "uptime_after": load_after,
        },
        "results": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    plot(results, path.with_suffix(".png"), f"credit overhead, SmolLM2-135M, {out['summary']['batch']}; "
         f"{torch.get_num_threads()} threads, load {load_before.split('load average:')[-1].strip()}")
    print(f"-> {path} and {path.with_suffix('.png').name}", file=sys.stderr)


if __name__ == "__main__":
    main()
