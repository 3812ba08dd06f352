"""How well does the bundled model already solve each built-in task variant?

GRPO learns only from groups with mixed outcomes, so a good quickstart task is one
where the base model is sometimes right: greedy accuracy roughly 15-50% and many
8-sample groups with both right and wrong answers. For each variant (task family x
digits x prompt wording) this measures on held-out prompts, with transformers
``generate`` (batched, left padding) and the prompts built by ``rl.data.load_prompts``:

* greedy accuracy, lenient (the last integer in the completion is the answer) and
  strict (the whole completion is just that number);
* at each temperature T: mean sampled accuracy and the fraction of n-sample groups
  with mixed / all-wrong / all-right outcomes;
* accuracy split by form: terse equations ("7 * 8 = 56") versus everything else, which
  tells format mistakes (learnable fast) from arithmetic mistakes.

Writes benchmarks/results/base_accuracy.json (with a "summary") and .png, and prints a table.

    python benchmarks/base_accuracy.py --time-dtypes         # all variants (~30 min on 2 busy cores)
    python benchmarks/base_accuracy.py --variants add2_short --prompts 20 --group-prompts 4   # smoke

Runs with 1 torch thread by default: on 2 cores shared with other jobs, 2 OpenMP
threads made a decode step 40x slower (spinning barriers), measured here.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

from rl.config import DataConfig, TaskConfig
from rl.data import load_prompts
from rl.experience import left_pad
from rl.models import resolve_model
from rl.tasks import arithmetic

# Extra wordings tried here; "short" and "cot" are the task's own (rl/tasks/arithmetic.py).
WORDINGS = {
    "bare": "{expr} =",
    "compute": "Calculate {expr}. Reply with only the result.",
}
# name -> (ops, digits, num_operands, wording)
VARIANTS = {
    "add1_short": (["add"], 1, 2, "short"),
    "mixed1_short": (["mixed"], 1, 2, "short"),
    "mul1_short": (["mul"], 1, 2, "short"),
    "addmul1_short": (["add", "mul"], 1, 2, "short"),
    "add1x3_short": (["add"], 1, 3, "short"),
    "add2_short": (["add"], 2, 2, "short"),
    "add2_compute": (["add"], 2, 2, "compute"),
    "add2_bare": (["add"], 2, 2, "bare"),
    "sub2_short": (["sub"], 2, 2, "short"),
    "add3_short": (["add"], 3, 2, "short"),
}
_INT = re.compile(r"-?\d+")


def last_integer(text: str) -> str | None:
    found = _INT.findall(re.sub(r"(?<=\d),(?=\d{3})", "", text))
    return str(int(found[-1])) if found else None


def strict_match(text: str, answer: str) -> bool:
    return text.strip().rstrip(".").strip() == answer


# The model's terse "7 * 8 = 56" form (optionally "1. " in front); the rest is prose/rambling.
_EQUATION_FORM = re.compile(r"^\s*(1\.\s*)?\d+( [-+*] \d+)+ = -?\d+\.?\s*$")


def by_form(pairs: list[tuple[str, str]]) -> dict:
    """Accuracy of (completion, answer) pairs split by whether the completion is a bare equation:
    shows whether the mistakes are about format (learnable) or about arithmetic."""
    out = {}
    for form, match in (("equation", True), ("other", False)):
        hits = [last_integer(t) == a for t, a in pairs if bool(_EQUATION_FORM.match(t)) == match]
        out[form] = {"count": len(hits), "accuracy": sum(hits) / len(hits) if hits else None}
    return out


@torch.inference_mode()
def generate(model, tok, prompts: list[list[int]], max_new: int, n: int = 1, temperature: float = 0.0,
             batch: int = 64) -> list[list[tuple[str, bool]]]:
    """Per prompt, ``n`` (completion text, ended with EOS) pairs; greedy when temperature is 0."""
    out: list[list[tuple[str, bool]]] = []
    per_call = max(1, batch // n)
    for start in range(0, len(prompts), per_call):
        ids, mask = left_pad(prompts[start:start + per_call], tok.pad_token_id)
        kwargs = dict(do_sample=True, temperature=temperature, top_p=1.0, top_k=0, num_return_sequences=n) \
            if temperature > 0 else dict(do_sample=False)
        gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **kwargs)
        gen = gen[:, ids.shape[1]:]
        for r in range(0, gen.shape[0], n):
            out.append([(tok.decode(g, skip_special_tokens=True), bool((g == tok.eos_token_id).any()))
                        for g in gen[r:r + n]])
    return out


def run_variant(model, tok, name: str, args) -> dict:
    ops, digits, k, wording = VARIANTS[name]
    task = TaskConfig(ops=ops, digits=digits, num_operands=k, num_train=0, num_test=args.prompts,
                      seed=1234, template=wording)
    ps = load_prompts(DataConfig(source="builtin:arithmetic", task=task, max_prompt_tokens=512), tok, "test")
    ids = [r.ids for r in ps.rows]
    answers = [r.answer for r in ps.rows]
    t0 = time.time()
    greedy = [g[0] for g in generate(model, tok, ids, args.max_new_tokens, batch=args.batch)]
    res = {
        "name": name, "ops": ops, "digits": digits, "num_operands": k, "wording": wording,
        "prompt_example": ps.rows[0].text, "num_prompts": len(ids),
        "greedy_accuracy": sum(last_integer(t) == a for (t, _), a in zip(greedy, answers)) / len(ids),
        "greedy_strict_accuracy": sum(strict_match(t, a) for (t, _), a in zip(greedy, answers)) / len(ids),
        "greedy_eos_rate": sum(e for _, e in greedy) / len(ids),
        "greedy_by_form": by_form([(t, a) for (t, _), a in zip(greedy, answers)]),
        "greedy_examples": [{"answer": a, "completion": t} for (t, _), a in list(zip(greedy, answers))[:6]],
        "sampled": {},
    }
    torch.manual_seed(0)
    g_ids, g_ans = ids[:args.group_prompts], answers[:args.group_prompts]
    for temp in ([] if args.greedy_only else args.temps):
        groups = generate(model, tok, g_ids, args.max_new_tokens, n=args.n, temperature=temp, batch=args.batch)
        right = [sum(last_integer(t) == a for t, _ in grp) for grp, a in zip(groups, g_ans)]
        res["sampled"][str(temp)] = {
            "accuracy": sum(right) / (len(right) * args.n),
            "strict_accuracy": sum(strict_match(t, a) for grp, a in zip(groups, g_ans) for t, _ in grp)
            / (len(right) * args.n),
            "mixed_groups": sum(0 < c < args.n for c in right) / len(right),
            "all_wrong_groups": sum(c == 0 for c in right) / len(right),
            "all_right_groups": sum(c == args.n for c in right) / len(right),
            "num_groups": len(right),
            "by_form": by_form([(t, a) for grp, a in zip(groups, g_ans) for t, _ in grp]),
        }
    res["seconds"] = round(time.time() - t0, 1)
    return res


def time_dtypes(path: str, tok, args) -> dict:
    """Greedy tokens/s of one batch in float32 and bfloat16 (same prompts)."""
    from transformers import AutoModelForCausalLM

    task = TaskConfig(ops=["add"], digits=2, num_train=0, num_test=args.batch)
    ids = [r.ids for r in load_prompts(DataConfig(task=task), tok, "test").rows]
    speed = {}
    for dtype in ("float32", "bfloat16"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        generate(model, tok, ids[:4], 4)  # warm-up
        t = time.time()
        generate(model, tok, ids, args.max_new_tokens, batch=args.batch)
        speed[dtype] = {"seconds": round(time.time() - t, 2), "batch": len(ids), "max_new_tokens": args.max_new_tokens}
    return speed


def summarize(results: list[dict], args) -> dict:
    def mixed(r: dict) -> float:
        return max((s["mixed_groups"] for s in r["sampled"].values()), default=0.0)

    in_band = [r for r in results if 0.1 <= r["greedy_accuracy"] <= 0.7]
    best = max(in_band or results, key=lambda r: (mixed(r), r["greedy_accuracy"]))
    best_t = max(best["sampled"], key=lambda t: best["sampled"][t]["mixed_groups"]) if best["sampled"] else None
    return {
        "greedy_accuracy": {r["name"]: r["greedy_accuracy"] for r in results},
        "greedy_strict_accuracy": {r["name"]: r["greedy_strict_accuracy"] for r in results},
        "mixed_groups": {r["name"]: {t: s["mixed_groups"] for t, s in r["sampled"].items()} for r in results},
        "greedy_accuracy_by_form": {r["name"]: {f: v["accuracy"] for f, v in r["greedy_by_form"].items()}
                                    for r in results if "greedy_by_form" in r},
        "recommended_variant": best["name"],
        "recommended_temperature": float(best_t) if best_t else None,
        "rule": "among variants with greedy accuracy in [0.1, 0.7], the most mixed groups at any temperature",
    }


def plot(out: dict, png: Path) -> None:
    """Bars per variant: greedy accuracy and the fraction of mixed groups at each temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in out["variants"]]
    temps = out["config"]["temps"]
    series = [("greedy accuracy", [r["greedy_accuracy"] for r in out["variants"]])]
    series += [(f"mixed groups, T={t}", [r["sampled"].get(str(t), {}).get("mixed_groups", 0.0)
                                          for r in out["variants"]]) for t in temps]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(names)), 3.6))
    for k, (label, values) in enumerate(series):
        ax.bar([i + k * width for i in range(len(names))], values, width, label=label)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title(f"SmolLM2-135M-Instruct before training (groups of {out['config']['n']})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--prompts", type=int, default=100, help="held-out prompts per variant (greedy)")
    p.add_argument("--group-prompts", type=int, default=40, help="prompts sampled n times per temperature")
    p.add_argument("--n", type=int, default=8, help="group size")
    p.add_argument("--temps", type=float, nargs="*", default=[0.7, 1.0])
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--batch", type=int, default=64, help="sequences per generate call")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--greedy-only", action="store_true")
    p.add_argument("--time-dtypes", action="store_true", help="also time one greedy batch in fp32 and bf16")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "base_accuracy.json"))
    p.add_argument("--merge", action="store_true",
                   help="keep the other variants already in --out (re-measure only --variants)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    arithmetic.TEMPLATES.update({k: v for k, v in WORDINGS.items() if k not in arithmetic.TEMPLATES})

    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).eval()
    results = []
    for name in args.variants:
        results.append(run_variant(model, tok, name, args))
        r = results[-1]
        cells = "  ".join(f"T={t}: acc {s['accuracy']:.2f} mixed {s['mixed_groups']:.2f}" for t, s in r["sampled"].items())
        print(f"{name:16s} greedy {r['greedy_accuracy']:.2f} strict {r['greedy_strict_accuracy']:.2f} "
              f"eos {r['greedy_eos_rate']:.2f}  {cells}  ({r['seconds']} s)", flush=True)
    previous = json.loads(Path(args.out).read_text()) if args.merge and Path(args.out).is_file() else {}
    if previous:
        fresh = {r["name"] for r in results}
        old = [r for r in previous["variants"] if r["name"] not in fresh]
        results = sorted(old + results, key=lambda r: list(VARIANTS).index(r["name"]) if r["name"] in VARIANTS else 99)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config["variants"] = [r["name"] for r in results]  # with --merge: every variant in the file
    out = {"config": config, "model": "smollm2-135m",
           "device": "cpu", "torch_threads": torch.get_num_threads(), "variants": results,
           "summary": summarize(results, args)}
    if args.time_dtypes:
        out["dtype_speed"] = time_dtypes(path, tok, args)
        print("dtype speed:", out["dtype_speed"])
    elif "dtype_speed" in previous:
        out["dtype_speed"] = previous["dtype_speed"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    plot(out, Path(args.out).with_suffix(".png"))
    print(f"{'variant':16s} {'greedy':>6s} {'strict':>6s} " + " ".join(f"{'mix@' + str(t):>8s}" for t in args.temps))
    for r in results:
        print(f"{r['name']:16s} {r['greedy_accuracy']:6.2f} {r['greedy_strict_accuracy']:6.2f} "
              + " ".join(f"{r['sampled'].get(str(t), {}).get('mixed_groups', float('nan')):8.2f}" for t in args.temps))
    print("summary:", json.dumps(out["summary"]["recommended_variant"]), "at T =",
          out["summary"]["recommended_temperature"], "->", args.out, file=sys.stderr)


if __name__ == "__main__":
    main()
