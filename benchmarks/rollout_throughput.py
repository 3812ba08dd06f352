"""Rollout throughput: the vLLM path against the transformers ``generate`` path, side by side.

Same prompts, same sampling, same kind of Ray worker actor, in one run:
chat-templated two-digit additions ("What is 23 + 58?") on the bundled
SmolLM2-135M-Instruct, n samples per prompt at temperature 1.0. Also times a full
weight sync (every tensor of the 135M model, trainer -> vLLM worker, cpu_shm backend).

    python benchmarks/rollout_throughput.py                      # 64 prompts x 8 x 64 tokens
    python benchmarks/rollout_throughput.py --prompts 8 --n 4 --max-tokens 32   # quick

Writes benchmarks/results/rollout_throughput.json (with a "summary") and .png.
Timings on a shared 2-core machine are noisy: the ratio is measured in one run, with
the paths taking turns (``--repeats`` rounds), and the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="bundled short name or HF model directory")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--n", type=int, default=8, help="samples per prompt")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=1, help="timed rounds per path (paths alternate)")
    p.add_argument("--sync-repeats", type=int, default=5, help="weight syncs to take the median of")
    p.add_argument("--dtype", default="bfloat16", help="vLLM dtype")
    p.add_argument("--hf-dtype", default="bfloat16", help="transformers dtype (bfloat16 | float32)")
    p.add_argument("--hf-batch-prompts", type=int, default=64, help="prompts per generate() call (x n rows)")
    p.add_argument("--threads", type=int, default=None, help="OpenMP threads per engine (default: all cores)")
    p.add_argument("--no-preload", action="store_true", help="do not LD_PRELOAD tcmalloc / Intel OpenMP")
    p.add_argument("--backends", default="vllm,hf", help="comma list of paths to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS / "rollout_throughput"), help="output path without extension")
    return p.parse_args()


def make_prompts(model_dir: str, count: int, seed: int) -> tuple[list[list[int]], list[str]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    rng = random.Random(seed)
    questions = [f"What is {rng.randint(10, 99)} + {rng.randint(10, 99)}?" for _ in range(count)]
    ids = [list(tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"])
           for q in questions]
    return ids, questions


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def time_generate(pool, prompts, sampling) -> dict:
    """Wall time, and the worker processes' CPU time (less sensitive to other load on a shared machine)."""
    pids = [w.pid for w in pool.workers_info()]
    cpu0, start = _cpu_seconds(pids), time.perf_counter()
    groups = pool.generate(prompts, sampling)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu0
    tokens = sum(len(c.token_ids) for g in groups for c in g)
    stops = sum(c.finish_reason == "stop" for g in groups for c in g)
    return {"seconds": round(seconds, 3), "generated_tokens": tokens, "tokens_per_s": round(tokens / seconds, 1),
            "worker_cpu_seconds": round(cpu, 1), "tokens_per_cpu_s": round(tokens / max(cpu, 1e-9), 1),
            "completions": sum(len(g) for g in groups), "stopped_on_eos": stops,
            "load_average_1min": round(os.getloadavg()[0], 2)}


def time_sync(pool, model_dir: str, repeats: int) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()  # trainer's fp32 weights
    return [round(pool.sync_weights(state, step=i), 3) for i in range(repeats)]


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = result["summary"]
    names = [b for b in ("vllm", "hf") if f"{b}_tokens_per_s" in s]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    bars = ax1.bar(names, [s[f"{b}_tokens_per_s"] for b in names], color=["tab:blue", "tab:orange"][:len(names)])
    ax1.bar_label(bars, fmt="%.0f")
    ax1.set_ylim(0, 1.2 * max(s[f"{b}_tokens_per_s"] for b in names))
    ax1.set_ylabel("generated tokens / s (wall clock)")
    cfg, load = result["config"], result["machine"]
    title = (f"{cfg['prompts']} prompts x {cfg['n']} samples x {cfg['max_tokens']} tokens, {cfg['cpus']} shared "
             f"CPU cores (load avg {load['load_average_before'][0]:g} -> {load['load_average_after'][0]:g})")
    if "vllm_over_hf" in s:
        title += (f"\nvLLM / HF = {s['vllm_over_hf']:.2f}x wall clock, "
                  f"{s['vllm_over_hf_per_cpu_s']:.2f}x per worker CPU second")
    ax1.set_title(title, fontsize=9)
    syncs = result.get("weight_sync_seconds", [])
    if syncs:
        ax2.plot(range(1, len(syncs) + 1), syncs, "o-")
        ax2.axhline(s["weight_sync_s_median"], ls="--", color="gray", label=f"median {s['weight_sync_s_median']:.2f} s")
        ax2.set_xlabel("sync #")
        ax2.set_ylabel("seconds")
        ax2.set_ylim(bottom=0)
        ax2.legend(fontsize=8)
        ax2.set_title("full 135M weight sync (cpu_shm)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    args = parse_args()
    from rl.models import resolve_model  # benchmarks may use rl; the rollout package never does
    from rollout import RolloutPool, SamplingSpec

    model_dir = resolve_model(args.model)
    prompts, questions = make_prompts(model_dir, args.prompts, args.seed)
    sampling = SamplingSpec(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    cpus = os.cpu_count()
    load_before = load_average()
    from rollout.local_ray import init_local_ray

    init_local_ray(cpus, log_to_driver=False)

    common = dict(num_cpus_per_worker=cpus / 2, cpu_threads=args.threads, preload_libs=not args.no_preload,
                  seed=args.seed, max_model_len=512, memory_fraction=0.25)
    pools, startup = {}, {}
    for b in backends:
        start = time.perf_counter()
        dtype = args.hf_dtype if b == "hf" else args.dtype
        pools[b] = RolloutPool(model_dir, backend=b, dtype=dtype, hf_batch_prompts=args.hf_batch_prompts, **common)
        startup[b] = round(time.perf_counter() - start, 1)
        pools[b].generate(prompts[:2], SamplingSpec(n=2, max_tokens=8))  # warm-up (allocations, kernels)

    runs: dict[str, list[dict]] = {b: [] for b in backends}
    for r in range(args.repeats):
        for b in backends:  # the paths take turns, so load from other processes hits both alike
            runs[b].append(time_generate(pools[b], prompts, sampling))
            print(f"round {r + 1} {b:5s} {runs[b][-1]}", flush=True)
    syncs = time_sync(pools["vllm"], model_dir, args.sync_repeats) if "vllm" in pools and args.sync_repeats else []
    for pool in pools.values():
        pool.shutdown()
    load_after = load_average()

    from rollout.vllm_adapter import preload_libraries

    summary: dict = {}
    for b in backends:
        summary[f"{b}_tokens_per_s"] = round(statistics.median(x["tokens_per_s"] for x in runs[b]), 1)
        summary[f"{b}_tokens_per_cpu_s"] = round(statistics.median(x["tokens_per_cpu_s"] for x in runs[b]), 1)
    if "vllm" in runs and "hf" in runs:
        ratios = [v["tokens_per_s"] / h["tokens_per_s"] for v, h in zip(runs["vllm"], runs["hf"])]
        summary["vllm_over_hf"] = round(statistics.median(ratios), 2)
        cpu_ratios = [v["tokens_per_cpu_s"] / h["tokens_per_cpu_s"] for v, h in zip(runs["vllm"], runs["hf"])]
        summary["vllm_over_hf_per_cpu_s"] = round(statistics.median(cpu_ratios), 2)
    if syncs:
        summary["weight_sync_s_median"] = round(statistics.median(syncs), 3)
    result = {
        "benchmark": "rollout_throughput",
        "command": "python benchmarks/rollout_throughput.py " + " ".join(os.sys.argv[1:]),
        "config": {"model": args.model, "prompts": args.prompts, "n": args.n, "max_tokens": args.max_tokens,
                   "temperature": args.temperature, "vllm_dtype": args.dtype, "hf_dtype": args.hf_dtype,
                   "hf_batch_prompts": args.hf_batch_prompts, "threads": args.threads or cpus, "cpus": cpus,
                   "preload": [] if args.no_preload else preload_libraries(), "repeats": args.repeats,
                   "example_prompt": questions[0]},
        "machine": {"load_average_before": load_before, "load_average_after": load_after},
        "startup_seconds": startup, "runs": runs, "weight_sync_seconds": syncs, "summary": summary,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))

    print("\npath   tokens/s  tokens/worker-CPU-s   (medians over rounds)")
    for b in backends:
        print(f"{b:6s} {summary[f'{b}_tokens_per_s']:9.1f} {summary[f'{b}_tokens_per_cpu_s']:12.1f}")
    if "vllm_over_hf" in summary:
        print(f"vLLM / HF: {summary['vllm_over_hf']:.2f}x wall clock, "
              f"{summary['vllm_over_hf_per_cpu_s']:.2f}x per worker CPU second")
    if syncs:
        print(f"weight sync (full model, median of {len(syncs)}): {summary['weight_sync_s_median']:.3f} s  {syncs}")
    print(f"load average before {load_before} after {load_after}; wrote {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
