"""benchmarks/eval_heldout.py: the counting on hand-made completions, and (e2e) that a fresh process
evaluating the base model's folder reproduces tokencredit's own in-loop evaluation (rl/evaluate.py
through a Ray rollout pool) number for number."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from rollout.types import Completion

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("eval_heldout", ROOT / "benchmarks" / "eval_heldout.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


eval_heldout = _load()


class ScriptedEngine:
    """Greedy: right on even prompts. Sampled (k=3): prompt i%3==0 none right, 1 one right, 2 all right."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def generate(self, prompt_ids, sampling):
        self.calls.append(sampling)
        out = []
        for i, _ in enumerate(prompt_ids):
            right, wrong = f"= {self.answers[i]}", f"= {int(self.answers[i]) + 1}"
            if sampling.temperature == 0.0:
                texts = [right if i % 2 == 0 else wrong]
            else:
                texts = [[wrong] * 3, [wrong, right, wrong], [right] * 3][i % 3]
            out.append([Completion(i, [1, 2, 3], None, t, "stop") for t in texts])
        return out


def test_counts_greedy_pass_at_k_and_sample_accuracy():
    settings = eval_heldout.EvalSettings(num_prompts=12, k=3, seed=5)
    _, held_out, _, _ = eval_heldout.load_task(settings)
    engine = ScriptedEngine([str(r.answer) for r in held_out.rows])
    r = eval_heldout.evaluate_here(str(ROOT / "no-such-folder"), settings, engine=engine)
    assert r["num_prompts"] == 12
    assert r["greedy_acc"] == pytest.approx(6 / 12)
    assert r["greedy_correct"] == [1, 0] * 6
    assert r["pass_at_k"] == pytest.approx(8 / 12)  # i%3 in (1, 2)
    assert r["sample_acc"] == pytest.approx((4 * 1 + 4 * 3) / 36)
    greedy, sampled = engine.calls
    assert greedy.n == 1 and greedy.temperature == 0.0 and greedy.max_tokens == 16
    # the quickstart's training sampling: T=0.7, no top-k, top-p 1.0, reseeded
    assert (sampled.n, sampled.temperature, sampled.top_p, sampled.top_k, sampled.seed) == (3, 0.7, 1.0, -1, 5)
    assert r["folder_tokenizer_matches"] is None


def test_prompts_are_the_training_runs_tokens():
    from transformers import AutoTokenizer

    from rl.config import load_config
    from rl.data import load_eval_prompts
    from rl.models import resolve_model

    cfg = load_config(ROOT / "recipes" / "quickstart.yaml")
    tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model.name_or_path))
    ref = load_eval_prompts(cfg.data, tok, limit=cfg.eval.num_prompts)
    _, held_out, _, label = eval_heldout.load_task(eval_heldout.EvalSettings())
    assert [r.ids for r in held_out.rows] == [r.ids for r in ref.rows] and len(ref.rows) == 100
    assert label == "math_answer"
    # the text handed to TRL encodes to the same ids
    assert eval_heldout.tokenizer_matches(resolve_model(cfg.model.name_or_path), held_out.rows) is True


def test_more_prompts_than_the_recipes_eval_set_are_all_evaluated():
    """--num-prompts above eval.num_prompts used to be cut to eval.num_prompts without a word."""
    _, small, _, _ = eval_heldout.load_task(eval_heldout.EvalSettings(recipe=str(ROOT / "recipes" / "dpo.yaml")))
    _, big, _, _ = eval_heldout.load_task(
        eval_heldout.EvalSettings(recipe=str(ROOT / "recipes" / "dpo.yaml"), num_prompts=80))
    assert len(small.rows) == 50 and len(big.rows) == 80  # dpo.yaml: eval.num_prompts 50, num_test 100
    assert [r.ids for r in big.rows[:50]] == [r.ids for r in small.rows]  # a prefix: the same first prompts


@pytest.mark.e2e
def test_fresh_process_reproduces_the_in_loop_evaluation_of_the_base_model(ray_local):
    from rl.evaluate import evaluate
    from rl.models import resolve_model
    from rollout.pool import RolloutPool

    overrides = ("eval.num_prompts=16",)
    settings = eval_heldout.EvalSettings(overrides=overrides)
    cfg, held_out, scorer, _ = eval_heldout.load_task(settings)
    model = resolve_model(cfg.model.name_or_path)
    r = cfg.rollout
    # the pool make_pool builds for the quickstart (one vLLM worker as a Ray actor)
    pool = RolloutPool(model, num_workers=1, dtype=cfg.model.dtype, max_model_len=r.max_model_len,
                       memory_fraction=r.memory_fraction, seed=r.seed, generate_timeout_s=900)
    try:
        in_loop = evaluate(pool, held_out, scorer, cfg, 0, cfg.trainer.steps)
    finally:
        pool.shutdown()
    (fresh,) = eval_heldout.evaluate_folders([model], settings)
    assert fresh["num_prompts"] == 16 and fresh["k"] == cfg.eval.pass_k and fresh["seed"] == r.seed
    assert fresh["greedy_acc"] == in_loop["eval/greedy_acc"]
    assert fresh["pass_at_k"] == in_loop["eval/pass_at_k"]
    assert fresh["sample_acc"] == in_loop["eval/sample_acc"]
    assert fresh["greedy_len"] == pytest.approx(in_loop["eval/greedy_len"])
