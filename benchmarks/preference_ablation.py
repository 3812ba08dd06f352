"""Preference-loss ablation: DPO vs IPO vs TDPO vs cDPO vs TGDPO vs T-REG on the same self-sampled pairs,
plus the critical-token check (issue 13, Evidence).

One invocation does everything, resumably, in ``--out`` (default runs/preference_ablation/):

1. Pairs, built once and reused by every arm and seed (``pairs/``; rebuilt only when their settings change):
   * ``tokencredit critical-tokens cdpo --verify`` on the bundled SmolLM2-135M's own samples of the train
     prompts (1-digit mixed arithmetic, ``--n`` samples each, top-p 0.95): cDPO's pairs (most frequent
     correct vs most frequent incorrect answer), LoRA SFT of a positive and a negative model, p_CE of every
     response token -> ``weighted_pairs.jsonl``; and the section 3.3 rollout verification -> ``verify.json``.
   * held-out pairs: ``tokencredit build-pairs cdpo --split test --rule cdpo`` on the test prompts (the
     prompts greedy accuracy is measured on; none is a training prompt), scored with the *same* positive /
     negative models (so the cDPO arm can read them; the held-out metrics never use the weights).
   * ``pairs/data/{train,test}.jsonl``: what every arm reads (``preference_data.source=pairs/data``).
2. Arms: each a real ``tokencredit train <recipe>`` subprocess (recipes/{dpo,ipo,tdpo,cdpo,tgdpo,treg}.yaml)
   with the same overrides: pairs, ``trainer.seed`` / ``rollout.seed`` = the seed, ``dpo.epochs``, learning
   rate, eval set; only the loss section differs (each recipe's own, the papers' defaults) and cDPO reads the
   p_CE columns. TGDPO's guidance model is the DPO arm's exported policy of the same seed, so DPO runs
   first. One result file per arm x seed (``arms/<arm>_s<seed>.json``); ``--reuse`` keeps the finished ones.
3. Independent evaluation: each arm's exported policy (``hf_model``) and, once per seed, the base model go
   through benchmarks/eval_heldout.py (a fresh process, vLLM from the saved weights, the recipe's test
   prompts, reward and sampling; pass@k sampler seed = the seed): held-out greedy accuracy and pass@k.
   Without that file the loop's own evaluation is used (``dpo.eval_generation``; ``--loop-eval`` adds it
   anyway, next to the independent one).
4. Summary: per arm, mean and sample standard deviation over seeds, and the paired difference to DPO (same
   seed, same pairs): held-out greedy accuracy and pass@k on ``--eval-prompts`` test prompts (before =
   the base model), held-out pairwise reward accuracy (chosen
   implicit reward beta * sum_t log pi/pi_ref above the rejected one), seconds per optimizer step (the
   driver's wall time of ``train_pairs``: reference / guidance / T-REG passes + update; rank-side split into
   ``ref_pass`` and ``update``), peak RSS (the arm's process tree, sampled every 0.5 s: the trainer rank,
   the rollout worker, the Ray daemons, the driver). The critical-token check: Pass@k of the verification's
   rollouts when another token is forced at the rollout-located critical token vs at random positions of the
   same incorrect responses, and whether cDPO's p_CE (the estimator the cDPO arm trains with) ranks those
   critical tokens low. Each arm carries the claim its paper makes (specs/dpo_methods.md) and a plain verdict
   of what the paired differences show.

The load average (sampled during each run) and the machine are recorded with every figure; the run's
stdout/stderr go to ``logs/``. The full run needs a quiet machine for hours (see ``--help`` defaults):

    python benchmarks/preference_ablation.py                          # 6 arms x 3 seeds
    python benchmarks/preference_ablation.py --reuse                  # resume: only missing arm x seed
    python benchmarks/preference_ablation.py --summarise-only         # re-summarise what is there
    python benchmarks/preference_ablation.py --quick                  # smoke: tiny budget, 1 seed, dpo + cdpo

Writes benchmarks/results/preference_ablation.{json,png} (``--quick``: into ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import TreeSampler, load_average, machine, median_spread, spread  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
EVAL_SCRIPT = ROOT / "benchmarks" / "eval_heldout.py"
EVAL_RECIPE = (
    ROOT / "recipes" / "dpo.yaml"
)  # every arm's data / rollout / rewards / eval sections are the same
PY = sys.executable

# arm -> (recipe, arm-specific overrides on top of the common ones)
ARMS: dict[str, tuple[str, list[str]]] = {
    "dpo": ("dpo", []),
    "ipo": ("ipo", []),
    "tdpo": ("tdpo", []),
    "cdpo": (
        "cdpo",
        [
            "preference_data.chosen_weight_field=chosen_weight",
            "preference_data.rejected_weight_field=rejected_weight",
        ],
    ),
    "tgdpo": ("tgdpo", []),  # + dpo.guidance_model = the DPO arm's export of the same seed
    "treg": ("treg", []),
}
ORDER = list(ARMS)  # dpo first: TGDPO's guidance model is its export

# What each paper claims, as specs/dpo_methods.md records it (tags: [PAPER] abstract, [SEC] secondary notes,
# [CODE] official code). The setting here (135M model, 1-digit arithmetic, minutes of CPU training) is far
# from the papers'; the verdicts say what this run shows, not whether the paper is right at its scale.
CLAIMS: dict[str, dict] = {
    "dpo": {
        "paper": "DPO, arXiv 2305.18290",
        "claim": "the baseline every other arm is compared with",
        "spec": "§1.1",
        "metric": None,
    },
    "ipo": {
        "paper": "IPO, arXiv 2310.12036 (Eq. 17, TRL's length-normalised form)",
        "claim": "specs/dpo_methods.md records no result for IPO (a baseline here)",
        "spec": "§1.2",
        "metric": None,
    },
    "tdpo": {
        "paper": "TDPO2, arXiv 2404.11999",
        "claim": "specs/dpo_methods.md records no result for TDPO (a baseline here; the official README "
        "recommends TDPO2 with alpha 0.5)",
        "spec": "§1.4",
        "metric": None,
    },
    "cdpo": {
        "paper": "cDPO (Critical Tokens Matter), arXiv 2411.19943",
        "claim": "improves GSM8K / MATH500 accuracy over baseline strategies incl. DPO with Llama-3-8B/70B "
        "and deepseek-math-7b [PAPER abstract; table numbers not verified]; models produce correct "
        "outcomes when forced to decode other tokens instead of critical tokens [PAPER abstract]",
        "spec": "§3.3-3.4",
        "metric": "greedy_final",
    },
    "tgdpo": {
        "paper": "TGDPO, arXiv 2506.14574",
        "claim": "beats DPO: up to +7.5 MT-Bench WR, +6.2 AlpacaEval 2, +4.3 Arena-Hard [PAPER abstract]; "
        "stays good after the loss converges where DPO degrades [SEC]",
        "spec": "§4.3",
        "metric": "greedy_final",
    },
    "treg": {
        "paper": "T-REG (DPO-REG), arXiv 2412.02685",
        "claim": "beats DPO: up to +3.8 AlpacaEval 2 LC, +4.4 Arena-Hard [PAPER abstract]",
        "spec": "§5",
        "metric": "greedy_final",
    },
}
CRITICAL_CLAIM = (
    "LLMs tend to produce positive outcomes when forced to decode other tokens instead of critical "
    "tokens (arXiv 2411.19943 abstract, spec §3.3); cDPO's contrastive p_CE is its estimator of "
    "those tokens (low p_CE = critical, spec §3.1)"
)

ARM_METRICS = (
    "greedy_final",
    "greedy_gain",
    "pass_at_k_final",
    "reward_accuracy_final",
    "reward_margin_final",
    "eval_dpo_loss_final",
    "seconds_per_step",
    "ref_pass_s",
    "update_s",
    "peak_rss_trainer_gib",
    "peak_rss_tree_gib",
    "wall_s",
)
PAIRED = (
    "greedy_final",
    "pass_at_k_final",
    "reward_accuracy_final",
    "eval_dpo_loss_final",
    "seconds_per_step",
    "peak_rss_trainer_gib",
)


# ----------------------------------------------------------------------------- settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--arms", nargs="+", default=None, choices=list(ARMS), help="default: all (quick: dpo cdpo)"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2 (quick: 0)")
    p.add_argument(
        "--out",
        default=None,
        help="work folder: pairs/, runs/, arms/, logs/ "
        "(default runs/preference_ablation; quick: runs/preference_ablation_quick)",
    )
    p.add_argument(
        "--results",
        default=None,
        help="folder of preference_ablation.{json,png} (default benchmarks/results; quick: --out)",
    )
    p.add_argument("--reuse", action="store_true", help="keep finished arm x seed result files (resume)")
    p.add_argument("--summarise-only", action="store_true", help="run nothing; summarise the result files")
    p.add_argument(
        "--rebuild-pairs", action="store_true", help="rebuild the pairs even if their settings match"
    )
    p.add_argument("--quick", action="store_true", help="smoke: tiny budget, 1 seed, 2 arms")
    # budget (the same for every arm)
    p.add_argument("--epochs", type=float, default=None, help="dpo.epochs (default 2; quick: 0 = --steps)")
    p.add_argument("--steps", type=int, default=None, help="trainer.steps when --epochs 0 (quick: 2)")
    p.add_argument(
        "--lr", type=float, default=None, help="trainer.lr for every arm (default: the recipes' 5e-6)"
    )
    p.add_argument(
        "--pairs-per-step", type=int, default=None, help="dpo.pairs_per_step (default: the recipes' 8)"
    )
    p.add_argument(
        "--eval-prompts", type=int, default=None, help="eval.num_prompts (default 100 = all test; quick 10)"
    )
    p.add_argument("--eval-every", type=int, default=0, help="eval.every (0: before and after training only)")
    p.add_argument(
        "--loop-eval",
        action="store_true",
        help="also the loop's in-run greedy evaluation "
        "(dpo.eval_generation; automatic without eval_heldout.py)",
    )
    p.add_argument(
        "--keep-models",
        action="store_true",
        help="keep every arm's hf_model after its evaluation (default: only the DPO arm's, TGDPO's guidance)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="trainer.torch_threads (default: the recipes' 0 = all)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per arm run before it is killed (default 4 h; quick 20 min)",
    )
    # pairs
    p.add_argument(
        "--num-train",
        type=int,
        default=None,
        help="data.task.num_train: train prompts (default 143 = "
        "every 1-digit problem not in the test split; quick 24)",
    )
    p.add_argument(
        "--n", type=int, default=None, help="samples per prompt for the pairs (default 64, official; quick 8)"
    )
    p.add_argument(
        "--heldout-prompts",
        type=int,
        default=None,
        help="test prompts sampled for held-out pairs (default: all 100; quick 16)",
    )
    p.add_argument("--build-seed", type=int, default=0)
    p.add_argument(
        "--verify-trajectories",
        type=int,
        default=None,
        help="incorrect responses verified (default 50, official 100; quick 2)",
    )
    p.add_argument(
        "--verify-rollouts",
        type=int,
        default=None,
        help="rollouts per prefix and forced draws per position (default 32, official 64; quick 4)",
    )
    p.add_argument(
        "--verify-random", type=int, default=None, help="random positions per trajectory (default 2; quick 1)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the critical-token check")
    p.add_argument(
        "--extra", nargs="*", default=[], help="more dotted overrides for every command (pairs and arms)"
    )
    a = p.parse_args(argv)
    q = a.quick
    defaults = {
        "arms": ["dpo", "cdpo"] if q else list(ORDER),
        "seeds": [0] if q else [0, 1, 2],
        "out": str(ROOT / "runs" / ("preference_ablation_quick" if q else "preference_ablation")),
        "epochs": 0.0 if q else 2.0,
        "steps": 2 if q else None,
        "eval_prompts": 10 if q else 100,
        "timeout": 1200.0 if q else 4 * 3600.0,
        "num_train": 24 if q else 143,
        "n": 8 if q else 64,
        "heldout_prompts": 16 if q else None,
        "verify_trajectories": 2 if q else 50,
        "verify_rollouts": 4 if q else 32,
        "verify_random": 1 if q else 2,
    }
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.results = a.results or (a.out if q else str(RESULTS))
    a.arms = [arm for arm in ORDER if arm in a.arms]  # dpo before tgdpo
    if "tgdpo" in a.arms and "dpo" not in a.arms:
        p.error("--arms tgdpo needs dpo too: TGDPO's guidance model is the DPO arm's export of the same seed")
    if a.epochs == 0 and not a.steps:
        p.error("--epochs 0 needs --steps")
    a.independent = EVAL_SCRIPT.is_file()
    a.loop_eval = a.loop_eval or not a.independent
    return a


def common_data_overrides(a: argparse.Namespace) -> list[str]:
    """What the pairs and every arm share: the task (prompts) and the user's extras."""
    return [f"data.task.num_train={a.num_train}", *a.extra]


def pairs_settings(a: argparse.Namespace) -> dict:
    return {
        "num_train": a.num_train,
        "n": a.n,
        "build_seed": a.build_seed,
        "heldout_prompts": a.heldout_prompts,
        "verify": None
        if a.no_verify
        else {
            "trajectories": a.verify_trajectories,
            "rollouts": a.verify_rollouts,
            "random": a.verify_random,
        },
        "extra": list(a.extra),
    }


def fingerprint(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def arm_overrides(a: argparse.Namespace, arm: str, seed: int, data_dir: Path, runs_dir: Path) -> list[str]:
    """The dotted overrides of one arm x seed: the common ones, then the arm's own."""
    o = [
        *common_data_overrides(a),
        f"name=pabl_{arm}_s{seed}",
        f"logging.dir={runs_dir}",
        f"logging.run_name={arm}_s{seed}",
        "logging.progress=false",
        f"preference_data.source={data_dir}",
        "preference_data.test_split=test",
        "preference_data.holdout_fraction=0.0",
        "preference_data.chosen_weight_field=''",
        "preference_data.rejected_weight_field=''",
        f"trainer.seed={seed}",
        f"rollout.seed={seed}",
        f"dpo.epochs={a.epochs}",
        f"dpo.eval_generation={str(a.loop_eval).lower()}",
        "dpo.eval_pairs=100000",
        f"eval.num_prompts={a.eval_prompts}",
        f"eval.every={a.eval_every}",
        "eval.at_start=true",
        "checkpoint.save_final=false",
        f"checkpoint.export_hf={str(a.independent or arm == 'dpo').lower()}",
    ]
    if a.epochs == 0:
        o.append(f"trainer.steps={a.steps}")
    if a.lr is not None:
        o.append(f"trainer.lr={a.lr}")
    if a.pairs_per_step is not None:
        o.append(f"dpo.pairs_per_step={a.pairs_per_step}")
    if a.threads is not None:
        o.append(f"trainer.torch_threads={a.threads}")
    o += ARMS[arm][1]
    if arm == "tgdpo":
        o.append(f"dpo.guidance_model={guidance_path(runs_dir, seed)}")
    return o


def guidance_path(runs_dir: Path, seed: int) -> Path:
    return runs_dir / f"dpo_s{seed}" / "hf_model"


# ----------------------------------------------------------------------------- subprocesses


def run_logged(cmd: list[str], log_path: Path, timeout: float, what: str) -> dict:
    """Run ``cmd`` (its own session), output to ``log_path``; peak RSS of its tree and the load average."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"[ablation] {what}: {' '.join(cmd[2:] if cmd[:2] == [PY, '-m'] else cmd)}", flush=True)
    print(f"[ablation]   log: {log_path}", flush=True)
    load_start = load_average()
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with TreeSampler(proc.pid, interval=0.5) as sampler:
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(
                    proc.pid, signal.SIGTERM
                )  # the session we started: the run, its Ray daemons, workers
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                rc = -1
    wall = time.perf_counter() - t0
    rec = {
        "returncode": rc,
        "timed_out": rc == -1,
        "wall_s": round(wall, 1),
        "load_average_start": load_start,
        "load_average_end": load_average(),
        **sampler.report(),
    }
    status = "ok" if rc == 0 else ("TIMED OUT" if rc == -1 else f"FAILED (exit {rc})")
    print(
        f"[ablation]   {status} in {wall:.0f} s; peak RSS {rec['peak_rss_tree_gib']:.2f} GiB (tree); load "
        f"{rec['load_average_1min']['mean']:.1f} mean",
        flush=True,
    )
    return rec


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ----------------------------------------------------------------------------- pairs


def build_pairs_stage(a: argparse.Namespace, out: Path) -> dict:
    """Pairs shared by every arm (module doc, step 1); returns the manifest (pairs/manifest.json)."""
    pdir = out / "pairs"
    data = pdir / "data"
    manifest_path = pdir / "manifest.json"
    settings = pairs_settings(a)
    fp = fingerprint(settings)
    if manifest_path.is_file() and not a.rebuild_pairs:
        m = json.loads(manifest_path.read_text())
        if (
            m.get("fingerprint") == fp
            and (data / "train.jsonl").is_file()
            and (data / "test.jsonl").is_file()
        ):
            print(
                f"[ablation] pairs: reusing {data} ({m['train_pairs']} train / {m['test_pairs']} held-out)",
                flush=True,
            )
            return m
    if a.summarise_only:
        raise SystemExit(f"[ablation] --summarise-only: no pairs built with these settings in {pdir}")
    critical = pdir / "critical"
    common = common_data_overrides(a)
    ct = [f"critical_tokens.n={a.n}", "critical_tokens.num_prompts=0", f"critical_tokens.seed={a.build_seed}"]
    if not a.no_verify:
        ct += [
            f"critical_tokens.verify.num_trajectories={a.verify_trajectories}",
            f"critical_tokens.verify.rollouts={a.verify_rollouts}",
            f"critical_tokens.verify.random_positions={a.verify_random}",
            f"critical_tokens.verify.seed={a.build_seed}",
            "critical_tokens.verify.ks=[" + ",".join(str(k) for k in ks_upto(a.verify_rollouts)) + "]",
        ]
    cmd = [PY, "-m", "rl.cli", "critical-tokens", "cdpo", *common, *ct, "--out", str(critical)]
    if a.rebuild_pairs:
        cmd.append("--force")
    if not a.no_verify:
        cmd.append("--verify")
    rec_ct = run_logged(
        cmd,
        out / "logs" / "pairs_critical_tokens.log",
        6 * 3600.0 if not a.quick else 1800.0,
        "pairs 1/3: critical-tokens (sample, verify, LoRA SFT pos/neg, p_CE)",
    )
    if rec_ct["returncode"] != 0:
        raise SystemExit(
            f"[ablation] critical-tokens failed:\n{log_tail(out / 'logs' / 'pairs_critical_tokens.log')}"
        )
    raw = pdir / "heldout_raw.jsonl"
    cmd = [
        PY,
        "-m",
        "rl.cli",
        "build-pairs",
        "cdpo",
        *common,
        "rollout.top_p=0.95",
        "--out",
        str(raw),
        "--split",
        "test",
        "--rule",
        "cdpo",
        "--n",
        str(a.n),
        "--seed",
        str(a.build_seed),
    ]
    if a.heldout_prompts:
        cmd += ["--limit", str(a.heldout_prompts)]
    rec_bp = run_logged(
        cmd,
        out / "logs" / "pairs_heldout.log",
        3 * 3600.0 if not a.quick else 1800.0,
        "pairs 2/3: held-out pairs on the test prompts (build-pairs --rule cdpo)",
    )
    if rec_bp["returncode"] != 0:
        raise SystemExit(f"[ablation] build-pairs failed:\n{log_tail(out / 'logs' / 'pairs_heldout.log')}")
    print(
        "[ablation] pairs 3/3: p_CE of the held-out pairs with the same positive / negative models",
        flush=True,
    )
    t0 = time.perf_counter()
    data.mkdir(parents=True, exist_ok=True)
    n_test = score_heldout(critical, raw, data / "test.jsonl", common)
    shutil.copyfile(critical / "weighted_pairs.jsonl", data / "train.jsonl")
    n_train = sum(1 for line in (data / "train.jsonl").read_text().splitlines() if line.strip())
    stages = {}
    for name in ("sample", "verify", "sft_pos", "sft_neg", "score"):
        f = critical / "stages" / f"{name}.json"
        if f.is_file():
            stages[name] = json.loads(f.read_text()).get("stats", {})
    manifest = {
        "fingerprint": fp,
        "settings": settings,
        "train_pairs": n_train,
        "test_pairs": n_test,
        "data": str(data),
        "critical_dir": str(critical),
        "critical_stages": stages,
        "commands": {"critical_tokens": rec_ct, "heldout": rec_bp},
        "heldout_scoring_s": round(time.perf_counter() - t0, 1),
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1, default=str))
    print(f"[ablation] pairs: {n_train} train / {n_test} held-out pairs in {data}", flush=True)
    return manifest


def ks_upto(n: int) -> list[int]:
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def score_heldout(critical: Path, raw: Path, out_path: Path, overrides: list[str]) -> int:
    """p_CE of each held-out pair's tokens under the critical-tokens run's positive / negative models (the
    same settings as its ``score`` stage), written as the pairs plus weight columns; returns the count."""
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.cli import find_recipe
    from rl.critical_tokens import load_critical_config, score_pairs, write_weighted_pairs
    from rl.models import resolve_model
    from rl.preference_data import PreferenceDataConfig, load_pairs
    from rl.standalone_model import DTYPES

    cfg, ct = load_critical_config(find_recipe("cdpo"), overrides)
    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model.name_or_path))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ps = load_pairs(
        PreferenceDataConfig(
            source=str(raw),
            max_length=ct.max_length,
            max_prompt_length=ct.max_prompt_length,
            on_bad_pair="drop",
        ),
        tok,
    )
    pos = AutoModelForCausalLM.from_pretrained(critical / "pos_model", dtype=torch.float32)
    neg = AutoModelForCausalLM.from_pretrained(critical / "neg_model", dtype=torch.float32)
    scores = score_pairs(
        pos, neg, ps.rows, pad, ct.beta_ce, ct.score_batch, ct.chunk_tokens, DTYPES[ct.score_dtype]
    )
    n = write_weighted_pairs(raw, ps.rows, scores, out_path)
    del pos, neg
    gc.collect()
    return n


# ----------------------------------------------------------------------------- the critical-token check


def critical_check(verify: dict | None, weighted_rows: list[dict]) -> dict | None:
    """Summary of verify.json (rl/critical_verify.py) plus how cDPO's p_CE ranks the located critical tokens.

    For each trajectory with a critical index k (response-token offset) the rejected response's p_CE values
    (``rejected_weight`` of the pair with the same ``prompt_index``, EOS slot dropped) give: p_CE at k, the
    normalised rank of k among the response's positions by ascending p_CE (0 = the lowest p_CE, i.e. what
    cDPO would call the most critical; 0.5 = chance), and whether argmin p_CE is k (chance: 1/length)."""
    if not verify:
        return None
    s = verify["summary"]
    ks = [str(k) for k in s.get("ks", [])]

    def pick(d):
        return {k: round(d[k], 4) for k in ks if k in d}

    out = {
        "claim": CRITICAL_CLAIM,
        "trajectories": s["trajectories"],
        "found": s["found"],
        "rollouts": s["rollouts"],
        "random_positions": s.get("random_positions"),
        "mean_critical_fraction": s.get("mean_critical_fraction"),
        "verify_seconds": s.get("seconds"),
        "pass_at_k": {
            "critical_with": pick(s["critical"]["with"]),
            "critical_forced": pick(s["critical"]["without"]),
            "random_with": pick(s["random"]["with"]),
            "random_forced": pick(s["random"]["without"]),
        },
    }
    cf, rf = s["critical"]["without"], s["random"]["without"]
    out["forced_critical_minus_forced_random"] = {
        k: round(cf[k] - rf[k], 4) for k in ks if k in cf and k in rf
    }
    out["pce_alignment"] = pce_alignment(verify.get("trajectories", []), weighted_rows)
    out["verdict"] = critical_verdict(out)
    return out


def pce_alignment(
    trajectories: list[dict], weighted_rows: list[dict], field: str = "rejected_weight"
) -> dict:
    by_prompt = {r.get("prompt_index"): r for r in weighted_rows if field in r}
    at_crit, at_rand, ranks, hits, chance, skipped = [], [], [], [], [], 0
    for t in trajectories:
        k = t.get("critical_index")
        if k is None:
            continue
        row = by_prompt.get(t.get("prompt_index"))
        length = int(t["length"])
        w = row[field] if row is not None else None
        if w is None or len(w) < length:
            skipped += 1
            continue
        body = [float(x) for x in w[:length]]
        p_k = body[k]
        at_crit.append(p_k)
        at_rand += [body[r["position"]] for r in t.get("random", []) if r["position"] < length]
        if length > 1:
            below = sum(1 for i, x in enumerate(body) if i != k and x < p_k)
            ties = sum(1 for i, x in enumerate(body) if i != k and x == p_k)
            ranks.append((below + 0.5 * ties) / (length - 1))
        hits.append(float(min(range(length), key=lambda i: body[i]) == k))
        chance.append(1.0 / length)

    def mean(xs):
        return round(sum(xs) / len(xs), 4) if xs else None

    return {
        "n": len(at_crit),
        "skipped": skipped,
        "mean_pce_at_critical": mean(at_crit),
        "mean_pce_at_random_positions": mean(at_rand),
        "mean_normalised_rank_of_critical": mean(ranks),
        "rank_chance": 0.5 if ranks else None,
        "argmin_pce_is_critical": mean(hits),
        "argmin_chance": mean(chance),
    }


def critical_verdict(c: dict) -> str:
    if not c["found"]:
        return f"no critical token found in {c['trajectories']} trajectories: nothing to compare"
    d = c["forced_critical_minus_forced_random"]
    if not d:
        return "no random positions to compare with"
    k1 = "1" if "1" in d else sorted(d, key=int)[0]
    crit = c["pass_at_k"]["critical_forced"].get(k1)
    rand = c["pass_at_k"]["random_forced"].get(k1)
    word = "above" if d[k1] > 0 else ("below" if d[k1] < 0 else "equal to")
    return (
        f"forcing another token at the critical token: pass@{k1} {crit:.3f}, {word} forcing at random "
        f"positions ({rand:.3f}), over {c['found']} trajectories with a critical token"
    )


# ----------------------------------------------------------------------------- independent evaluation

EVAL_KEYS = (
    "greedy_acc",
    "pass_at_k",
    "sample_acc",
    "greedy_len",
    "k",
    "seed",
    "num_prompts",
    "prompt_fingerprint",
    "folder_tokenizer_matches",
    "seconds",
)


def eval_overrides(a: argparse.Namespace, seed: int) -> list[str]:
    return [*common_data_overrides(a), f"eval.num_prompts={a.eval_prompts}", f"rollout.seed={seed}"]


def independent_eval(a: argparse.Namespace, model_dir: Path, seed: int) -> dict:
    """benchmarks/eval_heldout.py on ``model_dir`` (a fresh process): greedy accuracy and pass@k."""
    from eval_heldout import EvalSettings, evaluate_folders

    settings = EvalSettings(recipe=str(EVAL_RECIPE), overrides=tuple(eval_overrides(a, seed)), seed=seed)
    print(
        f"[ablation]   independent evaluation of {model_dir} (benchmarks/eval_heldout.py, seed {seed})",
        flush=True,
    )
    try:
        r = evaluate_folders([str(model_dir)], settings, timeout_s=3600)[0]
    except Exception as e:  # noqa: BLE001 - recorded, the arm's other numbers stand
        print(f"[ablation]   evaluation FAILED: {e}", flush=True)
        return {"ok": False, "error": str(e)[-2000:]}
    out = {
        "ok": True,
        **{k: r.get(k) for k in EVAL_KEYS},
        "load_average": load_average(),
        "settings": {
            "recipe": str(EVAL_RECIPE.relative_to(ROOT)),
            "overrides": list(settings.overrides),
            "seed": seed,
        },
    }
    print(
        f"[ablation]   greedy {out['greedy_acc']:.3f}, pass@{out['k']} {out['pass_at_k']:.3f} "
        f"({out['num_prompts']} prompts)",
        flush=True,
    )
    return out


def base_eval(a: argparse.Namespace, out: Path, seed: int) -> dict | None:
    """The base model through the same evaluation, once per seed (cached in arms/base_s<seed>.json)."""
    if not a.independent:
        return None
    path = out / "arms" / f"base_s{seed}.json"
    key = fingerprint(eval_overrides(a, seed))
    old = load_result(path)
    if old is not None and old.get("ok") and old.get("fingerprint") == key:
        return old
    if a.summarise_only:
        return old
    from rl.models import resolve_model

    res = {**independent_eval(a, Path(resolve_model("smollm2-135m")), seed), "fingerprint": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(res, indent=1, default=str))
    return res


# ----------------------------------------------------------------------------- arms


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def summarise_run(rows: list[dict]) -> dict:
    """One run's metrics.jsonl -> the numbers the ablation reports."""
    steps = [r for r in rows if r.get("step", 0) > 0 and "timing/train" in r]
    evals = [r for r in rows if "eval/greedy_acc" in r or "eval/reward_accuracy" in r]
    start = next((r for r in evals if r.get("step") == 0), None)
    final = evals[-1] if evals and evals[-1].get("step", 0) > 0 else None
    first = next((r for r in rows if "data/pairs" in r), {})

    def g(r, k):
        return None if r is None else r.get(k)

    out = {
        "steps": len(steps),
        "train_pairs": first.get("data/pairs"),
        "greedy_start": g(start, "eval/greedy_acc"),
        "greedy_final": g(final, "eval/greedy_acc"),
        "pass_at_k_start": g(start, "eval/pass_at_k"),
        "pass_at_k_final": g(final, "eval/pass_at_k"),
        "reward_accuracy_start": g(start, "eval/reward_accuracy"),
        "reward_accuracy_final": g(final, "eval/reward_accuracy"),
        "reward_margin_final": g(final, "eval/reward_margin"),
        "eval_dpo_loss_final": g(final, "eval/dpo_loss"),
        "eval_pairs": g(final, "eval/pairs"),
        "train_loss_first": steps[0].get("train/loss") if steps else None,
        "train_loss_last": steps[-1].get("train/loss") if steps else None,
        "train_reward_accuracy_last": steps[-1].get("train/reward_accuracy") if steps else None,
        "seconds_per_step": median_spread([r["timing/train"] for r in steps])["median"],
        "seconds_per_step_detail": median_spread([r["timing/train"] for r in steps]),
        "ref_pass_s": median_spread([r.get("timing/ref_pass") for r in steps])["median"],
        "update_s": median_spread([r.get("timing/update") for r in steps])["median"],
        "train_seconds_total": round(sum(r["timing/train"] for r in steps), 2),
        "curve": [
            {
                "step": r["step"],
                "greedy": r.get("eval/greedy_acc"),
                "pass_at_k": r.get("eval/pass_at_k"),
                "reward_accuracy": r.get("eval/reward_accuracy"),
            }
            for r in evals
        ],
    }
    if out["greedy_start"] is not None and out["greedy_final"] is not None:
        out["greedy_gain"] = round(out["greedy_final"] - out["greedy_start"], 6)
    else:
        out["greedy_gain"] = None
    return out


def result_path(out: Path, arm: str, seed: int) -> Path:
    return out / "arms" / f"{arm}_s{seed}.json"


def load_result(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_arm(a: argparse.Namespace, out: Path, manifest: dict, arm: str, seed: int) -> dict:
    runs_dir = out / "runs"
    run_dir = runs_dir / f"{arm}_s{seed}"
    if run_dir.exists():  # a fresh run; never resume or suffix an older attempt
        shutil.rmtree(run_dir)
    overrides = arm_overrides(a, arm, seed, Path(manifest["data"]), runs_dir)
    cmd = [PY, "-m", "rl.cli", "train", ARMS[arm][0], *overrides]
    rec = run_logged(cmd, out / "logs" / f"{arm}_s{seed}.log", a.timeout, f"arm {arm} seed {seed}")
    res = {
        "arm": arm,
        "seed": seed,
        "recipe": f"recipes/{ARMS[arm][0]}.yaml",
        "overrides": overrides,
        "command": "tokencredit train " + " ".join([ARMS[arm][0], *overrides]),
        "run_dir": str(run_dir),
        "pairs_fingerprint": manifest["fingerprint"],
        "ok": rec["returncode"] == 0,
        "process": rec,
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "claim": CLAIMS[arm],
    }
    if (run_dir / "metrics.jsonl").is_file():
        res["metrics"] = summarise_run(read_metrics(run_dir))
    if res["ok"] and a.independent:
        res["independent_eval"] = independent_eval(a, run_dir / "hf_model", seed)
        if arm != "dpo" and not a.keep_models:  # the DPO export stays: TGDPO's guidance model
            shutil.rmtree(run_dir / "hf_model", ignore_errors=True)
    if not res["ok"]:
        res["log_tail"] = log_tail(out / "logs" / f"{arm}_s{seed}.log")
        print(res["log_tail"], flush=True)
    return res


def flat(res: dict, base: dict | None = None) -> dict:
    """The per-arm x seed numbers the summary aggregates. Greedy accuracy and pass@k come from the independent
    evaluation (after: the arm's export; before: the base model, ``base``) when there is one, else from the
    loop's own evaluation (after: its last, before: its step 0)."""
    m, p = res.get("metrics", {}), res.get("process", {})
    roles = p.get("peak_rss_by_role_gib", {})
    out = {
        **{
            k: m.get(k)
            for k in (
                "greedy_final",
                "greedy_start",
                "pass_at_k_final",
                "pass_at_k_start",
                "reward_accuracy_final",
                "reward_margin_final",
                "eval_dpo_loss_final",
                "seconds_per_step",
                "ref_pass_s",
                "update_s",
                "steps",
                "train_pairs",
            )
        },
        "peak_rss_trainer_gib": roles.get("TrainerRank"),
        "peak_rss_tree_gib": p.get("peak_rss_tree_gib"),
        "wall_s": p.get("wall_s"),
        "load_mean": (p.get("load_average_1min") or {}).get("mean"),
        "greedy_source": "loop",
    }
    ind = res.get("independent_eval") or {}
    if ind.get("ok"):
        out.update(
            greedy_final=ind["greedy_acc"], pass_at_k_final=ind["pass_at_k"], greedy_source="eval_heldout"
        )
        if base and base.get("ok"):
            out.update(greedy_start=base["greedy_acc"], pass_at_k_start=base["pass_at_k"])
        else:
            out.update(greedy_start=None, pass_at_k_start=None)
    fs, st = out.get("greedy_final"), out.get("greedy_start")
    out["greedy_gain"] = None if fs is None or st is None else round(fs - st, 6)
    return out


def verdict(diffs: list[float], metric: str) -> str:
    """A plain reading of the paired differences (arm - DPO, same seed) of ``metric``."""
    d = [x for x in diffs if x is not None]
    if not d:
        return "no paired DPO run"
    n = len(d)
    mean = sum(d) / n
    if all(x > 0 for x in d):
        head = f"{metric} above DPO in all {n} seed(s)"
    elif all(x < 0 for x in d):
        head = f"{metric} below DPO in all {n} seed(s)"
    elif all(x == 0 for x in d):
        head = f"{metric} equal to DPO in all {n} seed(s)"
    else:
        head = f"{metric} mixed across {n} seeds (within the seed-to-seed spread)"
    return f"{head}; mean difference {mean:+.4f}"


def aggregate(results: list[dict], arms: list[str], bases: dict[int, dict | None] | None = None) -> dict:
    """Per arm: mean / sd over seeds of each metric, paired differences to DPO, the claim and a verdict."""
    bases = bases or {}
    ok = [r for r in results if r.get("ok") and r.get("metrics")]
    by = {(r["arm"], r["seed"]): flat(r, bases.get(r["seed"])) for r in ok}
    summary = {}
    for arm in arms:
        seeds = sorted(s for (a_, s) in by if a_ == arm)
        if not seeds:
            summary[arm] = {"seeds": [], "claim": CLAIMS[arm], "verdict": "no finished run"}
            continue
        rows = [by[(arm, s)] for s in seeds]
        entry = {
            "seeds": seeds,
            "claim": CLAIMS[arm],
            "greedy_source": sorted({r["greedy_source"] for r in rows}),
        }
        for m in ARM_METRICS + ("greedy_start", "pass_at_k_start"):
            entry[m] = spread([r.get(m) for r in rows])
        if arm != "dpo":
            paired = {}
            for m in PAIRED:
                diffs = [
                    None
                    if by.get(("dpo", s), {}).get(m) is None or by[(arm, s)].get(m) is None
                    else by[(arm, s)][m] - by[("dpo", s)][m]
                    for s in seeds
                    if ("dpo", s) in by
                ]
                paired[m] = spread(diffs)
            entry["minus_dpo"] = paired
            metric = CLAIMS[arm]["metric"] or "greedy_final"
            entry["verdict"] = verdict(paired[metric]["values"] if paired[metric]["n"] else [], metric)
        else:
            entry["verdict"] = "baseline"
        summary[arm] = entry
    return summary


# ----------------------------------------------------------------------------- output


def fmt_ms(s: dict | None, digits: int = 3) -> str:
    if not s or s.get("mean") is None:
        return "-"
    if s["n"] > 1:
        return f"{s['mean']:.{digits}f}±{s['sd']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


def print_table(result: dict) -> None:
    summ = result["summary"]["arms"]
    k = result["config"]["pass_k"]
    print(
        f"\n{'arm':<6} {'seeds':>5} {'greedy':>13} {'-DPO':>14} {'pass@' + str(k):>13} {'rew.acc':>13} "
        f"{'-DPO':>14} {'s/step':>11} {'RSS rank':>10} {'RSS tree':>10}  verdict | paper claim"
    )
    for arm, e in summ.items():
        if not e["seeds"]:
            print(f"{arm:<6} {0:>5}  (no finished run)")
            continue
        md = e.get("minus_dpo", {})
        print(
            f"{arm:<6} {len(e['seeds']):>5} {fmt_ms(e['greedy_final']):>13} "
            f"{fmt_ms(md.get('greedy_final')):>14} "
            f"{fmt_ms(e['pass_at_k_final']):>13} {fmt_ms(e['reward_accuracy_final']):>13} "
            f"{fmt_ms(md.get('reward_accuracy_final')):>14} {fmt_ms(e['seconds_per_step'], 1):>11} "
            f"{fmt_ms(e['peak_rss_trainer_gib'], 2):>10} {fmt_ms(e['peak_rss_tree_gib'], 2):>10}  "
            f"{e['verdict']} | {e['claim']['paper']}: {e['claim']['claim']}"
        )
    c = result["summary"].get("critical_tokens")
    if c:
        print(
            f"\ncritical tokens ({c['found']}/{c['trajectories']} trajectories with one, "
            f"{c['rollouts']} rollouts):"
        )
        for name, vals in c["pass_at_k"].items():
            print(f"  {name:<16} " + " ".join(f"pass@{kk}={v:.3f}" for kk, v in vals.items()))
        al = c["pce_alignment"]
        if al["n"]:
            print(
                f"  p_CE at critical {al['mean_pce_at_critical']}, at random positions "
                f"{al['mean_pce_at_random_positions']}; normalised rank of the critical token by p_CE "
                f"{al['mean_normalised_rank_of_critical']} (0 = lowest p_CE, chance 0.5); "
                f"argmin p_CE = critical "
                f"{al['argmin_pce_is_critical']} (chance {al['argmin_chance']})"
            )
        print(f"  verdict: {c['verdict']}\n  claim: {c['claim']}")
    print(
        f"\nload average during the arms: {result['summary']['load_average_during_arms']}; "
        f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores"
    )


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ = result["summary"]["arms"]
    arms = [a for a, e in summ.items() if e["seeds"]]
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))

    def bars(ax, metric, title, ylabel):
        xs = range(len(arms))
        means = [summ[a][metric]["mean"] or 0.0 for a in arms]
        sds = [summ[a][metric]["sd"] or 0.0 for a in arms]
        ax.bar(xs, means, yerr=sds, capsize=4, color="tab:blue", alpha=0.6)
        for i, a in enumerate(arms):
            vals = summ[a][metric]["values"]
            ax.scatter([i] * len(vals), vals, color="k", s=12, zorder=3)
        ax.set_xticks(list(xs), arms)
        ax.set(title=title, ylabel=ylabel)
        ax.grid(alpha=0.3, axis="y")

    bars(
        axes[0, 0],
        "greedy_final",
        "held-out greedy accuracy after training (mean ± sd, dots = seeds)",
        "greedy accuracy",
    )
    starts = [v for a in arms for v in (summ[a].get("greedy_start") or {}).get("values", [])]
    base = [
        r["metrics"]["greedy_start"]
        for r in result["arms"]
        if r.get("metrics", {}).get("greedy_start") is not None
    ]
    if base or starts:
        b = base or starts
        axes[0, 0].axhline(sum(b) / len(b), color="tab:red", ls="--", label="before training (mean)")
        axes[0, 0].legend()
    bars(axes[0, 1], "reward_accuracy_final", "held-out pairwise reward accuracy", "chosen reward > rejected")
    ax = axes[1, 0]
    xs = range(len(arms))
    ax.bar(
        xs,
        [summ[a]["seconds_per_step"]["mean"] or 0 for a in arms],
        yerr=[summ[a]["seconds_per_step"]["sd"] or 0 for a in arms],
        capsize=4,
        color="tab:gray",
    )
    ax.set_xticks(list(xs), arms)
    ax.set(ylabel="seconds per optimizer step (median over steps)", title="time and peak memory per step")
    ax2 = ax.twinx()
    ax2.plot(
        list(xs),
        [summ[a]["peak_rss_trainer_gib"]["mean"] or 0 for a in arms],
        "o-",
        color="tab:orange",
        label="peak RSS, trainer rank",
    )
    ax2.plot(
        list(xs),
        [summ[a]["peak_rss_tree_gib"]["mean"] or 0 for a in arms],
        "s--",
        color="tab:green",
        label="peak RSS, process tree",
    )
    ax2.set_ylabel("GiB")
    ax2.legend(loc="upper left")
    ax = axes[1, 1]
    c = result["summary"].get("critical_tokens")
    if c:
        styles = {
            "critical_with": ("tab:red", "--"),
            "critical_forced": ("tab:red", "-"),
            "random_with": ("tab:blue", "--"),
            "random_forced": ("tab:blue", "-"),
        }
        for name, vals in c["pass_at_k"].items():
            if vals:
                ks = [int(k) for k in vals]
                ax.plot(
                    ks, list(vals.values()), marker="o", color=styles[name][0], ls=styles[name][1], label=name
                )
        ax.set_xscale("log", base=2)
        ax.set(
            xlabel="k",
            ylabel="pass@k of the continuations",
            title=f"critical-token check ({c['found']}/{c['trajectories']} incorrect responses with one)",
        )
        ax.legend()
        ax.grid(alpha=0.3)
    else:
        ax.text(0.5, 0.5, "critical-token check not run", ha="center")
    m = result["machine"]
    fig.suptitle(
        f"preference ablation: {result['config']['model']}, {result['pairs']['train_pairs']} train / "
        f"{result['pairs']['test_pairs']} held-out pairs, seeds {result['config']['seeds']}; {m['cpu']} "
        f"({m['cores']} cores), load avg during arms {result['summary']['load_average_during_arms']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"[ablation] work folder {out}; arms {a.arms}; seeds {a.seeds}; load average {load_average()}",
        flush=True,
    )
    manifest = build_pairs_stage(a, out)
    results = []
    bases = {}
    for seed in a.seeds:
        bases[seed] = base_eval(a, out, seed)
        for arm in a.arms:
            path = result_path(out, arm, seed)
            old = load_result(path)
            reusable = (
                old is not None and old.get("ok") and old.get("pairs_fingerprint") == manifest["fingerprint"]
            )
            if (
                arm == "tgdpo"
                and not a.summarise_only
                and not reusable
                and not (guidance_path(out / "runs", seed) / "config.json").is_file()
            ):
                print(
                    f"[ablation] tgdpo seed {seed}: the DPO arm's export is missing; running dpo seed {seed} "
                    f"again for it",
                    flush=True,
                )
                res = run_arm(a, out, manifest, "dpo", seed)
                path_dpo = result_path(out, "dpo", seed)
                path_dpo.write_text(json.dumps(res, indent=1, default=str))
                results = [r for r in results if not (r["arm"] == "dpo" and r["seed"] == seed)] + [res]
            if (a.reuse or a.summarise_only) and reusable:
                print(f"[ablation] arm {arm} seed {seed}: reusing {path}", flush=True)
                results.append(old)
                continue
            if a.summarise_only:
                print(f"[ablation] arm {arm} seed {seed}: no finished result ({path})", flush=True)
                continue
            if arm == "tgdpo" and not (guidance_path(out / "runs", seed) / "config.json").is_file():
                res = {
                    "arm": arm,
                    "seed": seed,
                    "ok": False,
                    "error": "the DPO arm of this seed did not export",
                    "pairs_fingerprint": manifest["fingerprint"],
                    "claim": CLAIMS[arm],
                }
            else:
                res = run_arm(a, out, manifest, arm, seed)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(res, indent=1, default=str))
            results.append(res)

    crit = None
    vpath = Path(manifest["critical_dir"]) / "verify.json"
    if vpath.is_file():
        wrows = [
            json.loads(line)
            for line in (Path(manifest["critical_dir"]) / "weighted_pairs.jsonl").read_text().splitlines()
            if line.strip()
        ]
        crit = critical_check(json.loads(vpath.read_text()), wrows)
    loads = [r["process"]["load_average_1min"]["mean"] for r in results if r.get("process")]
    summary = {
        "arms": aggregate(results, a.arms, bases),
        "critical_tokens": crit,
        "load_average_during_arms": spread(loads) if loads else None,
    }
    if summary["load_average_during_arms"]:
        la = summary["load_average_during_arms"]
        summary["load_average_during_arms"] = (
            f"mean {la['mean']:.2f} (min {la['min']:.2f}, max {la['max']:.2f})"
        )
    cmdline = "python benchmarks/preference_ablation.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {
        "benchmark": "preference_ablation",
        "command": cmdline.strip(),
        "machine": machine(),
        "config": {
            "model": "smollm2-135m (bundled SmolLM2-135M-Instruct)",
            "task": "builtin:arithmetic, 1-digit mixed + - *, 2 operands, short answers",
            "arms": a.arms,
            "seeds": a.seeds,
            "epochs": a.epochs,
            "steps": a.steps if a.epochs == 0 else None,
            "lr": a.lr or "recipes' (5e-6)",
            "pairs_per_step": a.pairs_per_step or "recipes' (8)",
            "eval_prompts": a.eval_prompts,
            "eval_every": a.eval_every,
            "pass_k": 4,
            "quick": a.quick,
            "greedy_evaluation": "benchmarks/eval_heldout.py on each arm's exported hf_model (fresh process, "
            "vLLM, the recipe's test prompts; before = the base model)"
            if a.independent
            else "the DPO loop's own (dpo.eval_generation; before = its step 0)",
            "what_is_timed": "seconds per step = the driver's wall time of TrainerGroup.train_pairs "
            "(reference "
            "and the method's no-grad passes + forward/backward/AdamW on the trainer rank, "
            "incl. Ray transfer); generation, weight sync and evaluation excluded",
            "what_is_memory": "peak RSS sampled every 0.5 s: 'trainer rank' = the TrainerRank actor process, "
            "'tree' = the whole tokencredit train process tree (driver, Ray daemons, "
            "trainer rank, vLLM rollout worker); shared pages counted once per process",
        },
        "pairs": {
            k: manifest.get(k)
            for k in (
                "fingerprint",
                "settings",
                "train_pairs",
                "test_pairs",
                "data",
                "critical_stages",
                "commands",
                "heldout_scoring_s",
            )
        },
        "summary": summary,
        "base_model_eval": {str(k): v for k, v in bases.items()},
        "arms": results,
    }
    res_dir = Path(a.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    (res_dir / "preference_ablation.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    plot(result, res_dir / "preference_ablation.png")
    print_table(result)
    print(f"\nwrote {res_dir / 'preference_ablation.json'} and {res_dir / 'preference_ablation.png'}")
    failed = [f"{r['arm']}_s{r['seed']}" for r in results if not r.get("ok")]
    if failed:
        print(f"[ablation] FAILED arm x seed: {failed} (logs in {out / 'logs'})", flush=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
