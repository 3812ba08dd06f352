import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from rl.config import DataConfig, TaskConfig
from rl.data import DataError, MissingSplitError, load_eval_prompts, load_prompts
from rl.models import resolve_model

ROWS = [
    {"prompt": "What is 2 + 2?", "answer": "four", "level": "easy"},
    {"prompt": "Name a colour.", "answer": "red", "level": "easy"},
    {"prompt": "Why is the sky blue? Explain with Rayleigh scattering in detail.", "answer": "physics", "level": "hard"},
]
# The bundled SmolLM2 template, written out by hand (it adds a default system prompt).
SYS = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


def chat(user: str, system: str | None = None) -> str:
    head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else SYS
    return f"{head}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


@pytest.fixture(scope="module")
def tok_bos():
    """The same tokenizer set to prepend BOS (<|im_start|>) to plain text, as Llama-style tokenizers do."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"), add_bos_token=True)


@pytest.fixture(scope="module")
def tok_plain():
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    t.chat_template = None
    return t


def write(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "parquet"])
def test_each_local_format(tmp_path, tok, fmt):
    f = write(tmp_path / f"prompts.{fmt}", ROWS, fmt)
    ps = load_prompts(DataConfig(source=str(f), extra_columns=["level"]), tok, "train")
    assert [r.text for r in ps.rows] == [chat(r["prompt"]) for r in ROWS]
    assert [r.answer for r in ps.rows] == ["four", "red", "physics"]
    assert ps.columns_for(ps.rows) == {"answer": ["four", "red", "physics"], "level": ["easy", "easy", "hard"]}
    assert ps.columns_for([2]) == {"answer": ["physics"], "level": ["hard"]}
    assert ps.dropped_long == 0 and ps.source == str(f)


def test_directory_with_split_files(tmp_path, tok):
    write(tmp_path / "train.jsonl", ROWS[:2], "jsonl")
    write(tmp_path / "test.jsonl", ROWS[2:], "jsonl")
    cfg = DataConfig(source=str(tmp_path))
    assert [r.answer for r in load_prompts(cfg, tok, "train").rows] == ["four", "red"]
    assert [r.answer for r in load_eval_prompts(cfg, tok).rows] == ["physics"]


def test_missing_test_split_warns_and_gives_no_eval_set(tmp_path, tok, caplog):
    cfg = DataConfig(source=str(write(tmp_path / "p.jsonl", ROWS, "jsonl")))
    with caplog.at_level(logging.WARNING):
        assert load_eval_prompts(cfg, tok) is None
    assert "data.test_split='test'" in caplog.text and "no evaluation set" in caplog.text
    with pytest.raises(MissingSplitError, match=r"available: \['train'\]"):
        load_prompts(cfg, tok, "test")
    assert load_eval_prompts(DataConfig(source=cfg.source, test_split=""), tok) is None


def test_holdout_fraction_splits_off_a_fixed_disjoint_part(tmp_path, tok):
    rows = [{"prompt": f"q{i}", "answer": str(i)} for i in range(8)]
    cfg = DataConfig(source=str(write(tmp_path / "p.jsonl", rows, "jsonl")), holdout_fraction=0.25)
    held = [r.answer for r in load_eval_prompts(cfg, tok).rows]
    kept = [r.answer for r in load_prompts(cfg, tok, "train").rows]
    assert len(held) == 2 and len(kept) == 6
    assert sorted(held + kept, key=int) == [str(i) for i in range(8)]
    assert held == [r.answer for r in load_eval_prompts(cfg, tok).rows]  # same rows every run
    assert [r.index for r in load_eval_prompts(cfg, tok).rows] == [int(a) for a in held]  # source row numbers


def test_column_mapping_nested_fields_and_limit(tmp_path, tok):
    rows = [{"question": f"q{i}", "meta": {"gt": str(i)}, "tests": [i, i + 1]} for i in range(5)]
    cfg = DataConfig(source=str(write(tmp_path / "p.jsonl", rows, "jsonl")), prompt_field="question",
                     answer_field="meta.gt", extra_columns=["tests"])
    ps = load_prompts(cfg, tok, "train", limit=3)
    assert [r.text for r in ps.rows] == [chat("q0"), chat("q1"), chat("q2")]
    assert ps.columns_for(ps.rows) == {"answer": ["0", "1", "2"], "tests": [[0, 1], [1, 2], [2, 3]]}
    no_answer = DataConfig(source=cfg.source, prompt_field="question", answer_field="")
    assert load_prompts(no_answer, tok, "train").columns_for([0]) == {"answer": [None]}


def test_chat_message_prompts_and_system_prompt(tmp_path, tok):
    rows = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}], "answer": "a"},
            {"prompt": [{"role": "user", "content": "Yo"}], "answer": "b"}]
    cfg = DataConfig(source=str(write(tmp_path / "p.jsonl", rows, "jsonl")))
    assert [r.text for r in load_prompts(cfg, tok, "train").rows] == [chat("Hi", "Be brief."), chat("Yo")]
    with_sys = DataConfig(source=cfg.source, system_prompt="Be kind.")
    # The row's own system message wins; rows without one get data.system_prompt.
    assert [r.text for r in load_prompts(with_sys, tok, "train").rows] == [chat("Hi", "Be brief."), chat("Yo", "Be kind.")]


def test_token_ids_have_exactly_one_bos(tmp_path, tok, tok_bos):
    cfg = DataConfig(source=str(write(tmp_path / "p.jsonl", ROWS[:1], "jsonl")))
    for t in (tok, tok_bos):  # the template writes <|im_start|> itself: no second one in front
        row = load_prompts(cfg, t, "train").rows[0]
        assert row.ids == tok(row.text, add_special_tokens=False)["input_ids"]
        assert row.ids[:2] == [1, 9690]  # <|im_start|> "system"
    plain = DataConfig(source=cfg.source, apply_chat_template=False)
    assert load_prompts(plain, tok_bos, "train").rows[0].ids == [1] + tok(ROWS[0]["prompt"])["input_ids"]
    assert load_prompts(plain, tok, "train").rows[0].ids == tok(ROWS[0]["prompt"])["input_ids"]


def test_tokenizer_without_template(tmp_path, tok_plain):
    cfg = DataConfig(source=str(write(tmp_path / "p.jsonl", ROWS[:1], "jsonl")), system_prompt="Be brief.")
    with pytest.raises(DataError, match="no chat template.*data.chat_template_fallback=plain"):
        load_prompts(cfg, tok_plain, "train")
    fallback = DataConfig(source=cfg.source, system_prompt="Be brief.", chat_template_fallback="plain")
    assert load_prompts(fallback, tok_plain, "train").rows[0].text == "Be brief.\n\nWhat is 2 + 2?"


def test_missing_field_names_field_file_row_and_columns(tmp_path, tok):
    rows = [{"prompt": "a", "answer": "1"}, {"prompt": "b"}]
    f = write(tmp_path / "p.jsonl", rows, "jsonl")
    with pytest.raises(DataError) as e:
        load_prompts(DataConfig(source=str(f)), tok, "train")
    msg = str(e.value)
    for part in ("data.answer_field='answer'", str(f), "row 1", "available columns: ['prompt', 'answer']"):
        assert part in msg
    with pytest.raises(DataError, match=r"row 0: data.prompt_field='question' is missing"):
        load_prompts(DataConfig(source=str(f), prompt_field="question"), tok, "train")
    with pytest.raises(DataError, match=r"data.extra_columns='level' is missing"):
        load_prompts(DataConfig(source=str(f), answer_field="", extra_columns=["level"]), tok, "train")
    with pytest.raises(DataError, match="'completions' is reserved"):
        load_prompts(DataConfig(source=str(f), extra_columns=["completions"]), tok, "train")


def test_bad_prompt_value_is_named(tmp_path, tok):
    f = write(tmp_path / "p.jsonl", [{"prompt": 7, "answer": "1"}], "jsonl")
    with pytest.raises(DataError, match="row 0: data.prompt_field='prompt' must be a string"):
        load_prompts(DataConfig(source=str(f)), tok, "train")


def test_long_prompts_dropped_with_count_or_rejected(tmp_path, tok, caplog):
    f = write(tmp_path / "p.jsonl", ROWS, "jsonl")
    lengths = [len(tok(chat(r["prompt"]), add_special_tokens=False)["input_ids"]) for r in ROWS]
    limit = sorted(lengths)[1]  # exactly one prompt (the long third one) is over
    assert lengths[2] > limit
    with caplog.at_level(logging.WARNING):
        ps = load_prompts(DataConfig(source=str(f), max_prompt_tokens=limit), tok, "train")
    assert ps.dropped_long == 1 and [r.answer for r in ps.rows] == ["four", "red"]
    assert "dropped 1 of 3 prompts" in caplog.text
    with pytest.raises(DataError) as e:
        load_prompts(DataConfig(source=str(f), max_prompt_tokens=limit, on_long_prompt="error"), tok, "train")
    assert f"row 2: prompt is {lengths[2]} tokens" in str(e.value)
    assert f"data.max_prompt_tokens={limit}" in str(e.value)
    with pytest.raises(DataError, match="all 3 prompts are longer"):
        load_prompts(DataConfig(source=str(f), max_prompt_tokens=5), tok, "train")


def test_builtin_sources(tok):
    cfg = DataConfig(source="builtin:countdown", task=TaskConfig(digits=2, num_operands=3, num_train=6, num_test=2))
    ps = load_prompts(cfg, tok, "train")
    cols = ps.columns_for(ps.rows)
    assert len(ps) == 6 and sorted(cols) == ["answer", "numbers", "target"]
    assert cols["answer"] == [str(t) for t in cols["target"]]
    assert ps.rows[0].text.startswith(SYS + "<|im_start|>user\nUsing the numbers ")
    assert len(load_eval_prompts(cfg, tok)) == 2
    with pytest.raises(DataError, match="data.test_split='validation'"):
        load_prompts(DataConfig(test_split="validation"), tok, "validation")


def test_missing_local_path_is_not_taken_for_a_hub_name(tok):
    with pytest.raises(DataError, match="no such file or directory"):
        load_prompts(DataConfig(source="data/nope.jsonl"), tok, "train")


def test_hub_name_without_network_fails_fast_naming_the_source(tok, monkeypatch):
    import rl.data

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(rl.data, "_hub_unreachable", lambda: "huggingface.co:443: simulated")
    with pytest.raises(DataError, match=r"data.source='someone/prompts'.*cannot be reached.*no network"):
        load_prompts(DataConfig(source="someone/prompts"), tok, "train")


def test_hub_name_with_hf_hub_offline_errors_without_hanging():
    # A fresh interpreter, because huggingface_hub reads HF_HUB_OFFLINE when it is imported.
    code = textwrap.dedent("""
        from rl.config import DataConfig
        from rl.data import DataError, load_prompts
        try:
            load_prompts(DataConfig(source="tokencredit-bogus/no-such-dataset"), None, "train")
        except DataError as e:
            print("ERR", e)
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ERR data.source='tokencredit-bogus/no-such-dataset'" in out.stdout, out.stderr
    assert "HF_HUB_OFFLINE" in out.stdout


@pytest.mark.parametrize("key,value", [("holdout_fraction", 1.0), ("on_long_prompt", "truncate"),
                                       ("chat_template_fallback", "raw"), ("max_prompt_tokens", 0)])
def test_bad_data_settings_name_the_key(tok, key, value):
    with pytest.raises(DataError, match=f"data.{key}"):
        load_prompts(DataConfig(**{key: value}), tok, "train")
