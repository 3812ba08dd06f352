"""``tokencredit`` command line: train, build-pairs, recipes, prepare-model, inspect.

    tokencredit train recipes/quickstart.yaml trainer.lr=1e-6 algorithm.credit=[d3s]
    tokencredit train dpo preference.loss=tgdpo dpo.guidance_model=runs/dpo/hf_model
    tokencredit build-pairs quickstart --out pairs.jsonl --n 8 --limit 200 [--rule cdpo --write-sft]
    tokencredit recipes
    tokencredit prepare-model smollm2-135m
    tokencredit inspect runs/quickstart --step 10
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from pathlib import Path

import rollout  # noqa: F401  (first: it reads the user's VLLM_LOGGING_LEVEL before TRL's import overwrites it)

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
log = logging.getLogger("rl.cli")

# Failures that are the user's to fix: print one clear line, no traceback.
EXIT_CONFIG, EXIT_RUN = 2, 1


def find_recipe(name: str) -> Path:
    """A path, or a shipped recipe's short name (``quickstart`` -> recipes/quickstart.yaml)."""
    p = Path(name)
    if p.is_file():
        return p
    for cand in (RECIPE_DIR / name, RECIPE_DIR / f"{name}.yaml"):
        if cand.is_file():
            return cand
    shipped = ", ".join(sorted(r.stem for r in RECIPE_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"recipe {name!r} not found (not a file; shipped recipes: {shipped})")


def list_recipes() -> list[tuple[str, str]]:
    from omegaconf import OmegaConf

    out = []
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        try:
            desc = str(OmegaConf.load(path).get("description", ""))
        except Exception as e:  # noqa: BLE001 - list the rest, flag this one
            desc = f"(cannot be read: {str(e).splitlines()[0]})"
        out.append((path.stem, desc))
    return out


def cmd_train(args) -> int:
    import time

    from rl.config import load_config
    from rl.log import detach_run_log, quiet_libraries, setup_logging
    from rl.tracking import run_summary

    started = time.monotonic()
    recipe = find_recipe(args.recipe)
    cfg = load_config(recipe, args.overrides)
    if args.print_config:
        from rl.config import to_yaml

        print(to_yaml(cfg))
        return 0
    setup_logging(verbose=args.verbose, level=cfg.logging.level)
    quiet_libraries()
    from rl.models import check_models

    check_models(cfg)  # a model.* problem: one line and exit 2 now, not a traceback once the engines started
    log.info("%s", describe_run(cfg, recipe))
    if cfg.family == "dpo":  # offline pairs (rl/loops/dpo.py) or sampled each step (rl/loops/online_dpo.py)
        from rl.loops import dpo, online_dpo

        train = online_dpo.train if cfg.dpo.mode == "online" else dpo.train
    else:
        from rl.loops.grpo import train

    try:
        run_dir = train(cfg, str(recipe))
    finally:
        detach_run_log()
    lines = run_summary(run_dir, cfg, time.monotonic() - started)
    print("\n".join(["[tokencredit] " + lines[0], *lines[1:]]), flush=True)
    return 0


def describe_run(cfg, recipe: Path) -> str:
    """One line: what this run trains, on what, for how long."""
    t, r = cfg.trainer, cfg.rollout
    if cfg.family == "dpo":
        what = f"{cfg.preference.loss} ({cfg.dpo.mode} DPO family)"
        size = f"{cfg.dpo.pairs_per_step} pairs per step"
    else:
        credit = f" + {'+'.join(cfg.algorithm.credit)}" if cfg.algorithm.credit else ""
        what = f"{cfg.algorithm.advantage}{credit}"
        size = f"{t.prompts_per_step} prompts x {r.n} samples per step"
    return f"{cfg.name} ({recipe}): {what} on {cfg.model.name_or_path}, {t.steps} steps, {size}"


def cmd_build_pairs(args) -> int:
    """Sample the recipe's model on its data: prompts, score, pair, write jsonl (rl/pair_source.py)."""
    import json

    from transformers import AutoTokenizer

    from rewards import RewardScorer
    from rl.config import load_config
    from rl.models import check_model
    from rl.pair_source import make_pairs
    from rl.placement import Placement
    from rl.setup import init_ray, make_pool

    recipe = find_recipe(args.recipe)
    cfg = load_config(recipe, args.overrides)
    if not cfg.rewards.functions:
        from rl.config import ConfigError

        raise ConfigError(f"{recipe}: rewards.functions: build-pairs scores samples; name a reward function")
    model_path = check_model(cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    scorer = RewardScorer([{"name": f.name, "weight": f.weight, "kwargs": dict(f.kwargs)} for f in cfg.rewards.functions],
                          on_error=cfg.rewards.on_error, timeout_s=cfg.rewards.timeout_s,
                          base_dir=str(Path(recipe).resolve().parent))
    init_ray(cfg)
    pool = make_pool(cfg, model_path, Placement(None, 1, 1))
    try:
        stats = make_pairs(cfg, pool, scorer, tokenizer, args.out, split=args.split, limit=args.limit, rule=args.rule,
                           seed=args.seed, n=args.n, write_sft=args.write_sft, batch_prompts=args.batch_prompts)
    finally:
        pool.shutdown()
    print(json.dumps(stats, indent=1, default=str))
    log.info("wrote %d pairs to %s; train on them with preference_data.source=%s", stats["pairs"], args.out, args.out)
    return 0


def cmd_recipes(_args) -> int:
    rows = list_recipes()
    width = max(len(n) for n, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0


def cmd_prepare(args) -> int:
    from rl.log import quiet_libraries
    from rl.models import prepare_model

    quiet_libraries()  # the one-time GGUF conversion's progress bars
    # stdout is the folder alone (install.sh captures it); libraries the conversion imports (DeepSpeed's
    # accelerator warning) print to stdout, so the conversion's own output goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        folder = prepare_model(args.name, force=args.force)
    print(folder)
    return 0


def cmd_inspect(args) -> int:
    from rl.inspect_html import write_inspect_page

    out = write_inspect_page(Path(args.run_dir), step=args.step, out=args.out, max_rows=args.rows)
    log.info("wrote %s (open it in a browser)", out)
    return 0


def cmd_critical_tokens(args) -> int:
    from rl.critical_tokens import cli_main

    return cli_main(args)


def cmd_inspect_pairs(args) -> int:
    from rl.inspect_pairs import cli_main

    return cli_main(args)


def cmd_config_help(_args) -> int:
    from rl.config import describe
    from rl.critical_tokens import SECTION, CriticalTokensConfig

    # key, type: valid values (declared beside each field, rl/fields.py), default, help
    rows = describe() + describe(CriticalTokensConfig, SECTION)  # the second: `tokencredit critical-tokens` only
    for key, kind, default, help_ in rows:
        print(f"{key:<40} {kind:<34} {default:<12} {help_}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokencredit", description="RL post-training with token-level credit assignment")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="run a recipe: tokencredit train RECIPE [key=value ...]")
    t.add_argument("recipe", help="a YAML file or a shipped recipe name (see `tokencredit recipes`)")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.lr=1e-6 algorithm.credit=[d3s]")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    t.add_argument("--verbose", "-v", action="store_true",
                   help="show every engine's output (vLLM, DeepSpeed, Ray actors) on the console too, as "
                        "logging.level=debug does; by default it goes to RUN_DIR/logs/ only")
    t.set_defaults(fn=cmd_train)
    b = sub.add_parser("build-pairs", help="preference pairs from a model's own samples: sample rollout.n per "
                       "prompt of data.*, score with rewards.*, pair correct vs incorrect (rl/pair_source.py)")
    b.add_argument("recipe", help="a recipe (model, data, rollout, rewards, eval.accuracy_reward)")
    b.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.temperature=0.7 data.task.num_train=500")
    b.add_argument("--out", required=True, help="output .jsonl (read it with preference_data.source=OUT)")
    b.add_argument("--rule", choices=["default", "cdpo"], default=None,
                   help="default: a correct vs an incorrect sample; cdpo: most frequent correct vs incorrect answer "
                        "(arXiv 2411.19943); default: the recipe's dpo.pair_rule")
    b.add_argument("--seed", type=int, default=None, help="sampling / pairing seed (default: dpo.build_seed)")
    b.add_argument("--n", type=int, default=None, help="samples per prompt (default: rollout.n)")
    b.add_argument("--limit", type=int, default=None, help="use the first N prompts of the split")
    b.add_argument("--split", default=None, help="prompt split (default: data.train_split)")
    b.add_argument("--write-sft", action="store_true", help="cdpo rule: also write cDPO's SFT sets "
                   "(OUT.sft_pos.jsonl / OUT.sft_neg.jsonl)")
    b.add_argument("--batch-prompts", type=int, default=64, help="prompts per generate call")
    b.set_defaults(fn=cmd_build_pairs)
    sub.add_parser("recipes", help="list the shipped recipes").set_defaults(fn=cmd_recipes)
    m = sub.add_parser("prepare-model", help="convert a bundled model to an HF folder in the cache (once)")
    m.add_argument("name", nargs="?", default="smollm2-135m")
    m.add_argument("--force", action="store_true")
    m.set_defaults(fn=cmd_prepare)
    i = sub.add_parser("inspect", help="HTML page colouring each completion token by its credit")
    i.add_argument("run_dir")
    i.add_argument("--step", type=int, default=None, help="saved step (default: the latest)")
    i.add_argument("--out", default=None, help="output .html (default: RUN_DIR/inspect_step_N.html)")
    i.add_argument("--rows", type=int, default=32, help="completions shown")
    i.set_defaults(fn=cmd_inspect)
    c = sub.add_parser("critical-tokens", help="cDPO critical tokens: sample, LoRA SFT pos/neg models, p_CE per "
                       "token -> weighted pairs (rl/critical_tokens.py)")
    c.add_argument("recipe", help="a recipe (model, data, rollout, rewards; optional critical_tokens: section)")
    c.add_argument("overrides", nargs="*", help="dotted overrides, e.g. critical_tokens.n=16 rollout.temperature=0.7")
    c.add_argument("--out", required=True, help="output folder (a rerun skips the stages already done there)")
    c.add_argument("--verify", action="store_true", help="also run the rollout verification (spec §3.3): verify.json")
    c.add_argument("--verify-only", action="store_true", help="sample and verify; no SFT, no weights")
    c.add_argument("--force", action="store_true", help="redo every stage")
    c.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    c.set_defaults(fn=cmd_critical_tokens)
    ip = sub.add_parser("inspect-pairs", help="HTML page of preference pairs: r->Q* implicit reward and cDPO p_CE "
                        "per token (rl/inspect_pairs.py)")
    ip.add_argument("pairs", help="pairs jsonl, or a critical-tokens output folder (its weighted_pairs.jsonl)")
    ip.add_argument("--policy", default=None, help="trained policy (HF folder or LoRA adapter folder) for r_hat")
    ip.add_argument("--ref", default=None, help="reference model (default: adapters off / the critical-tokens base)")
    ip.add_argument("--tokenizer", default=None, help="tokenizer the pairs were scored with (default: policy or ref)")
    ip.add_argument("--beta", type=float, default=0.1, help="beta of r_hat = beta log(pi/pi_ref): the policy's own")
    ip.add_argument("--out", default=None, help="output .html (default: next to the pairs file)")
    ip.add_argument("--rows", type=int, default=32, help="pairs shown")
    ip.add_argument("--chosen-weight-field", default="chosen_weight", help="per-token p_CE column of chosen")
    ip.add_argument("--rejected-weight-field", default="rejected_weight", help="per-token p_CE column of rejected")
    ip.add_argument("--max-length", type=int, default=1024, help="prompt + response tokens at most")
    ip.add_argument("--max-prompt-length", type=int, default=512, help="prompt tokens at most")
    ip.set_defaults(fn=cmd_inspect_pairs)
    sub.add_parser("config-keys", help="every recipe key with its type, valid values, default and help").set_defaults(fn=cmd_config_help)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:  # overrides after a flag (`train quickstart --verbose trainer.steps=2`) are overrides too
        if not hasattr(args, "overrides") or any(r.startswith("-") for r in rest):
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        args.overrides = [*args.overrides, *rest]
    from rl.log import setup_logging

    setup_logging()
    from rl.config import ConfigError

    try:
        return args.fn(args)
    except (ConfigError, FileNotFoundError) as e:
        print(f"tokencredit: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt as e:  # rl/faults.py RunInterrupted: SIGINT / SIGTERM, engines already shut down
        from rl.faults import resume_advice

        print(f"tokencredit: interrupted: {e}" if str(e) else "tokencredit: interrupted", file=sys.stderr)
        advice = resume_advice(getattr(e, "run_dir", None), sys.argv[1:] if argv is None else argv)
        if advice:
            print(f"tokencredit: {advice}", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except Exception as e:  # noqa: BLE001 - user-facing errors from rewards/rollout/trainer
        from rewards import RewardError
        from rl.checkpoint import CheckpointSaveError
        from rl.faults import NonFiniteError, resume_advice
        from rl.trainer_group import TrainerError

        known = (RewardError, TrainerError, ValueError, KeyError, CheckpointSaveError, NonFiniteError)
        try:
            from rollout.errors import RolloutError

            known = known + (RolloutError,)
        except ImportError:
            pass
        if isinstance(e, known):
            print(f"tokencredit: error: {type(e).__name__}: {e}", file=sys.stderr)
            advice = resume_advice(getattr(e, "run_dir", None), sys.argv[1:] if argv is None else argv)
            if advice:
                print(f"tokencredit: {advice}", file=sys.stderr)
            _point_at_logs()
            return EXIT_RUN
        _point_at_logs()
        raise


def _point_at_logs() -> None:
    from rl.log import relative, run_log_dir

    if run_log_dir() is not None:
        print(f"tokencredit: the engines' own logs (vLLM, DeepSpeed, Ray actors) are in {relative(run_log_dir())}/",
              file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
