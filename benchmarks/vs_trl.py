"""tokencredit side by side with TRL's GRPOTrainer on the quickstart task, several seeds, one evaluation.

Both systems train the same model (bundled SmolLM2-135M-Instruct) on the same prompts (the
quickstart's templated arithmetic prompts; TRL gets ``r.text``, which its tokenizer call turns
into the same ids, checked per batch), with the same reward (``math_answer``), group size and
batch (8 prompts x 8 samples), constant lr 2e-5, 16 new tokens, temperature 0.7, 12 steps, seed,
GRPO advantages ((r - mean) / (std + 1e-4)), clip 0.2, token-mean loss (TRL ``loss_type="dapo"``),
no KL (beta 0), one update per batch, grad-norm clip 1.0, AdamW(0.9, 0.999, 1e-8, wd 0).

Systems (``--systems``):

    tokencredit  ``tokencredit train quickstart`` in a subprocess (Ray + vLLM-CPU rollouts +
                 DeepSpeed trainer; fp32 weights with bf16 autocast, trainer.bf16_weights=false)
    tokencredit_unshared  the same with ``trainer.share_prompt_forward=false``: every row runs its
                 prompt again in the update (what tokencredit did before rl/prompt_sharing.py)
    trl          TRL GRPOTrainer, its best settings here: model loaded in fp32 with ``bf16=True``
                 (bf16 autocast over fp32 master weights; checked per run with a forward hook),
                 ``lr_scheduler_type="constant"``, gradient checkpointing off, transformers
                 ``generate`` with top_k=0 / top_p=1.0 set explicitly (no top-k 50)
    trl_gc       the same with gradient checkpointing on (TRL's default)
    trl_vllm     the same with ``use_vllm=True, vllm_mode="colocate"`` on vllm-cpu; if it fails,
                 the result file records exactly how (error + traceback tail)

Each (system, seed) trains in a fresh process (peak RSS sampled over its whole process tree:
tokencredit's Ray actors are children of its driver), saves its weights every ``--eval-every``
steps (tokencredit: ``checkpoint.export_hf_every``; TRL: ``save_steps`` with
``save_only_model=True``), and after it exits every saved folder is evaluated by
benchmarks/eval_heldout.py in a fresh process: held-out greedy accuracy and pass@k on the 100
held-out prompts, one vLLM generation path for every system. Step 0 is the base model (shared).

Clocks. ``startup_s``: process launch to the start of step 1. ``train_s``: the sum of step
times (sampling + reward + update + weight sync), excluding start-up, saves/exports and any
evaluation. ``wall_s`` at step k = startup_s + train_s(k): what a user waits for step k, minus
checkpoint writing. Time to a target accuracy (``--targets``, held-out greedy) is the clock at
the first *evaluated* step whose accuracy is >= the target: no interpolation between evaluated
points, so it is an upper bound, resolved to ``--eval-every`` steps.

    python benchmarks/vs_trl.py --seeds 0 1 2                  # the full run: hours, needs a quiet machine
    python benchmarks/vs_trl.py --seeds 0 1 2 --reuse          # resume: keep finished (system, seed) results
    python benchmarks/vs_trl.py --summarise-only               # re-summarise what --out holds, run nothing
    python benchmarks/vs_trl.py --quick                        # smoke: 2 steps, 1 seed, 20 eval prompts

Writes one ``<system>_seed<S>.json`` per run under ``--out`` and the summary to
benchmarks/results/vs_trl.json (+ .png, accuracy against wall-clock seconds), and prints a table.
The load average and the machine are recorded with every run and in the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))

import eval_heldout  # noqa: E402  (benchmarks/eval_heldout.py, next to this file)

SYSTEMS: dict[str, dict] = {
    "tokencredit": {"kind": "tokencredit", "overrides": []},
    "tokencredit_unshared": {"kind": "tokencredit", "overrides": ["trainer.share_prompt_forward=false"]},
    "trl": {"kind": "trl", "gradient_checkpointing": False, "use_vllm": False},
    "trl_gc": {"kind": "trl", "gradient_checkpointing": True, "use_vllm": False},
    "trl_vllm": {"kind": "trl", "gradient_checkpointing": False, "use_vllm": True},
}
RESULT_VERSION = 1


@dataclass
class Settings:
    recipe: str = "quickstart"
    steps: int = 12
    eval_every: int = 2
    eval_prompts: int | None = None  # None: the recipe's eval.num_prompts (100)
    k: int | None = None  # None: eval.pass_k (4)
    eval_seed: int | None = None  # None: rollout.seed of the recipe (0)
    targets: list[float] = field(default_factory=lambda: [0.85, 0.95])
    timeout_s: float = 7200.0

    def recipe_path(self) -> str:
        from rl.cli import find_recipe

        return str(find_recipe(self.recipe))

    def eval_steps(self) -> list[int]:
        points = list(range(self.eval_every, self.steps + 1, self.eval_every)) if self.eval_every else []
        return points if self.steps in points else points + [self.steps]

    def fingerprint(self) -> dict:
        """What a stored result must agree on to be reused."""
        return {"recipe": self.recipe, "steps": self.steps, "eval_every": self.eval_every,
                "eval_prompts": self.eval_prompts, "k": self.k, "eval_seed": self.eval_seed,
                "version": RESULT_VERSION}

    def eval_settings(self) -> eval_heldout.EvalSettings:
        return eval_heldout.EvalSettings(recipe=self.recipe_path(), num_prompts=self.eval_prompts, k=self.k,
                                         seed=self.eval_seed)


def log(msg: str) -> None:
    print(f"[vs_trl {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------- machine, load, memory

def machine_info() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total_gib"] = round(int(line.split()[1]) / 2**20, 1)
    for dist in ("torch", "transformers", "trl", "accelerate", "deepspeed", "vllm-cpu", "vllm", "ray"):
        with contextlib.suppress(PackageNotFoundError):
            info.setdefault("versions", {})[dist] = version(dist)
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=10).stdout.strip()
    return info


def _proc_status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class TreeMonitor:
    """Samples a process tree: summed RSS (and PSS, which counts shared pages once), each process's
    VmHWM (its own peak RSS, kept after the last sample), and the 1-minute load average."""

    def __init__(self, pid: int, every_s: float = 0.5):
        self.pid, self.every_s = pid, every_s
        self.peak_rss = self.peak_pss = self.max_procs = 0
        self.hwm: dict[int, int] = {}
        self.load: list[float] = []
        self.load_start = os.getloadavg()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        tick = 0
        while not self._stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                break
            rss = pss = 0
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    if tick % 4 == 0:  # smaps_rollup is slower: every 4th sample
                        full = p.memory_full_info()
                        rss, pss = rss + full.rss, pss + getattr(full, "pss", full.rss)
                    else:
                        rss += p.memory_info().rss
                    self.hwm[p.pid] = max(self.hwm.get(p.pid, 0), _proc_status_kib(p.pid, "VmHWM") * 1024)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.max_procs = max(self.max_procs, len(procs))
            if tick % 4 == 0:
                self.load.append(os.getloadavg()[0])
            tick += 1
            self._stop.wait(self.every_s)

    def report(self) -> dict:
        mib = 2**20
        return {"peak_tree_rss_mib": round(self.peak_rss / mib, 1), "peak_tree_pss_mib": round(self.peak_pss / mib, 1),
                "sum_vmhwm_mib": round(sum(self.hwm.values()) / mib, 1), "max_processes": self.max_procs,
                "note": "sampled every 0.5 s over the process tree; RSS sums count shared pages once per "
                        "process, PSS splits them; sum_vmhwm adds each process's own peak (an upper bound)",
                "load_start": self.load_start, "load_end": os.getloadavg(),
                "load1_mean": round(statistics.fmean(self.load), 2) if self.load else None,
                "load1_max": max(self.load) if self.load else None}


def run_monitored(cmd: list[str], log_path: Path, timeout_s: float, env=None, on_tick=None) -> dict:
    """Run ``cmd`` in its own session, output to ``log_path``; returns rc, seconds, memory and load."""
    t_launch = time.time()
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env, start_new_session=True)
        with TreeMonitor(proc.pid) as mon:
            rc = None
            while rc is None:
                try:
                    rc = proc.wait(timeout=0.2)
                except subprocess.TimeoutExpired:
                    if on_tick is not None:
                        on_tick()
                    if time.time() - t_launch > timeout_s:
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGTERM)
                        try:
                            proc.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(proc.pid, signal.SIGKILL)
                        rc = "timeout"
        if on_tick is not None:
            on_tick()
    return {"rc": rc, "t_launch": t_launch, "process_s": time.time() - t_launch, "memory_load": mon.report()}


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- tokencredit

def tokencredit_overrides(s: Settings, seed: int, out: Path, name: str) -> list[str]:
    export_final = s.steps % s.eval_every != 0 if s.eval_every else True
    return [f"logging.dir={out}", f"logging.run_name={name}", "logging.progress=false", "logging.save_batches=false",
            f"trainer.steps={s.steps}", f"trainer.seed={seed}", f"rollout.seed={seed}",
            f"checkpoint.export_hf_every={s.eval_every}", f"checkpoint.export_hf={str(export_final).lower()}",
            "checkpoint.save_final=false", "eval.at_start=false"]


class MetricsWatcher:
    """Stamps the wall-clock moment each step's row appears in metrics.jsonl."""

    def __init__(self, path: Path):
        self.path, self.seen, self.offset, self.buf = path, {}, 0, ""

    def poll(self) -> None:
        try:
            with open(self.path) as f:
                f.seek(self.offset)
                chunk = f.read()
                self.offset = f.tell()
        except OSError:
            return
        now = time.time()
        self.buf += chunk
        *lines, self.buf = self.buf.split("\n")
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError, KeyError):
                self.seen.setdefault(int(json.loads(line)["step"]), now)


def train_tokencredit(system: str, s: Settings, seed: int, out: Path) -> dict:
    name = f"{system}_seed{seed}"
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    exe = Path(sys.executable).with_name("tokencredit")
    cmd = [str(exe) if exe.exists() else "tokencredit", "train", s.recipe, *tokencredit_overrides(s, seed, out, name),
           *SYSTEMS[system]["overrides"]]
    watcher = MetricsWatcher(run_dir / "metrics.jsonl")
    out.mkdir(parents=True, exist_ok=True)
    proc = run_monitored(cmd, out / f"{name}.log", s.timeout_s, on_tick=watcher.poll)
    result = {"command": " ".join(cmd), **proc}
    if proc["rc"] != 0:
        return {**result, "status": "failed", "error": f"exit {proc['rc']}", "log_tail": tail(out / f"{name}.log")}
    rows = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["step"], {}).update(r)
    steps, train_s = [], 0.0
    for k in range(1, s.steps + 1):
        r = rows[k]
        train_s += r["timing/step"]
        steps.append({"step": k, "step_s": r["timing/step"], "train_s": train_s,
                      "breakdown": {"generation": r.get("timing/generation"), "update": r.get("timing/train"),
                                    "sync": r.get("timing/sync")},
                      "timings": {key: v for key, v in r.items() if key.startswith("timing/")},
                      "reward": r["reward/total/mean"], "seen_wall_s": watcher.seen.get(k, time.time()) - proc["t_launch"]})
    # row 1 appears right after step 1 ends (no eval at start, no batch dump): start-up = that - step 1
    startup = steps[0]["seen_wall_s"] - steps[0]["step_s"]
    for st in steps:
        st["wall_s"] = startup + st["train_s"]
    final = rows[s.steps]
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    r = cfg["rollout"]
    sampling = {"engine": "vLLM offline LLM in a Ray actor (rollout/vllm_adapter.py), bf16 weights synced from the trainer",
                "temperature": r["temperature"], "top_p": r["top_p"],
                "top_k": r["top_k"] if r["top_k"] > 0 else "off (vLLM top_k=0)", "max_tokens": r["max_tokens"],
                "seed": f"engine reseeded per step: rollout.seed + 1000003 * step (rollout.seed={r['seed']})"}
    folders = {k: str(run_dir / f"hf_model_step_{k}") for k in s.eval_steps()}
    if not Path(folders[s.steps]).is_dir():
        folders[s.steps] = str(run_dir / "hf_model")
    return {**result, "status": "ok", "run_dir": str(run_dir), "startup_s": startup, "steps": steps,
            "sampling": sampling, "folders": folders,
            "precision": {"model.dtype": cfg["model"]["dtype"], "trainer.bf16_weights": cfg["trainer"]["bf16_weights"]},
            "in_loop_eval_final": {key: final[key] for key in final if key.startswith("eval/")}}


# ----------------------------------------------------------------------------- TRL (worker runs in its own process)

def trl_worker(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["run_dir"])
    record: dict = {"status": "failed", "spec": spec}
    try:
        _trl_train(spec, out, record)
        record["status"] = "ok"
        return 0
    except BaseException as exc:  # noqa: BLE001 - the error is the result
        record["error"] = f"{type(exc).__name__}: {exc}"[:4000]
        record["traceback_tail"] = "".join(traceback.format_exc().splitlines(keepends=True)[-40:])
        return 1
    finally:
        (out / "trl_worker.json").write_text(json.dumps(record, indent=1, default=str))


def _trl_train(spec: dict, out: Path, record: dict) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from transformers.generation.utils import GenerationMixin
    from trl import GRPOConfig, GRPOTrainer
    from trl.extras import profiling

    from rewards import load_reward_fn
    from rl.config import load_config
    from rl.data import load_train_prompts
    from rl.models import resolve_model

    cfg = load_config(spec["recipe_path"], [f"trainer.steps={spec['steps']}"])
    check_recipe_matches_trl(cfg)
    path = resolve_model(cfg.model.name_or_path)
    tok = AutoTokenizer.from_pretrained(path)
    train = load_train_prompts(cfg.data, tok)
    known_ids = {tuple(r.ids) for r in train.rows}
    ds = Dataset.from_list([{"prompt": r.text, "answer": r.answer} for r in train.rows])
    math_answer = load_reward_fn("math_answer")

    def reward(prompts, completions, answer, **_):
        return math_answer(prompts, [c if isinstance(c, str) else c[0]["content"] for c in completions], answer=answer)

    reward.__name__ = "math_answer"
    t, a, r = cfg.trainer, cfg.algorithm, cfg.rollout
    kw = dict(
        output_dir=str(out / "trl"), use_cpu=True, bf16=True, fp16=False,
        per_device_train_batch_size=t.prompts_per_step * r.n, gradient_accumulation_steps=1, num_generations=r.n,
        max_completion_length=r.max_tokens, temperature=r.temperature, top_p=r.top_p,
        top_k=r.top_k if r.top_k > 0 else 0, min_p=None, repetition_penalty=1.0,
        learning_rate=t.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=t.weight_decay,
        adam_beta1=t.betas[0], adam_beta2=t.betas[1], adam_epsilon=t.adam_eps, max_grad_norm=t.grad_clip,
        optim="adamw_torch", max_steps=spec["steps"], logging_steps=1, report_to="none", disable_tqdm=True,
        save_strategy="steps", save_steps=spec["eval_every"] or spec["steps"], save_only_model=True,
        seed=spec["seed"], loss_type="dapo", beta=0.0, num_iterations=1, epsilon=a.eps_low, epsilon_high=a.eps_high,
        scale_rewards="group", mask_truncated_completions=False, gradient_checkpointing=spec["gradient_checkpointing"],
        log_completions=False, dataloader_num_workers=0,
    )
    if spec["use_vllm"]:
        kw.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=r.memory_fraction,
                  vllm_max_model_length=r.max_model_len, vllm_enable_sleep_mode=False,
                  vllm_importance_sampling_correction=False)  # our quickstart has no TIS either
    record["grpo_config"] = kw
    targs = GRPOConfig(**kw)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    # ---- instrumentation: per-step clocks, TRL's own profiling timers, what sampling really used
    steps: dict[int, dict] = {}
    current = {"step": 1}
    prof_log = profiling.ProfilingContext._log_metrics

    def _log_metrics(self, duration):
        bucket = steps.setdefault(current["step"], {}).setdefault("profiling", {})
        bucket[self.name] = bucket.get(self.name, 0.0) + duration
        return prof_log(self, duration)

    profiling.ProfilingContext._log_metrics = _log_metrics
    processors: list = []
    get_proc = GenerationMixin._get_logits_processor

    def _get_logits_processor(self, generation_config, *args, **kwargs):
        procs = get_proc(self, generation_config, *args, **kwargs)
        if not processors:
            processors.append({"processors": [_describe(p) for p in procs],
                               "generation_config": {k: getattr(generation_config, k, None) for k in
                                                     ("do_sample", "temperature", "top_k", "top_p", "min_p",
                                                      "repetition_penalty", "max_new_tokens")}})
        return procs

    GenerationMixin._get_logits_processor = _get_logits_processor
    vllm_params: list = []
    if spec["use_vllm"]:
        import trl.generation.vllm_generation as vg

        sp_cls = vg.SamplingParams

        def _sampling_params(**kwargs):
            if not vllm_params:
                vllm_params.append({k: v for k, v in kwargs.items() if not k.startswith("structured")})
            return sp_cls(**kwargs)

        vg.SamplingParams = _sampling_params
    dtypes: dict[str, dict] = {}
    layer = model.model.layers[0].self_attn.q_proj

    def _hook(mod, inputs, output):
        phase = "training_forward" if torch.is_grad_enabled() else "no_grad_forward (generation / logp)"
        if phase not in dtypes:
            dtypes[phase] = {"weight": str(mod.weight.dtype), "input": str(inputs[0].dtype), "output": str(output.dtype),
                             "autocast_cpu": torch.is_autocast_enabled("cpu")}

    layer.register_forward_hook(_hook)
    prompt_check = {"batches": 0, "prompts": 0, "matching_training_ids": 0}

    t0 = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **_):
            current["step"] = state.global_step + 1
            steps.setdefault(current["step"], {})["begin"] = time.time()
            t0.setdefault("first_step", time.time())

        def on_pre_optimizer_step(self, args, state, control, model=None, **_):
            if "grad" not in dtypes and model is not None:
                grads = {str(p.grad.dtype) for p in model.parameters() if p.grad is not None}
                dtypes["grad"] = {"dtypes": sorted(grads)}

        def on_step_end(self, args, state, control, **_):
            steps.setdefault(state.global_step, {})["end"] = time.time()

        def on_log(self, args, state, control, logs=None, **_):
            if logs:
                steps.setdefault(state.global_step, {}).setdefault("logs", {}).update(logs)

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=targs, train_dataset=ds, processing_class=tok,
                          callbacks=[Clock()])
    tokenize = trainer._tokenize_prompts

    def _tokenize_prompts(prompts):
        ids, *rest = tokenize(prompts)
        prompt_check["batches"] += 1
        prompt_check["prompts"] += len(ids)
        prompt_check["matching_training_ids"] += sum(tuple(x) in known_ids for x in ids)
        return (ids, *rest)

    trainer._tokenize_prompts = _tokenize_prompts
    record["trainer_ready_wall_s"] = time.time() - spec["t_launch"]
    trainer.train()
    t_end = time.time()
    final = out / "trl" / f"checkpoint-{spec['steps']}"
    if not final.is_dir():
        trainer.save_model(str(final))

    rows, train_s = [], 0.0
    for k in range(1, spec["steps"] + 1):
        st = steps[k]
        step_s = st["end"] - st["begin"]
        train_s += step_s
        prof = st.get("profiling", {})
        rows.append({"step": k, "step_s": step_s, "train_s": train_s, "breakdown": trl_breakdown(step_s, prof),
                     "profiling": prof, "reward": st.get("logs", {}).get("reward"), "logs": st.get("logs", {})})
    startup = t0["first_step"] - spec["t_launch"]
    for row in rows:
        row["wall_s"] = startup + row["train_s"]
    record.update({
        "startup_s": startup, "steps": rows, "train_end_wall_s": t_end - spec["t_launch"],
        "folders": {k: str(out / "trl" / f"checkpoint-{k}") for k in spec["eval_steps"]},
        "precision": {"model_load_dtype": "float32", "bf16": True, "observed": dtypes},
        "prompt_check": prompt_check,
        "sampling": {"engine": "vLLM colocate (TRL)" if spec["use_vllm"] else "transformers generate (TRL)",
                     "configured": {k: kw[k] for k in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                                       "max_completion_length")},
                     "transformers_logits_processors": processors[0] if processors else None,
                     "vllm_sampling_params": vllm_params[0] if vllm_params else None,
                     "seed": f"seed={spec['seed']} (transformers.set_seed; sampling draws from the global RNG)"},
    })


def trl_breakdown(step_s: float, prof: dict[str, float]) -> dict[str, float]:
    """A TRL step in tokencredit's terms from TRL's own profiling timers (named ``GRPOTrainer.<name>``).

    generation = ``_prepare_inputs`` (sampling, reward, padding; TRL computes no old log-probs when
    num_iterations=1) minus the weight sync inside it; update = the rest of the step (loss forward,
    backward, clip, optimizer); sync = ``sync_weights`` (vLLM mode only).
    """
    def get(name: str) -> float:
        return sum(v for key, v in prof.items() if key == name or key.endswith("." + name))

    prepare, sync = get("_prepare_inputs"), get("sync_weights")
    return {"generation": prepare - sync, "update": step_s - prepare, "sync": sync,
            "generate_call": get("transformers.generate") + get("vLLM.generate"),
            "loss_forward": get("compute_loss")}


def _describe(p) -> str:
    attrs = {k: v for k, v in vars(p).items() if isinstance(v, (int, float, bool, str)) and not k.startswith("_")}
    return f"{type(p).__name__}({', '.join(f'{k}={v}' for k, v in attrs.items())})"


def check_recipe_matches_trl(cfg) -> None:
    """The settings of the recipe that this TRL configuration reproduces; anything else is an error."""
    a, t = cfg.algorithm, cfg.trainer
    want = {"algorithm.advantage": (a.advantage, "grpo"), "algorithm.std_normalize": (a.std_normalize, True),
            "algorithm.std_eps": (a.std_eps, 1e-4), "algorithm.credit": (list(a.credit), []),
            "algorithm.policy_loss": (a.policy_loss, "clip"), "algorithm.aggregation": (a.aggregation, "token_mean"),
            "algorithm.kl.coef": (a.kl.coef, 0.0), "algorithm.epochs": (a.epochs, 1),
            "algorithm.mini_batches": (a.mini_batches, 1), "algorithm.dual_clip": (a.dual_clip, None),
            "algorithm.tis.enable": (a.tis.enable, False), "algorithm.overlong_filter": (a.overlong_filter, False),
            "algorithm.dynamic_sampling.enable": (a.dynamic_sampling.enable, False),
            "trainer.lr_schedule": (t.lr_schedule, "constant"), "trainer.warmup_steps": (t.warmup_steps, 0),
            "trainer.num_ranks": (t.num_ranks, 1)}
    bad = {k: v for k, (v, w) in want.items() if v != w}
    if bad:
        raise ValueError(f"vs_trl reproduces plain GRPO only; the recipe sets {bad}")


def train_trl(system: str, s: Settings, seed: int, out: Path) -> dict:
    name = f"{system}_seed{seed}"
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    spec = {"system": system, "seed": seed, "steps": s.steps, "eval_every": s.eval_every, "eval_steps": s.eval_steps(),
            "recipe_path": s.recipe_path(), "run_dir": str(run_dir), "t_launch": time.time(), **SYSTEMS[system]}
    (run_dir / "spec.json").write_text(json.dumps(spec))  # t_launch: start-up counts from here
    cmd = [sys.executable, str(Path(__file__).resolve()), "--trl-worker", str(run_dir / "spec.json")]
    proc = run_monitored(cmd, out / f"{name}.log", s.timeout_s)
    result = {"command": " ".join(cmd), **proc, "run_dir": str(run_dir)}
    worker = run_dir / "trl_worker.json"
    record = json.loads(worker.read_text()) if worker.is_file() else {}
    result.update({k: v for k, v in record.items() if k != "spec"})
    if proc["rc"] != 0 or record.get("status") != "ok":
        result["status"] = "failed"
        result.setdefault("error", f"exit {proc['rc']} and no worker record")
        result["log_tail"] = tail(out / f"{name}.log", 40)
    result["folders"] = {int(k): v for k, v in result.get("folders", {}).items()}
    return result


# ----------------------------------------------------------------------------- one (system, seed)

def base_eval(s: Settings, out: Path) -> dict:
    """Step 0 = the base model's weights, the same for every system and seed: evaluated once per --out."""
    path = out / "base_eval.json"
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("fingerprint") == s.fingerprint():
            return stored["eval"]
    from rl.config import load_config
    from rl.models import resolve_model

    model = resolve_model(load_config(s.recipe_path()).model.name_or_path)
    log(f"evaluating the base model {model}")
    (res,) = eval_heldout.evaluate_folders([model], s.eval_settings(), log=log)
    path.write_text(json.dumps({"fingerprint": s.fingerprint(), "eval": res}, indent=1))
    return res


def time_to_targets(points: dict[int, dict], steps: list[dict], targets: list[float], startup_s: float) -> dict:
    """First evaluated step with greedy >= target (no interpolation) and the clocks at its end."""
    clock = {0: (0.0, startup_s)} | {st["step"]: (st["train_s"], st["wall_s"]) for st in steps}
    out = {}
    for target in targets:
        hit = next((k for k in sorted(points) if points[k]["greedy_acc"] >= target - 1e-12), None)
        out[str(target)] = None if hit is None else {"step": hit, "train_s": clock[hit][0], "wall_s": clock[hit][1],
                                                     "greedy_acc": points[hit]["greedy_acc"]}
    return out


def run_one(system: str, seed: int, s: Settings, out: Path, keep_weights: bool) -> dict:
    log(f"--- {system} seed {seed}: training {s.steps} steps")
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    machine_load = os.getloadavg()
    tokencredit = SYSTEMS[system]["kind"] == "tokencredit"
    train = train_tokencredit(system, s, seed, out) if tokencredit else train_trl(system, s, seed, out)
    result = {"system": system, "seed": seed, "settings": asdict(s), "fingerprint": s.fingerprint(),
              "variant": SYSTEMS[system], "date": started, "load_at_start": machine_load, "machine": machine_info(),
              **train}
    if train["status"] != "ok":
        log(f"{system} seed {seed} FAILED: {train.get('error')}")
        return result
    log(f"{system} seed {seed}: start-up {train['startup_s']:.0f} s, "
        f"{statistics.fmean(st['step_s'] for st in train['steps']):.1f} s/step; evaluating {s.eval_steps()}")
    base = base_eval(s, out)
    t_eval = time.perf_counter()
    folders = {int(k): v for k, v in train["folders"].items()}
    evals = eval_heldout.evaluate_folders([folders[k] for k in s.eval_steps()], s.eval_settings(), log=log)
    points = {0: base} | dict(zip(s.eval_steps(), evals))
    result["eval_s"] = time.perf_counter() - t_eval
    result["evals"] = {str(k): {key: v[key] for key in ("greedy_acc", "pass_at_k", "sample_acc", "greedy_len", "k",
                                                         "seed", "num_prompts", "prompt_fingerprint",
                                                         "folder_tokenizer_matches", "model")}
                       for k, v in points.items()}
    result["eval_sampling"] = base["sampling"]
    result["eval_engine"] = base["engine"]
    result["time_to_target"] = time_to_targets(points, train["steps"], s.targets, train["startup_s"])
    if tokencredit:  # the in-loop evaluation of the last step, against the independent one
        inl = train["in_loop_eval_final"]
        last = points[s.steps]
        result["in_loop_vs_independent_final"] = {
            "in_loop_greedy": inl.get("eval/greedy_acc"), "independent_greedy": last["greedy_acc"],
            "note": "in-loop: the rollout engine after weight sync, pass@k seed rollout.seed + 31 * step; "
                    "independent: a fresh process from hf_model_step_N, pass@k seed --eval-seed"}
    if not keep_weights:
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)
    return result


# ----------------------------------------------------------------------------- summary, table, plot

def _stats(values: list) -> dict | None:
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "min": min(v),
            "max": max(v), "n": len(v)}


def summarise(results: list[dict], s: Settings) -> dict:
    by_system: dict[str, list[dict]] = {}
    for r in results:
        by_system.setdefault(r["system"], []).append(r)
    systems = {}
    for name, runs in by_system.items():
        ok = [r for r in runs if r.get("status") == "ok" and "evals" in r]
        failed = [{"seed": r["seed"], "error": r.get("error"), "traceback_tail": r.get("traceback_tail"),
                   "log_tail": r.get("log_tail")} for r in runs if r not in ok]
        entry: dict = {"seeds": sorted(r["seed"] for r in ok), "failed": failed}
        if ok:
            step_s = [statistics.fmean(st["step_s"] for st in r["steps"]) for r in ok]
            entry["seconds_per_step"] = _stats(step_s)
            entry["seconds_per_step_after_first"] = _stats(
                [statistics.fmean(st["step_s"] for st in r["steps"][1:]) if len(r["steps"]) > 1 else None for r in ok])
            entry["breakdown_s_per_step"] = {
                part: _stats([statistics.fmean(st["breakdown"].get(part) or 0.0 for st in r["steps"]) for r in ok])
                for part in ("generation", "update", "sync")}
            entry["startup_s"] = _stats([r["startup_s"] for r in ok])
            entry["train_s_total"] = _stats([r["steps"][-1]["train_s"] for r in ok])
            entry["peak_tree_rss_mib"] = _stats([r["memory_load"]["peak_tree_rss_mib"] for r in ok])
            entry["peak_tree_pss_mib"] = _stats([r["memory_load"]["peak_tree_pss_mib"] for r in ok])
            entry["load1_mean_during_training"] = _stats([r["memory_load"]["load1_mean"] for r in ok])
            entry["held_out"] = {k: {"greedy_acc": _stats([r["evals"][k]["greedy_acc"] for r in ok]),
                                     "pass_at_k": _stats([r["evals"][k]["pass_at_k"] for r in ok])}
                                 for k in ok[0]["evals"]}
            entry["training_reward_per_step"] = {
                str(i + 1): _stats([r["steps"][i]["reward"] for r in ok]) for i in range(len(ok[0]["steps"]))}
            entry["time_to_target"] = {}
            for t in s.targets:
                hits = [r["time_to_target"][str(t)] for r in ok]
                reached = [h for h in hits if h is not None]
                entry["time_to_target"][str(t)] = {
                    "reached": f"{len(reached)}/{len(hits)}", "step": _stats([h["step"] for h in reached]),
                    "train_s": _stats([h["train_s"] for h in reached]), "wall_s": _stats([h["wall_s"] for h in reached])}
            entry["sampling"] = ok[0].get("sampling")
            entry["precision"] = ok[0].get("precision")
        systems[name] = entry
    ratios = {}
    tc = systems.get("tokencredit")
    for name, entry in systems.items():
        if name == "tokencredit" or not tc or "time_to_target" not in entry or "time_to_target" not in tc:
            continue
        per = {}
        for t in s.targets:
            a, b = tc["time_to_target"][str(t)], entry["time_to_target"][str(t)]
            all_a = a["reached"].split("/")[0] == a["reached"].split("/")[1]
            all_b = b["reached"].split("/")[0] == b["reached"].split("/")[1]
            per[str(t)] = {
                clock: (a[clock]["mean"] / b[clock]["mean"] if a[clock] and b[clock] else None)
                for clock in ("wall_s", "train_s")} | {
                "reached": {"tokencredit": a["reached"], name: b["reached"]},
                "complete": all_a and all_b}
        ratios[f"tokencredit/{name}"] = {
            "time_to_target": per,
            "seconds_per_step": tc["seconds_per_step"]["mean"] / entry["seconds_per_step"]["mean"]}
    return {"systems": systems, "ratios": ratios,
            "notes": ["time to target = clock at the first evaluated step whose held-out greedy accuracy >= target "
                      f"(evaluated every {s.eval_every} steps; no interpolation, so an upper bound)",
                      "wall_s = start-up + train_s (step times only: saves, exports and evaluations excluded)",
                      "ratio = mean over seeds that reached the target; 'complete' is false when some seed did not, "
                      "in which case the ratio covers only the seeds that did",
                      "held-out numbers: benchmarks/eval_heldout.py in a fresh process on saved weights, one vLLM path"]}


def fmt(st: dict | None, spec: str = ".1f") -> str:
    if not st:
        return "-"
    if st["n"] == 1:
        return f"{st['mean']:{spec}}"
    return f"{st['mean']:{spec}} [{st['min']:{spec}}-{st['max']:{spec}}]"


def table(summary: dict, s: Settings) -> str:
    eval_keys = ["0"] + [str(k) for k in s.eval_steps()]
    head = (f"{'system':12s} {'seeds':>5s} {'s/step':>18s} {'start-up s':>16s} {'peak RSS MiB':>20s} "
            + " ".join(f"{'greedy@' + k:>16s}" for k in eval_keys) + f" {'pass@k@' + str(s.steps):>16s} "
            + " ".join(f"{'t->' + str(t) + ' wall s':>22s}" for t in s.targets))
    lines = [head, "-" * len(head)]
    for name, e in summary["systems"].items():
        if "seconds_per_step" not in e:
            err = e["failed"][0]["error"] if e["failed"] else "no result"
            lines.append(f"{name:12s} FAILED: {str(err)[:150]}")
            continue
        ho = e["held_out"]
        row = (f"{name:12s} {len(e['seeds']):5d} {fmt(e['seconds_per_step']):>18s} {fmt(e['startup_s'], '.0f'):>16s} "
               f"{fmt(e['peak_tree_rss_mib'], '.0f'):>20s} "
               + " ".join(f"{fmt(ho.get(k, {}).get('greedy_acc'), '.2f'):>16s}" for k in eval_keys)
               + f" {fmt(ho.get(str(s.steps), {}).get('pass_at_k'), '.2f'):>16s} ")
        for t in s.targets:
            tt = e["time_to_target"][str(t)]
            row += f" {fmt(tt['wall_s'], '.0f') + ' (' + tt['reached'] + ')':>22s}"
        lines.append(row)
        if e["failed"]:
            lines.append(f"{'':12s} failed seeds: {[f['seed'] for f in e['failed']]}")
    for pair, r in summary["ratios"].items():
        parts = [f"{t}: wall {v['wall_s']:.2f}x" if v["wall_s"] else f"{t}: -" for t, v in r["time_to_target"].items()]
        lines.append(f"{pair}: time to target {'; '.join(parts)}; s/step {r['seconds_per_step']:.2f}x")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {}
    for r in results:
        if r.get("status") != "ok" or "evals" not in r:
            continue
        color = colors.setdefault(r["system"], f"C{len(colors)}")
        clock = {0: r["startup_s"]} | {st["step"]: st["wall_s"] for st in r["steps"]}
        ks = sorted(int(k) for k in r["evals"])
        acc = [r["evals"][str(k)]["greedy_acc"] for k in ks]
        label = r["system"] if not any(x.get("_labelled") == r["system"] for x in results) else None
        r["_labelled"] = r["system"]
        axes[0].plot([clock[k] for k in ks], acc, marker="o", color=color, alpha=0.75, label=label)
        axes[1].plot(ks, acc, marker="o", color=color, alpha=0.75, label=label)
    for r in results:
        r.pop("_labelled", None)
    axes[0].set_xlabel("wall-clock seconds since launch (start-up + step times)")
    axes[1].set_xlabel("step")
    for ax in axes:
        ax.set_ylabel("held-out greedy accuracy")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------- main

def result_path(out: Path, system: str, seed: int) -> Path:
    return out / f"{system}_seed{seed}.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2 (--quick: 0)")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--recipe", default="quickstart")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=2, help="save + evaluate every k steps (and the last)")
    ap.add_argument("--eval-prompts", type=int, default=None, help="held-out prompts (default: the recipe's, 100)")
    ap.add_argument("--k", type=int, default=None, help="pass@k samples (default: eval.pass_k, 4)")
    ap.add_argument("--eval-seed", type=int, default=None, help="pass@k sampler seed (default: rollout.seed, 0)")
    ap.add_argument("--targets", type=float, nargs="+", default=[0.85, 0.95])
    ap.add_argument("--out", default=None, help="folder of per-run results (default benchmarks/results/vs_trl_runs)")
    ap.add_argument("--json", default=None, help="summary JSON (default benchmarks/results/vs_trl.json)")
    ap.add_argument("--reuse", action="store_true", help="keep finished (system, seed) results in --out, run the rest")
    ap.add_argument("--summarise-only", action="store_true", help="run nothing; summarise what --out holds")
    ap.add_argument("--keep-weights", action="store_true", help="keep the saved weights after evaluation")
    ap.add_argument("--timeout-s", type=float, default=7200.0, help="per training run")
    ap.add_argument("--quick", action="store_true", help="smoke: 2 steps, seed 0, 20 eval prompts, k=2")
    ap.add_argument("--trl-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.trl_worker:
        return trl_worker(args.trl_worker)
    if args.quick:
        args.steps, args.eval_every, args.seeds = 2, 2, args.seeds or [0]
        args.eval_prompts, args.k = args.eval_prompts or 20, args.k or 2
        args.timeout_s = min(args.timeout_s, 1800)
    args.seeds = args.seeds if args.seeds is not None else [0, 1, 2]
    s = Settings(recipe=args.recipe, steps=args.steps, eval_every=args.eval_every, eval_prompts=args.eval_prompts,
                 k=args.k, eval_seed=args.eval_seed, targets=args.targets, timeout_s=args.timeout_s)
    default_name = "vs_trl_quick" if args.quick else "vs_trl"
    out = Path(args.out) if args.out else RESULTS / f"{default_name}_runs"
    json_path = Path(args.json) if args.json else (out / f"{default_name}.json" if args.quick else RESULTS / "vs_trl.json")
    out.mkdir(parents=True, exist_ok=True)

    results = []
    for seed in args.seeds:
        for system in args.systems:
            path = result_path(out, system, seed)
            stored = json.loads(path.read_text()) if path.is_file() else None
            if stored is not None and stored.get("fingerprint") != s.fingerprint():
                if args.reuse or args.summarise_only:
                    log(f"{path.name}: settings differ from this invocation; not reused")
                stored = None
            if args.summarise_only or (args.reuse and stored is not None and stored.get("status") == "ok"):
                if stored is not None:
                    results.append(stored)
                continue
            res = run_one(system, seed, s, out, args.keep_weights)
            path.write_text(json.dumps(res, indent=1, default=str))
            results.append(res)
    if not results:
        log(f"no results in {out}")
        return 1
    summary = summarise(results, s)
    doc = {"benchmark": "vs_trl", "command": " ".join(["python benchmarks/vs_trl.py", *(argv or sys.argv[1:])]),
           "settings": asdict(s), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
           "load_average_at_summary": os.getloadavg(),
           "runs": [{k: r.get(k) for k in ("system", "seed", "status", "date", "load_at_start", "memory_load",
                                           "startup_s", "eval_s", "time_to_target", "error")} |
                    {"file": str(result_path(out, r["system"], r["seed"]))} for r in results],
           "summary": summary}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=1, default=str))
    title = (f"quickstart task, {s.steps} steps, seeds {sorted({r['seed'] for r in results})}; "
             f"{doc['machine'].get('cpu', '?')} x{doc['machine']['cpus']}; mean 1-min load during training "
             + ", ".join(f"{k} {fmt(v.get('load1_mean_during_training'))}" for k, v in summary["systems"].items()))
    plot(results, json_path.with_suffix(".png"), title)
    print(table(summary, s))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
