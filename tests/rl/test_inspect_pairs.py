"""``tokencredit inspect-pairs`` (rl/inspect_pairs.py): r->Q* per-token implicit reward against a direct
computation, a LoRA policy folder against its base, and the page with r_hat and p_CE next to the tokens."""

from __future__ import annotations

import json

import pytest
import torch

from rl.preference_data import PreferenceDataConfig, load_pairs

PAIRS = [
    {"prompt": "Question: What is 2 + 3?\nAnswer:", "chosen": " 5", "rejected": " It is 6 <b>", "answer": "5"},
    {"prompt": "Q: 1 + 1 =", "chosen": " 2 because one and one make two", "rejected": " 11", "answer": "2"},
]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, tiny_model_dir, tok):
    """A 'trained' policy: the tiny model with perturbed weights, saved as an HF folder."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("policy")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def direct_rhat(policy, ref, prompt_ids, resp_ids, beta):
    ids = torch.tensor([prompt_ids + resp_ids])
    with torch.no_grad():
        lp = torch.log_softmax(policy(ids).logits[0].double(), -1)
        lr = torch.log_softmax(ref(ids).logits[0].double(), -1)
    n = len(prompt_ids)
    return [beta * float(lp[n + t - 1, y] - lr[n + t - 1, y]) for t, y in enumerate(resp_ids)]


def pairs_file(tmp_path, rows=PAIRS):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_rhat_matches_a_direct_computation(tmp_path, tok, tiny_model_dir, policy_dir):
    from transformers import AutoModelForCausalLM

    from rl.inspect_pairs import implicit_token_rewards

    ps = load_pairs(PreferenceDataConfig(source=str(pairs_file(tmp_path))), tok)
    policy = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    got = implicit_token_rewards(policy, ref, ps.rows, ps.pad_token_id, beta=0.1, batch_pairs=2, chunk_tokens=3)
    for row, (c, r) in zip(ps.rows, got):
        assert len(c) == len(row.chosen_ids) and len(r) == len(row.rejected_ids)
        assert c == pytest.approx(direct_rhat(policy, ref, row.prompt_ids, row.chosen_ids, 0.1), abs=1e-5)
        assert r == pytest.approx(direct_rhat(policy, ref, row.prompt_ids, row.rejected_ids, 0.1), abs=1e-5)
    same = implicit_token_rewards(ref, ref, ps.rows, ps.pad_token_id, beta=0.1)
    assert all(abs(x) < 1e-6 for c, r in same for x in c + r)  # pi = pi_ref: no reward anywhere


def test_lora_policy_folder_uses_the_base_with_adapters_off_as_reference(tmp_path, tok, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rl.inspect_pairs import implicit_token_rewards, load_policy_and_ref

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    policy, ref = load_policy_and_ref(str(tmp_path / "adapter"), None)
    ps = load_pairs(PreferenceDataConfig(source=str(pairs_file(tmp_path))), tok)
    got = implicit_token_rewards(policy, ref, ps.rows, ps.pad_token_id, beta=0.5)
    merged = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    merged = get_peft_model(merged, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    merged.load_state_dict(peft_model.state_dict())
    merged = merged.merge_and_unload().eval()
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    row = ps.rows[0]
    assert got[0][1] == pytest.approx(direct_rhat(merged, plain, row.prompt_ids, row.rejected_ids, 0.5), abs=1e-4)
    assert any(abs(x) > 1e-3 for x in got[0][1])


def test_page_shows_rhat_and_pce_next_to_the_tokens(tmp_path, tok, tiny_model_dir, policy_dir):
    from rl.inspect_pairs import write_pairs_page

    rows = []
    ps = load_pairs(PreferenceDataConfig(source=str(pairs_file(tmp_path))), tok)
    for raw, row in zip(PAIRS, ps.rows):
        rows.append({**raw, "chosen_weight": [0.9] * len(row.chosen_ids),
                     "rejected_weight": [0.05] + [0.8] * (len(row.rejected_ids) - 1)})
    src = tmp_path / "weighted.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = write_pairs_page(src, tmp_path / "page.html", policy=policy_dir, ref=tiny_model_dir, beta=0.1)
    page = out.read_text()
    assert page.count("class='pair'") == 2
    assert "p_CE=0.05" in page and "r_hat=" in page  # p_CE and r-hat in the token tooltips
    assert "&lt;" in page and "<b>" not in page  # token text is escaped
    assert "rejected" in page and "chosen" in page
    # without a policy the page still shows p_CE; without weights it still shows r_hat
    only_pce = write_pairs_page(src, tmp_path / "a.html", tokenizer=tiny_model_dir).read_text()
    assert "p_CE=0.05" in only_pce and "r_hat=" not in only_pce
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    only_rhat = write_pairs_page(plain, tmp_path / "b.html", policy=policy_dir, ref=tiny_model_dir).read_text()
    assert "r_hat=" in only_rhat and "p_CE=" not in only_rhat
    with pytest.raises(ValueError, match="policy"):
        write_pairs_page(plain, tmp_path / "c.html", tokenizer=tiny_model_dir)


def test_cli_inspect_pairs(tmp_path, tiny_model_dir, policy_dir):
    from rl.cli import main

    src = pairs_file(tmp_path)
    assert main(["inspect-pairs", str(src), "--policy", policy_dir, "--ref", tiny_model_dir, "--beta", "0.2",
                 "--out", str(tmp_path / "p.html"), "--rows", "1"]) == 0
    assert (tmp_path / "p.html").read_text().count("class='pair'") == 1
