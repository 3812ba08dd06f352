"""Recipe validation: every bad case names the key and the file, and nothing is half-loaded."""

from pathlib import Path

import pytest

from rl.cli import list_recipes, main
from rl.config import ConfigError, load_config

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
GOOD = """
name: t
rewards:
  functions: [{name: math_answer}]
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def error(tmp_path, text, overrides=None) -> str:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p, overrides)
    msg = str(e.value)
    assert str(p) in msg, msg  # the file is always named
    return msg


def test_good_recipe_loads_with_defaults_and_overrides(tmp_path):
    cfg = load_config(write(tmp_path, GOOD), ["trainer.lr=3e-6", "algorithm.credit=[d3s]", "rollout.n=4"])
    assert cfg.trainer.lr == 3e-6
    assert cfg.algorithm.credit == ["d3s"]
    assert cfg.rollout.n == 4
    assert cfg.algorithm.eps_low == 0.2  # schema default


def test_unknown_key_names_key_and_file(tmp_path):
    msg = error(tmp_path, GOOD + "trainer:\n  lrr: 1e-6\n")
    assert "trainer.lrr" in msg and "unknown key" in msg


def test_unknown_key_in_override(tmp_path):
    p = write(tmp_path, GOOD)
    with pytest.raises(ConfigError) as e:
        load_config(p, ["rollout.temprature=0.5"])
    assert "rollout.temprature" in str(e.value) and "command-line" in str(e.value)


def test_wrong_type_names_key(tmp_path):
    msg = error(tmp_path, GOOD + "trainer:\n  steps: many\n")
    assert "trainer.steps" in msg


def test_missing_required_value(tmp_path):
    msg = error(tmp_path, "rewards:\n  functions: [{weight: 2.0}]\n")
    assert "name" in msg and "missing" in msg


def test_no_reward_function(tmp_path):
    assert "rewards.functions" in error(tmp_path, "name: t\n")


def test_batch_not_divisible_by_mini_batches(tmp_path):
    msg = error(tmp_path, GOOD + "trainer: {prompts_per_step: 3}\nrollout: {n: 3}\nalgorithm: {mini_batches: 2}\n")
    assert "algorithm.mini_batches" in msg and "9 rows" in msg


def test_more_ranks_than_rows(tmp_path):
    msg = error(tmp_path, GOOD + "trainer: {prompts_per_step: 1, num_ranks: 4}\nrollout: {n: 2}\n")
    assert "trainer.num_ranks" in msg


def test_micro_batch_must_be_positive(tmp_path):
    assert "trainer.micro_batch_size" in error(tmp_path, GOOD + "trainer: {micro_batch_size: 0}\n")


def test_group_of_one_rejected_for_group_relative_advantage(tmp_path):
    assert "rollout.n" in error(tmp_path, GOOD + "rollout: {n: 1}\n")


@pytest.mark.parametrize("section,key,value", [
    ("algorithm", "advantage", "ppo"), ("algorithm", "policy_loss", "dpo"), ("algorithm", "aggregation", "sum"),
    ("rollout", "backend", "sglang"), ("model", "dtype", "fp8"),
])
def test_bad_choice_lists_the_choices(tmp_path, section, key, value):
    msg = error(tmp_path, GOOD + f"{section}:\n  {key}: {value}\n")
    assert f"{section}.{key}" in msg and value in msg


def test_bad_reward_error_mode(tmp_path):
    msg = error(tmp_path, "rewards:\n  on_error: ignore\n  functions: [{name: math_answer}]\n")
    assert "rewards.on_error" in msg and "ignore" in msg


def test_broken_yaml_names_file_and_line(tmp_path):
    msg = error(tmp_path, GOOD + "trainer:\n  steps: [1, 2\n")
    assert "not valid YAML" in msg and "line" in msg


def test_unknown_credit_module(tmp_path):
    msg = error(tmp_path, GOOD + "algorithm: {credit: [d3s, magic]}\n")
    assert "algorithm.credit" in msg and "magic" in msg


def test_inconsistent_offload_and_context(tmp_path):
    assert "trainer.offload_params" in error(tmp_path, GOOD + "trainer: {offload_params: true, zero_stage: 2}\n")
    assert "rollout.max_tokens" in error(tmp_path, GOOD + "rollout: {max_tokens: 600, max_model_len: 512}\n")
    assert "data.max_prompt_tokens" in error(tmp_path, GOOD + "data: {max_prompt_tokens: 500}\n")


def test_gspo_with_credit_needs_gspo_token(tmp_path):
    assert "gspo_token" in error(tmp_path, GOOD + "algorithm: {policy_loss: gspo, credit: [d3s]}\n")


def test_credit_module_value_error_names_key(tmp_path):
    msg = error(tmp_path, GOOD + "algorithm:\n  thr: {vocab: everything}\n")
    assert "algorithm.thr.vocab" in msg


def test_recipe_not_a_mapping(tmp_path):
    assert "mapping" in error(tmp_path, "- a\n- b\n")


def test_every_shipped_recipe_validates():
    names = [n for n, _ in list_recipes()]
    assert "quickstart" in names and "smoke" in names
    for path in RECIPES.glob("*.yaml"):
        cfg = load_config(path)
        assert cfg.description, f"{path.name} needs a one-line description"


def test_cli_bad_recipe_exits_nonzero_without_traceback(tmp_path, capsys):
    p = write(tmp_path, GOOD + "trainer:\n  lrr: 1\n")
    assert main(["train", str(p)]) == 2
    err = capsys.readouterr().err
    assert "trainer.lrr" in err and "Traceback" not in err


def test_cli_missing_recipe(capsys):
    assert main(["train", "no_such_recipe"]) == 2
    assert "quickstart" in capsys.readouterr().err  # lists the shipped ones


def test_cli_print_config_resolves(tmp_path, capsys):
    assert main(["train", str(write(tmp_path, GOOD)), "trainer.steps=7", "--print-config"]) == 0
    assert "steps: 7" in capsys.readouterr().out


def test_cli_recipes_lists_descriptions(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "GRPO" in out


# --- combinations that depart from their paper (algorithm.on_paper_mismatch) ------------------------
GSPO_TOKEN_MEAN = GOOD + "algorithm:\n  policy_loss: gspo_token\n  aggregation: token_mean\n  eps_low: 3.0e-4\n  eps_high: 4.0e-4\n"


def paper_warnings(caplog, tmp_path, text, overrides=None) -> list[str]:
    import logging

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_config(write(tmp_path, text), overrides)
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_paper_mismatch_warns_by_default_in_one_line(caplog, tmp_path):
    msgs = paper_warnings(caplog, tmp_path, GSPO_TOKEN_MEAN)
    assert len(msgs) == 1 and "\n" not in msgs[0]
    msg = msgs[0]
    assert "algorithm.policy_loss=gspo_token" in msg and "algorithm.aggregation=token_mean" in msg
    assert "seq_mean_token_mean" in msg and "arXiv 2507.18071" in msg and "eps" not in msg.split("uses")[1]


def test_paper_mismatch_error_refuses_naming_keys_paper_and_file(tmp_path):
    msg = error(tmp_path, GSPO_TOKEN_MEAN, ["algorithm.on_paper_mismatch=error"])
    assert "algorithm.aggregation" in msg and "2507.18071" in msg and "on_paper_mismatch" in msg


def test_paper_mismatch_ignore_is_silent(caplog, tmp_path):
    assert paper_warnings(caplog, tmp_path, GSPO_TOKEN_MEAN, ["algorithm.on_paper_mismatch=ignore"]) == []
    with pytest.raises(ConfigError, match="algorithm.on_paper_mismatch"):
        load_config(write(tmp_path, GOOD), ["algorithm.on_paper_mismatch=maybe"])


@pytest.mark.parametrize("overrides, keys, paper", [
    (["algorithm.policy_loss=gspo"], ["algorithm.aggregation=token_mean", "algorithm.eps_low=0.2",
                                      "algorithm.eps_high=0.2"], "2507.18071"),
    (["algorithm.advantage=dr_grpo"], ["algorithm.advantage=dr_grpo", "algorithm.aggregation=token_mean"],
     "2503.20783"),
    (["algorithm.credit=[tw]"], ["algorithm.credit", "algorithm.eps_high=0.2"], "2505.24718"),
    (["algorithm.credit=[tw]", "algorithm.eps_high=0.28", "algorithm.aggregation=seq_mean_token_mean"],
     ["algorithm.aggregation=seq_mean_token_mean"], "2505.24718"),
    (["algorithm.dynamic_sampling.enable=true", "algorithm.dynamic_sampling.criterion=reward_variance"],
     ["algorithm.dynamic_sampling.criterion=reward_variance"], "2503.14476"),
])
def test_paper_mismatch_table(caplog, tmp_path, overrides, keys, paper):
    msgs = paper_warnings(caplog, tmp_path, GOOD, overrides)
    assert len(msgs) == 1, msgs
    assert all(k in msgs[0] for k in keys) and f"arXiv {paper}" in msgs[0]


@pytest.mark.parametrize("overrides", [
    [],  # plain GRPO defaults: no paper fixes these
    ["algorithm.policy_loss=gspo", "algorithm.aggregation=seq_mean_token_mean", "algorithm.eps_low=3e-4",
     "algorithm.eps_high=4e-4"],
    ["algorithm.advantage=dr_grpo", "algorithm.aggregation=seq_mean_token_sum_norm"],
    ["algorithm.credit=[tw]", "algorithm.eps_high=0.28"],
    ["algorithm.dynamic_sampling.enable=true"],
])
def test_paper_combinations_do_not_warn(caplog, tmp_path, overrides):
    assert paper_warnings(caplog, tmp_path, GOOD, overrides) == []


def test_every_shipped_recipe_matches_its_papers():
    for path in RECIPES.glob("*.yaml"):
        load_config(path, ["algorithm.on_paper_mismatch=error"])
