"""Speed: one DPO optimizer step of tokencredit vs TRL 1.16's DPOTrainer, side by side in one run (issue 13).

The same pairs (the dpo recipe's ``builtin:self`` pairs: the bundled SmolLM2-135M's own samples, correct vs
incorrect, or ``--pairs``), the same batch (``--batch`` pairs = 2 x batch rows per optimizer step, one
micro-batch, the same pairs in the same order on both sides: sequential, the set cut to a multiple of the
batch), the same loss (sigmoid DPO, beta 0.1, reference log-probs computed on the fly every step), the same
optimizer (fused torch AdamW, lr 5e-6 constant, no weight decay, grad-norm clip 1.0) and the same precision:

    --precision bf16 (default)  fp32 parameters, gradients and AdamW state; forwards under bf16 autocast.
                                TRL: ``bf16=True`` (accelerate mixed precision), its reference a second fp32
                                copy run under the same autocast. tokencredit: ``model.dtype=bfloat16`` with
                                ``trainer.bf16_weights=false``; its frozen reference is loaded in bf16.
    --precision fp32            everything fp32 on both sides.

Each side is its own worker process (so its memory is its own), started together; start-up (imports,
model loads, DeepSpeed / Ray / accelerate set-up, tokenization) is excluded. The coordinator then asks the
sides for one optimizer step at a time, interleaved, the order rotated every round (``--warmup`` rounds
discarded, then ``--repeats`` measured rounds), and records the load average with every step:

    trl          ``DPOTrainer.train()`` itself, held at each ``on_step_begin`` until the coordinator says go;
                 a step = ``on_step_begin`` -> ``on_step_end``: policy forward (fused LM head: log-probs plus
                 the entropy / mean-logit / top-1 metrics TRL logs), reference forward (no grad), loss,
                 backward, grad clip, AdamW, scheduler, zero_grad. The batch was collated before (excluded).
                 Split: reference forward (forward hooks), optimizer (pre/post optimizer-step callbacks),
                 the rest (policy forward + loss + backward + clip).
    tokencredit  what ``tokencredit train dpo`` runs per step: ``TrainerGroup.train_pairs`` on a collated
                 batch
                 (the driver's wall time: Ray call -> trainer-rank actor: no-grad reference pass over the
                 pairs (``timing/ref_pass``), policy forward + chunked log-probs + loss + backward + DeepSpeed
                 step (``timing/update``) -> metrics back). Collation (``pair_batch``) is timed apart.
    inproc       (``--profile``) the very same rank code (``TrainerRank.train_pairs``) called in the worker
                 process, without Ray: tokencredit minus inproc = the Ray call overhead.

Reported: median and quartiles of seconds per optimizer step over the measured rounds, the per-round ratio
tokencredit / TRL (median; target: <= 1), the breakdowns, peak RSS of each worker's process tree and of its
largest process (the one holding the model and optimizer: TRL's process, tokencredit's trainer rank), the
tokens per step (real and padded) with a check that both sides trained on the same token ids, and each
side's loss per step (both start at log 2; they should stay close, bf16 noise apart).

    python benchmarks/dpo_vs_trl.py                     # 3 warm-up + 20 measured rounds
    python benchmarks/dpo_vs_trl.py --profile           # + the in-process rank (Ray overhead)
    python benchmarks/dpo_vs_trl.py --quick             # smoke: 1 + 2 rounds

Writes benchmarks/results/dpo_vs_trl.{json,png} (``--quick``: /tmp/dpo_vs_trl_quick/) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TreeSampler, load_average, machine, median_spread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TAG = "@@BENCH "
SIDES = ("trl", "tokencredit", "inproc")


# ----------------------------------------------------------------------------- shared by the workers


def batch_positions(step: int, batch: int, n_pairs: int) -> list[int]:
    """Pair positions of optimizer step ``step``: sequential, wrapping around a set of ``n_pairs`` (a multiple
    of ``batch``), i.e. what TRL's sequential sampler + a dataloader of ``batch`` pairs draws."""
    start = (step * batch) % n_pairs
    return list(range(start, start + batch))


def rows_digest(rows: list[list[int]]) -> str:
    """Order-free digest of a batch's sequences (real prompt + response token ids of each row)."""
    return hashlib.sha256(json.dumps(sorted(rows)).encode()).hexdigest()[:16]


def send(msg: dict) -> None:
    sys.stdout.write(TAG + json.dumps(msg) + "\n")
    sys.stdout.flush()


def read_command() -> str:
    line = sys.stdin.readline()
    return line.strip() if line else "quit"


def load_pair_rows(pairs: str, max_length: int, max_prompt_length: int):
    from transformers import AutoTokenizer

    from rl.models import resolve_model
    from rl.preference_data import PreferenceDataConfig, load_pairs

    path = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    ps = load_pairs(
        PreferenceDataConfig(
            source=pairs, max_length=max_length, max_prompt_length=max_prompt_length, on_bad_pair="drop"
        ),
        tok,
    )
    return path, tok, ps


# ----------------------------------------------------------------------------- TRL worker


def worker_trl(w: dict) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    torch.set_num_threads(w["threads"])
    t0 = time.perf_counter()
    sampler = TreeSampler(interval=0.05, root_role="trl").__enter__()
    sampler.phase("setup")
    path, tok, ps = load_pair_rows(w["pairs"], w["max_length"], w["max_prompt_length"])
    rows = ps.rows[: w["n_pairs"]]
    ds = Dataset.from_list([{"prompt": r.prompt, "chosen": r.chosen, "rejected": r.rejected} for r in rows])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out_dir = tempfile.mkdtemp(prefix="dpo_vs_trl_trl_")
    args = DPOConfig(
        output_dir=out_dir,
        use_cpu=not torch.cuda.is_available(),
        bf16=w["precision"] == "bf16",
        per_device_train_batch_size=w["batch"],
        gradient_accumulation_steps=1,
        learning_rate=w["lr"],
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        beta=0.1,
        loss_type=["sigmoid"],
        max_length=w["max_length"],
        truncation_mode="keep_start",
        precompute_ref_log_probs=False,
        gradient_checkpointing=False,
        max_steps=w["total_steps"],
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=w["seed"],
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    ref = trainer.ref_model
    clock: dict = {"ref": 0.0, "opt": 0.0}

    def ref_pre(_m, _a, _k=None):
        clock["ref_t0"] = time.perf_counter()

    def ref_post(_m, _a, _o, _k=None):
        clock["ref"] += time.perf_counter() - clock["ref_t0"]

    ref.register_forward_pre_hook(ref_pre)
    ref.register_forward_hook(ref_post)
    inner = trainer.training_step

    def training_step(model_, inputs, *a, **k):
        clock["inputs"] = inputs
        return inner(model_, inputs, *a, **k)

    trainer.training_step = training_step
    state = {"step": 0, "losses": {}}

    class Driven(TrainerCallback):
        def on_step_begin(self, _args, _state, control, **_):
            cmd = read_command()
            if cmd == "quit":
                control.should_training_stop = True
            clock.update(ref=0.0, opt=0.0, t0=time.perf_counter())

        def on_pre_optimizer_step(self, *_a, **_k):
            clock["opt_t0"] = time.perf_counter()

        def on_optimizer_step(self, *_a, **_k):
            clock["opt"] += time.perf_counter() - clock["opt_t0"]

        def on_step_end(self, _args, st, _control, **_):
            dt = time.perf_counter() - clock["t0"]
            x = clock.pop("inputs")
            am, cm = x["attention_mask"], x["completion_mask"]
            seqs = [ids[m.bool()].tolist() for ids, m in zip(x["input_ids"], am)]
            send(
                {
                    "kind": "step",
                    "step": state["step"],
                    "seconds": dt,
                    "ref_forward_s": clock["ref"],
                    "optimizer_s": clock["opt"],
                    "rest_s": dt - clock["ref"] - clock["opt"],
                    "tokens_real": int(am.sum()),
                    "tokens_completion": int(cm.sum()),
                    "tokens_padded": int(am.numel()),
                    "rows": int(am.shape[0]),
                    "digest": rows_digest(seqs),
                    "load_1min": os.getloadavg()[0],
                }
            )
            state["step"] += 1

        def on_log(self, _args, st, _control, logs=None, **_):
            if logs and "loss" in logs:
                state["losses"][st.global_step] = logs["loss"]

    trainer.add_callback(Driven())
    precision = {
        "policy_param_dtype": str(next(model.parameters()).dtype),
        "reference_param_dtype": str(next(ref.parameters()).dtype),
        "accelerate_mixed_precision": str(trainer.accelerator.mixed_precision),
        "optimizer": str(args.optim),
        "trl": __import__("trl").__version__,
    }
    send(
        {
            "kind": "ready",
            "setup_s": time.perf_counter() - t0,
            "pairs_used": len(rows),
            "precision": precision,
            "rss_ready_gib": sampler.sample() / 2**30,
        }
    )
    sampler.phase("steps")
    trainer.train()
    sampler.phase(None)
    sampler.__exit__()
    read_command()  # the coordinator's final quit
    send(
        {
            "kind": "done",
            "losses": [state["losses"].get(i + 1) for i in range(state["step"])],
            "memory": sampler.report(),
        }
    )


# ----------------------------------------------------------------------------- tokencredit workers


def tokencredit_config(w: dict):
    from rl.cli import find_recipe
    from rl.config import load_config

    o = [
        f"preference_data.source={w['pairs']}",
        "preference_data.test_split=''",
        "preference_data.holdout_fraction=0.0",
        f"preference_data.max_length={w['max_length']}",
        f"preference_data.max_prompt_length={w['max_prompt_length']}",
        "preference.loss=dpo",
        "preference.beta=0.1",
        "dpo.eval_generation=false",
        "dpo.reference_logp=on_the_fly",
        f"dpo.pairs_per_step={w['batch']}",
        f"trainer.micro_batch_size={2 * w['batch']}",
        f"trainer.lr={w['lr']}",
        "trainer.lr_schedule=constant",
        "trainer.weight_decay=0.0",
        "trainer.grad_clip=1.0",
        "trainer.zero_stage=0",
        f"trainer.torch_threads={w['threads']}",
        f"trainer.seed={w['seed']}",
        "trainer.num_ranks=1",
        f"model.dtype={'bfloat16' if w['precision'] == 'bf16' else 'float32'}",
        "trainer.bf16_weights=false",
        "model.gradient_checkpointing=false",
        "logging.progress=false",
    ]
    return load_config(find_recipe("dpo"), o)


def worker_tokencredit(w: dict, in_process: bool) -> None:
    from rl.metrics import reduce_ranks
    from rl.objectives.preference import PairBatcher

    t0 = time.perf_counter()
    sampler = TreeSampler(interval=0.05, root_role="inproc" if in_process else "driver").__enter__()
    sampler.phase("setup")
    cfg = tokencredit_config(w)
    path, tok, ps = load_pair_rows(w["pairs"], w["max_length"], w["max_prompt_length"])
    n_pairs = w["n_pairs"]
    batcher = PairBatcher(tok, cfg.preference)
    if in_process:
        from rl.engine import PolicyEngine
        from rl.objectives.preference import PreferenceObjective
        from rl.trainer_rank import TrainerRank, free_port

        rank = TrainerRank(cfg, path, 0, 1, w["total_steps"])
        rank.pref = PreferenceObjective(
            cfg.preference
        )  # TrainerRank.start's DPO branch, minus Ray's identity()
        rank.engine = PolicyEngine(
            cfg,
            path,
            0,
            1,
            "127.0.0.1",
            free_port(),
            w["total_steps"],
            reference=True,
            frozen_models=rank.pref.frozen_models(None),
        )

        def train(batch, step):
            return reduce_ranks([rank.train_pairs(batch, step)])

        close = None
    else:
        from rl.placement import make_placement
        from rl.setup import init_ray
        from rl.trainer_group import TrainerGroup

        init_ray(cfg)
        placement = make_placement(cfg, cfg.cluster.timeout_s)
        group = TrainerGroup(cfg, path, w["total_steps"], placement)
        train = group.train_pairs

        def close():
            group.shutdown()
            placement.remove()

    precision = {
        "policy_param_dtype": "torch.float32",
        "autocast": cfg.model.dtype if cfg.model.dtype != "float32" else "off",
        "reference_param_dtype": f"torch.{cfg.model.dtype}",
        "optimizer": "torch AdamW fused",
        "bf16_weights": cfg.trainer.bf16_weights,
    }
    losses = []
    send(
        {
            "kind": "ready",
            "setup_s": time.perf_counter() - t0,
            "pairs_used": n_pairs,
            "precision": precision,
            "rss_ready_gib": sampler.sample() / 2**30,
        }
    )
    sampler.phase("steps")
    step = 0
    while True:
        cmd = read_command()
        if cmd == "quit":
            break
        positions = batch_positions(step, w["batch"], n_pairs)
        c0 = time.perf_counter()
        collated = ps.collate(positions)
        batch = batcher(collated)
        collate_s = time.perf_counter() - c0
        s0 = time.perf_counter()
        m = train(batch, step)
        dt = time.perf_counter() - s0
        pm, cm = collated["prompt_mask"].bool(), collated["completion_mask"].bool()
        seqs = [
            p[a].tolist() + c[b].tolist()
            for p, a, c, b in zip(collated["prompt_ids"], pm, collated["completion_ids"], cm)
        ]
        losses.append(m.get("train/loss"))
        ref_s, upd_s = m.get("timing/ref_pass", 0.0), m.get("timing/update", 0.0)
        send(
            {
                "kind": "step",
                "step": step,
                "seconds": dt,
                "ref_pass_s": ref_s,
                "update_s": upd_s,
                "outside_rank_s": dt - ref_s - upd_s,
                "collate_s": collate_s,
                "tokens_real": int(pm.sum() + cm.sum()),
                "tokens_completion": int(cm.sum()),
                "tokens_padded": int(pm.numel() + cm.numel()),
                "rows": int(pm.shape[0]),
                "digest": rows_digest(seqs),
                "load_1min": os.getloadavg()[0],
            }
        )
        step += 1
    sampler.phase(None)
    sampler.__exit__()
    if close is not None:
        close()
    send({"kind": "done", "losses": losses, "memory": sampler.report()})


# ----------------------------------------------------------------------------- coordinator


class Worker:
    """A side's worker process: TAG lines on stdout are messages, everything else goes to its log file."""

    def __init__(self, side: str, spec: dict, log_path: Path) -> None:
        self.side = side
        self.log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side, "--spec", json.dumps(spec)]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.q: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith(TAG):
                self.q.put(json.loads(line[len(TAG) :]))
            else:
                self.log.write(line)
                self.log.flush()
        self.q.put({"kind": "exit", "returncode": self.proc.wait()})

    def get(self, timeout: float) -> dict:
        try:
            msg = self.q.get(timeout=timeout)
        except queue.Empty:
            raise SystemExit(
                f"[dpo_vs_trl] {self.side}: no answer within {timeout:.0f} s (log {self.log.name})"
            ) from None
        if msg["kind"] == "exit":
            raise SystemExit(
                f"[dpo_vs_trl] {self.side} worker exited (code {msg['returncode']}); log {self.log.name}:\n"
                + "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-25:])
            )
        return msg

    def tell(self, cmd: str) -> None:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()

    def close(self, timeout: float = 120) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.log.close()


def default_pairs(quick: bool) -> str:
    """The dpo recipe's builtin:self pairs (cached by `tokencredit train dpo`), built here when missing."""
    from rl.cli import find_recipe
    from rl.config import load_config
    from rl.models import resolve_model
    from rl.pair_source import builtin_pairs_path

    cfg = load_config(find_recipe("dpo"))
    path = builtin_pairs_path(cfg, resolve_model(cfg.model.name_or_path))
    if path.is_file():
        return str(path)
    out = Path(tempfile.gettempdir()) / (
        "dpo_vs_trl_pairs_quick.jsonl" if quick else "dpo_vs_trl_pairs.jsonl"
    )
    if not out.is_file():
        cmd = [sys.executable, "-m", "rl.cli", "build-pairs", "dpo", "--out", str(out)]
        if quick:
            cmd += ["--limit", "32"]
        print(f"[dpo_vs_trl] building pairs: {' '.join(cmd[2:])}", flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True)
    return str(out)


def summarise(steps: dict[str, list[dict]], warmup: int, sides: list[str]) -> dict:
    """Median / quartiles per side over the measured steps, per-round ratios to TRL, breakdowns, checks."""
    out: dict = {"sides": {}}
    for s in sides:
        meas = [x for x in steps[s] if x["step"] >= warmup]
        e = {"seconds_per_step": median_spread([x["seconds"] for x in meas]), "steps_measured": len(meas)}
        for k in (
            "ref_forward_s",
            "optimizer_s",
            "rest_s",
            "ref_pass_s",
            "update_s",
            "outside_rank_s",
            "collate_s",
        ):
            if meas and k in meas[0]:
                e[k] = median_spread([x[k] for x in meas])["median"]
        for k in ("tokens_real", "tokens_completion", "tokens_padded"):
            e[k + "_per_step"] = median_spread([x[k] for x in meas])["median"]
        out["sides"][s] = e
    if "trl" in sides:
        for s in sides:
            if s == "trl":
                continue
            by = {x["step"]: x["seconds"] for x in steps["trl"]}
            ratios = [
                x["seconds"] / by[x["step"]] for x in steps[s] if x["step"] >= warmup and x["step"] in by
            ]
            out["sides"][s]["ratio_to_trl_per_round"] = median_spread(ratios)
            med_s, med_t = (
                out["sides"][s]["seconds_per_step"]["median"],
                out["sides"]["trl"]["seconds_per_step"]["median"],
            )
            out["sides"][s]["ratio_of_medians_to_trl"] = round(med_s / med_t, 4) if med_s and med_t else None
            same = [x["digest"] == y["digest"] for x, y in zip(steps[s], steps["trl"])]
            out["sides"][s]["same_token_ids_as_trl"] = f"{sum(same)}/{len(same)} steps"
    if "tokencredit" in sides and "inproc" in sides:
        a = {x["step"]: x["seconds"] for x in steps["inproc"]}
        diffs = [
            x["seconds"] - a[x["step"]]
            for x in steps["tokencredit"]
            if x["step"] >= warmup and x["step"] in a
        ]
        out["ray_overhead_s_per_step"] = median_spread(diffs)
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = result["config"]["sides"]
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    ax = axes[0]
    for s in sides:
        pts = result["steps"][s]
        ax.plot([p["step"] for p in pts], [p["seconds"] for p in pts], marker="o", label=s)
    ax.axvspan(-0.5, result["config"]["warmup"] - 0.5, color="gray", alpha=0.15, label="warm-up (excluded)")
    ax.set(xlabel="round (optimizer step)", ylabel="seconds", title="seconds per optimizer step, interleaved")
    ax.grid(alpha=0.3)
    ax.legend()
    ax = axes[1]
    parts = {
        "trl": [
            ("ref_forward_s", "reference forward"),
            ("rest_s", "policy fwd + loss + bwd + clip"),
            ("optimizer_s", "AdamW step"),
        ],
        "tokencredit": [
            ("ref_pass_s", "reference pass"),
            ("update_s", "fwd + loss + bwd + step"),
            ("outside_rank_s", "Ray call / transfer"),
        ],
        "inproc": [
            ("ref_pass_s", "reference pass"),
            ("update_s", "fwd + loss + bwd + step"),
            ("outside_rank_s", "outside the rank code"),
        ],
    }
    colors = iter(plt.cm.tab10.colors)
    for i, s in enumerate(sides):
        bottom = 0.0
        for key, label in parts[s]:
            v = result["summary"]["sides"][s].get(key) or 0.0
            ax.bar(i, v, bottom=bottom, label=f"{s}: {label}", color=next(colors))
            bottom += v
        med = result["summary"]["sides"][s]["seconds_per_step"]["median"]
        ax.text(i, bottom, f"{med:.2f} s", ha="center", va="bottom")
    ax.set_xticks(range(len(sides)), sides)
    ax.set(ylabel="seconds (medians of the parts)", title="where a step's time goes")
    ax.legend(fontsize=7)
    ax = axes[2]
    mem = [result["memory"][s] for s in sides]
    xs = range(len(sides))
    ax.bar(
        [x - 0.2 for x in xs],
        [m["peak_rss_largest_process_gib"] for m in mem],
        0.4,
        label="largest process (model + optimizer)",
    )
    ax.bar([x + 0.2 for x in xs], [m["peak_rss_tree_gib"] for m in mem], 0.4, label="whole worker tree")
    ax.set_xticks(list(xs), sides)
    ax.set(ylabel="peak RSS (GiB)", title="peak resident memory")
    ax.legend()
    m = result["machine"]
    fig.suptitle(
        f"DPO step, {result['config']['batch']} pairs, {result['config']['precision']}, "
        f"{result['config']['threads']} threads; {m['cpu']} ({m['cores']} cores); load avg during steps "
        f"{result['load_average_during_steps']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(result: dict) -> None:
    summ = result["summary"]["sides"]
    print(
        f"\n{'side':<12} {'s/step med':>10} {'q1-q3':>15} {'x TRL':>7} {'tokens real/padded':>19} "
        f"{'RSS proc':>9} {'RSS tree':>9}  breakdown (medians, s)"
    )
    for s in result["config"]["sides"]:
        e, mem = summ[s], result["memory"][s]
        sp = e["seconds_per_step"]
        ratio = e.get("ratio_to_trl_per_round", {}).get("median") if s != "trl" else 1.0
        parts = {
            k: e[k]
            for k in (
                "ref_forward_s",
                "rest_s",
                "optimizer_s",
                "ref_pass_s",
                "update_s",
                "outside_rank_s",
                "collate_s",
            )
            if e.get(k) is not None
        }
        print(
            f"{s:<12} {sp['median']:>10.3f} {sp['q1']:>7.3f}-{sp['q3']:<7.3f} "
            f"{(ratio if ratio is not None else float('nan')):>7.3f} "
            f"{e['tokens_real_per_step']:>9.0f}/{e['tokens_padded_per_step']:<9.0f} "
            f"{mem['peak_rss_largest_process_gib']:>9.2f} {mem['peak_rss_tree_gib']:>9.2f}  "
            + " ".join(f"{k[:-2]}={v:.3f}" for k, v in parts.items())
        )
    for s in result["config"]["sides"]:
        if s != "trl" and "same_token_ids_as_trl" in summ[s]:
            print(f"{s}: same token ids as TRL in {summ[s]['same_token_ids_as_trl']}")
    if "ray_overhead_s_per_step" in result["summary"]:
        print(
            f"Ray call overhead (tokencredit - inproc, per round): "
            f"{result['summary']['ray_overhead_s_per_step']['median']:.3f} s median"
        )
    print(
        "losses: "
        + "; ".join(
            f"{s} {[round(x, 4) if x is not None else None for x in result['losses'][s]]}"
            for s in result["config"]["sides"]
        )
    )
    print(f"verdict: {result['summary']['verdict']}")
    print(
        f"load average during the steps: {result['load_average_during_steps']}; "
        f"machine: {result['machine']['cpu']}, "
        f"{result['machine']['cores']} cores"
    )


def verdict(summary: dict) -> str:
    tc = summary["sides"].get("tokencredit")
    if not tc or "ratio_to_trl_per_round" not in tc:
        return "no tokencredit-vs-TRL pair measured"
    r = tc["ratio_to_trl_per_round"]
    if r["median"] is None:
        return "no measured round"
    met = "meets" if r["median"] <= 1.0 else "MISSES"
    return (
        f"{met} the target (tokencredit step <= TRL step): per-round ratio median {r['median']:.3f} "
        f"(quartiles {r['q1']:.3f}-{r['q3']:.3f}, {r['n']} rounds)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", default=None, help="pairs file (default: the dpo recipe's builtin:self cache)")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step (the dpo recipe's 8)")
    p.add_argument("--lr", type=float, default=5e-6)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--threads", type=int, default=0, help="torch threads of both sides (0: all cores)")
    p.add_argument("--warmup", type=int, default=None, help="rounds discarded (default 3; quick 1)")
    p.add_argument("--repeats", type=int, default=None, help="rounds measured (default 20; quick 2)")
    p.add_argument("--max-length", type=int, default=160, help="prompt + response tokens (the dpo recipe's)")
    p.add_argument("--max-prompt-length", type=int, default=96)
    p.add_argument(
        "--profile", action="store_true", help="also the in-process rank (no Ray): the Ray overhead"
    )
    p.add_argument("--sides", nargs="+", choices=SIDES, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--timeout", type=float, default=900.0, help="seconds a side may take for start-up or a step"
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder of dpo_vs_trl.{json,png} (default benchmarks/results; quick: /tmp/dpo_vs_trl_quick)",
    )
    p.add_argument("--quick", action="store_true", help="smoke: 1 warm-up + 2 measured rounds")
    p.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        spec = json.loads(a.spec)
        if a.worker == "trl":
            worker_trl(spec)
        else:
            worker_tokencredit(spec, in_process=a.worker == "inproc")
        return
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 20)
    sides = a.sides or (["trl", "tokencredit", "inproc"] if a.profile else ["trl", "tokencredit"])
    threads = a.threads or os.cpu_count() or 1
    out = Path(a.out or ("/tmp/dpo_vs_trl_quick" if a.quick else RESULTS))
    out.mkdir(parents=True, exist_ok=True)
    pairs = a.pairs or default_pairs(a.quick)
    from rl.models import resolve_model  # noqa: F401 - fail early without the bundled model

    _, _, ps = load_pair_rows(pairs, a.max_length, a.max_prompt_length)
    n_pairs = (len(ps) // a.batch) * a.batch
    if n_pairs == 0:
        raise SystemExit(f"[dpo_vs_trl] {pairs}: {len(ps)} usable pairs, fewer than one batch of {a.batch}")
    total = warmup + repeats
    spec = {
        "pairs": pairs,
        "batch": a.batch,
        "lr": a.lr,
        "precision": a.precision,
        "threads": threads,
        "total_steps": total,
        "n_pairs": n_pairs,
        "max_length": a.max_length,
        "max_prompt_length": a.max_prompt_length,
        "seed": a.seed,
    }
    print(
        f"[dpo_vs_trl] {pairs}: {n_pairs} pairs used ({len(ps)} usable); sides {sides}; {warmup} warm-up + "
        f"{repeats} measured rounds; {threads} threads; load average {load_average()}",
        flush=True,
    )
    logs = out / "dpo_vs_trl_logs"
    logs.mkdir(exist_ok=True)
    workers = {s: Worker(s, spec, logs / f"{s}.log") for s in sides}
    ready = {}
    try:
        for s, w in workers.items():
            ready[s] = w.get(a.timeout * 2)
            print(
                f"[dpo_vs_trl] {s} ready after {ready[s]['setup_s']:.0f} s ({ready[s]['precision']})",
                flush=True,
            )
        steps: dict[str, list[dict]] = {s: [] for s in sides}
        for rnd in range(total):
            order = sides[rnd % len(sides) :] + sides[: rnd % len(sides)]
            for s in order:
                workers[s].tell("step")
                msg = workers[s].get(a.timeout)
                msg["order"] = order.index(s)
                steps[s].append(msg)
            line = " ".join(f"{s} {steps[s][-1]['seconds']:.2f}s" for s in sides)
            print(
                f"[dpo_vs_trl] round {rnd}{' (warm-up)' if rnd < warmup else ''}: {line}; load "
                f"{os.getloadavg()[0]:.2f}",
                flush=True,
            )
        done = {}
        for s, w in workers.items():
            w.tell("quit")
            done[s] = w.get(a.timeout)
    finally:
        for w in workers.values():
            w.close()
    summary = summarise(steps, warmup, sides)
    summary["verdict"] = verdict(summary)
    loads = [x["load_1min"] for s in sides for x in steps[s] if x["step"] >= warmup]
    result = {
        "benchmark": "dpo_vs_trl",
        "command": "python benchmarks/dpo_vs_trl.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "config": {
            "pairs": pairs,
            "pairs_used": n_pairs,
            "batch": a.batch,
            "rows_per_step": 2 * a.batch,
            "micro_batches": 1,
            "lr": a.lr,
            "precision": a.precision,
            "threads": threads,
            "warmup": warmup,
            "repeats": repeats,
            "sides": sides,
            "max_length": a.max_length,
            "loss": "sigmoid DPO, beta 0.1",
            "reference": "on the fly, every step, both sides",
            "precision_detail": {s: ready[s]["precision"] for s in sides},
            "setup_s": {s: round(ready[s]["setup_s"], 1) for s in sides},
            "what_is_in_a_step": __doc__.split("    trl ", 1)[1].split("Reported:")[0].strip(),
        },
        "load_average_during_steps": {
            k: v for k, v in median_spread(loads).items() if k in ("median", "min", "max")
        },
        "summary": summary,
        "memory": {s: done[s]["memory"] for s in sides},
        "losses": {s: done[s]["losses"] for s in sides},
        "steps": steps,
    }
    (out / "dpo_vs_trl.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, out / "dpo_vs_trl.png")
    print_table(result)
    print(f"\nwrote {out / 'dpo_vs_trl.json'} and {out / 'dpo_vs_trl.png'}")


if __name__ == "__main__":
    main()
