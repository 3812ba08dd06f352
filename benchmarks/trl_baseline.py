"""TRL's GRPOTrainer on the quickstart's exact task, side by side with a tokencredit run.

Same model (bundled SmolLM2-135M-Instruct), same prompts (builtin arithmetic, same seed
and split), same reward (``math_answer``), same batch (8 prompts x 8 samples), same
sampling (T, max new tokens), lr, steps and loss aggregation (token mean). TRL
generates with transformers ``generate`` (its default without a vLLM server).
Records training reward against wall-clock seconds for both, plus held-out greedy
accuracy of TRL's final model, and writes JSON + PNG.

    python benchmarks/trl_baseline.py --tokencredit-run runs/quickstart

TRL is a dependency of tokencredit (its data utilities), so nothing extra is needed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results"


def held_out_greedy(model, tokenizer, rows, reward, max_new_tokens: int) -> float:
    tokenizer.padding_side = "left"
    ok = 0
    for start in range(0, len(rows), 50):
        chunk = rows[start:start + 50]
        enc = tokenizer([r.text for r in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
        texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)
        ok += sum(v == 1.0 for v in reward([r.text for r in chunk], texts, answer=[r.answer for r in chunk]))
    return ok / len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/quickstart.yaml")
    ap.add_argument("--tokencredit-run", default=None, help="a finished tokencredit run folder to compare with")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args()

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rewards import load_reward_fn
    from rl.config import load_config
    from rl.data import load_eval_prompts, load_train_prompts
    from rl.models import resolve_model

    cfg = load_config(args.recipe)
    steps = args.steps or cfg.trainer.steps
    path = resolve_model(cfg.model.name_or_path)
    tok = AutoTokenizer.from_pretrained(path)
    train = load_train_prompts(cfg.data, tok)
    test = load_eval_prompts(cfg.data, tok, limit=cfg.eval.num_prompts)
    math_answer = load_reward_fn("math_answer")

    def reward(prompts, completions, answer, **_):
        texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
        return math_answer(prompts, texts, answer=answer)

    # The templated prompt text, so TRL sees exactly the tokens tokencredit generates from.
    ds = Dataset.from_list([{"prompt": r.text, "answer": r.answer} for r in train.rows])
    n = cfg.rollout.n
    targs = GRPOConfig(
        output_dir="/tmp/trl_baseline", use_cpu=True, bf16=cfg.model.dtype == "bfloat16",
        per_device_train_batch_size=cfg.trainer.prompts_per_step * n, num_generations=n,
        max_completion_length=cfg.rollout.max_tokens, temperature=cfg.rollout.temperature,
        learning_rate=cfg.trainer.lr, max_steps=steps, logging_steps=1, save_strategy="no",
        report_to="none", seed=cfg.trainer.seed, loss_type="dapo", beta=0.0, disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    base_greedy = held_out_greedy(model, tok, test.rows, math_answer, cfg.rollout.max_tokens)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=targs, train_dataset=ds, processing_class=tok)
    t0 = time.perf_counter()
    stamps = []

    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_log(self, _args, state, _control, logs=None, **_):
            if logs and "reward" in logs:
                stamps.append({"step": state.global_step, "seconds": time.perf_counter() - t0, "reward": logs["reward"]})

    trainer.add_callback(Clock())
    trainer.train()
    train_seconds = time.perf_counter() - t0
    final_greedy = held_out_greedy(trainer.model, tok, test.rows, math_answer, cfg.rollout.max_tokens)

    result = {
        "benchmark": "trl_baseline",
        "command": "python benchmarks/trl_baseline.py" + (f" --tokencredit-run {args.tokencredit_run}" if args.tokencredit_run else ""),
        "config": {"recipe": args.recipe, "steps": steps, "rows_per_step": cfg.trainer.prompts_per_step * n,
                   "max_tokens": cfg.rollout.max_tokens, "temperature": cfg.rollout.temperature, "lr": cfg.trainer.lr},
        "load_average": os.getloadavg(),
        "trl": {"per_step": stamps, "train_seconds": train_seconds, "held_out_greedy_base": base_greedy,
                "held_out_greedy_final": final_greedy},
    }
    summary = {"trl_seconds_per_step": train_seconds / steps, "trl_greedy_base": base_greedy,
               "trl_greedy_final": final_greedy}
    if args.tokencredit_run:
        rows = [json.loads(x) for x in (Path(args.tokencredit_run) / "metrics.jsonl").read_text().splitlines()]
        per_step, elapsed = [], 0.0
        for r in rows:
            if "timing/step" in r:
                elapsed += r["timing/step"]
                per_step.append({"step": r["step"], "seconds": elapsed, "reward": r["reward/total/mean"]})
        evals = [r for r in rows if "eval/greedy_acc" in r]
        result["tokencredit"] = {"per_step": per_step, "train_seconds": elapsed,
                                 "held_out_greedy_base": evals[0]["eval/greedy_acc"],
                                 "held_out_greedy_final": evals[-1]["eval/greedy_acc"]}
        summary.update({"tokencredit_seconds_per_step": elapsed / max(len(per_step), 1),
                        "tokencredit_greedy_base": evals[0]["eval/greedy_acc"],
                        "tokencredit_greedy_final": evals[-1]["eval/greedy_acc"],
                        "step_time_ratio_trl_over_tokencredit": (train_seconds / steps) / (elapsed / max(len(per_step), 1))})
    result["summary"] = summary
    OUT.mkdir(exist_ok=True)
    (OUT / "trl_baseline.json").write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in ("trl", "tokencredit"):
        if name in result:
            pts = result[name]["per_step"]
            ax.plot([p["seconds"] for p in pts], [p["reward"] for p in pts], marker="o", label=name)
    ax.set_xlabel("training wall-clock seconds (excluding start-up and eval)")
    ax.set_ylabel("training reward (batch mean)")
    ax.set_title("quickstart task: reward vs wall-clock, same batch/lr/sampling")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "trl_baseline.png", dpi=100)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
