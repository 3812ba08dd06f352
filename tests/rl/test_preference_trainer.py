"""The DPO family on the trainer ranks: pair layout, exact multi-rank / ZeRO-3 updates, precomputed reference.

The updates are checked against an independent computation: plain transformers autograd on each unpadded
sequence (no batching, no padding, full [L, V] logits) + the registered losses (checked against TRL's
DPOTrainer in test_preference_losses.py) + torch's own AdamW. With ``adam_eps`` >> |g| Adam's step is
lr * m_hat / (sqrt(v_hat) + eps), nearly linear in the gradients, so equal weights mean equal gradients.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from rl.config import ConfigError, load_config
from rl.objectives.preference import (
    PairBatcher,
    PreferenceObjective,
    blocked_order,
    interleave,
    pair_rows,
    valid_pairs,
)
from rl.preference_data import PairRow, PairSet, collate_pairs
from rl.trainer_group import shard_pairs
from rl.trainer_rank import micro_batches

REPO = Path(__file__).resolve().parents[2]
EOS = 2
LR, EPS = 10.0, 1e3


def cfg_for(loss="dpo", **over):
    base = {"family": "dpo", "preference.loss": loss, "preference_data.source": "pairs.jsonl",
            "model.dtype": "float32", "trainer.micro_batch_size": 6, "trainer.lr": LR, "trainer.adam_eps": EPS,
            "trainer.grad_clip": 0.0, "trainer.torch_threads": 1, "preference.beta": 0.5}
    if loss == "cdpo":
        base["preference_data.rejected_weight_field"] = "rejected_ce"
    base.update(over)
    return load_config(REPO / "recipes/smoke.yaml", [f"{k}={v}" for k, v in base.items()])


def make_pairs() -> list[PairRow]:
    """3 pairs: prompts of 3/5/2 tokens, chosen and rejected of different lengths, one truncated rejected
    (no EOS), p_CE-like weights in [0, 1] on every response token."""
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(3, 1000, (n,), generator=g).tolist()

    def w(n):
        return torch.rand(n, generator=g).tolist()

    spec = [(3, 4, 2, False), (5, 1, 6, False), (2, 3, 4, True)]
    rows = []
    for i, (p, c, r, cut) in enumerate(spec):
        chosen, rejected = ids(c) + [EOS], ids(r) + ([] if cut else [EOS])
        rows.append(PairRow(i, f"p{i}", f"c{i}", f"r{i}", ids(p), chosen, rejected, w(len(chosen)), w(len(rejected)),
                            False, cut))
    return rows


def train_batch(rows, tok, pcfg, ref_logp=None):
    return PairBatcher(tok, pcfg)(collate_pairs(rows, EOS), ref_logp)


# ------------------------------------------------------------------------------------------ layout (no model)
def test_interleaved_layout_round_trip_and_pair_rows():
    x = torch.arange(6)[:, None].float()  # collated: chosen 0,1,2 then rejected 3,4,5
    inter = interleave(x)
    assert inter[:, 0].tolist() == [0, 3, 1, 4, 2, 5]
    assert inter[blocked_order(6)][:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert pair_rows(torch.tensor([2, 0])).tolist() == [4, 5, 0, 1]


def test_ranks_and_micro_batches_hold_whole_pairs_and_padding_adds_nothing():
    assert [s.tolist() for s in shard_pairs(3, 2)] == [[0, 1, 2, 3], [4, 5]]
    assert [s.tolist() for s in shard_pairs(1, 2)] == [[0, 1], []]
    batch = {"loss_mask": torch.ones(6, 4), "r": torch.arange(6)}
    mbs = micro_batches(batch, 2, "loss_mask", batch, unit_rows=2)
    assert [m["r"].tolist() for m in mbs] == [[0, 1, 2, 3], [4, 5]]
    mbs = micro_batches(batch, 4, "loss_mask", batch, unit_rows=2)
    assert [m["r"].tolist() for m in mbs] == [[0, 1], [2, 3], [4, 5], [0, 1]]
    assert mbs[-1]["loss_mask"].sum() == 0 and valid_pairs(mbs[-1]["loss_mask"]).sum() == 0


@pytest.mark.parametrize("loss", ["dpo", "ipo", "tdpo1", "tdpo2", "tgdpo", "cdpo", "treg"])
def test_a_padding_pair_contributes_exactly_zero(loss):
    pcfg = cfg_for(loss, **({"dpo.guidance_model": "g"} if loss == "tgdpo" else {})).preference
    obj = PreferenceObjective(pcfg)
    n, t, d, v = 2, 3, 4, 11
    g = torch.Generator().manual_seed(1)
    h = torch.randn(n, t, d, generator=g, requires_grad=True)
    w = torch.randn(v, d, generator=g, requires_grad=True)
    logp = torch.log_softmax(h @ w.T, -1)[..., 0]
    mb = {"loss_mask": torch.zeros(n, t), "ref_logp": -torch.rand(n, t, generator=g),
          "guidance_logp": -torch.rand(n, t, generator=g), "token_reward": torch.rand(n, t, generator=g) - 0.5,
          "weight": torch.rand(n, t, generator=g), "eos_mask": torch.zeros(n, t),
          "ref_hidden": torch.randn(n, t, d, generator=g)}
    out = {"logp": logp, "hidden": h, "heads": {"policy": (w, None), "reference": (w.detach() + 0.1, None)}}
    share, _, weight = obj.loss(out, mb, [5.0])
    share.backward()
    assert float(share) == 0.0 and weight == 0.0
    assert float(h.grad.abs().sum()) == 0.0 and float(w.grad.abs().sum()) == 0.0


def test_stat_requests_follow_the_loss():
    def keys(loss, batch=None, **over):
        pcfg = cfg_for(loss, **over).preference
        return [(s.key, s.model, s.output, s.prompt) for s in PreferenceObjective(pcfg).stat_requests(batch or {})]

    assert keys("dpo") == [("ref_logp", "reference", "logp", None)]
    assert keys("dpo", {"ref_logp": torch.zeros(1)}) == []  # precomputed
    assert keys("tgdpo", **{"dpo.guidance_model": "g"})[1] == ("guidance_logp", "guidance", "logp", None)
    assert keys("tdpo2")[1] == ("ref_hidden", "reference", "hidden", None)
    assert keys("treg")[1:] == [("better_logp", "reference", "logp", "better"),
                                ("worse_logp", "reference", "logp", "worse")]
    assert keys("treg", **{"preference.treg_evaluator": "policy"})[1][1] == "policy"
    assert PreferenceObjective(cfg_for("tdpo1").preference).loss_heads == ("reference",)


def test_pair_batcher_rows_eos_and_treg_prompts(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = make_pairs()
    b = train_batch(rows, tok, cfg_for("cdpo").preference)
    assert b["completion_ids"].shape[0] == 6
    # row 2i+1 is pair i's rejected response; the truncated one (pair 2) has no EOS
    assert b["completion_ids"][3, :7].tolist() == rows[1].rejected_ids
    assert b["eos_mask"].sum(-1).tolist() == [1, 1, 1, 1, 1, 0]
    assert b["eos_mask"][0, 4] == 1 and b["weight"][5, :4].tolist() == pytest.approx(rows[2].rejected_weight)
    pcfg = cfg_for("treg").preference
    t = train_batch(rows, tok, pcfg)
    before, after = pcfg.treg_better_template.split("{prompt}")
    want = tok(before, add_special_tokens=False)["input_ids"] + rows[1].prompt_ids
    assert t["better_ids"][2][t["better_mask"][2].bool()].tolist() == want and not after


# ------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("over,key", [
    ({"preference.loss": "tgdpo"}, "dpo.guidance_model"),
    ({"preference.loss": "cdpo"}, "preference_data.rejected_weight_field"),
    ({"dpo.mode": "online", "preference.loss": "cdpo"}, "preference.loss"),
    ({"dpo.mode": "online", "dpo.reference_logp": "precompute"}, "dpo.reference_logp"),
    ({"preference_data.source": "''"}, "preference_data.source"),
    ({"preference_data.source": "builtin:arithmetic"}, "preference_data.source"),
    ({"trainer.micro_batch_size": 1}, "trainer.micro_batch_size"),
    ({"family": "ppo"}, "family"),
    ({"dpo.mode": "sometimes"}, "dpo.mode"),
    ({"algorithm.kl.coef": 0.1}, "algorithm.kl.coef"),
    ({"preference.treg_better_template": "no placeholder"}, "preference.treg_better_template"),
    ({"preference_data.holdout_fraction": 0.1}, "preference_data.test_split"),
    ({"preference.treg_evaluator": "judge"}, "preference.treg_evaluator"),
    ({"preference_data.source": "builtin:critical", "preference_data.rejected_weight_field": "w"},
     "preference_data.rejected_weight_field"),
])
def test_contradictory_settings_name_their_key(over, key):
    base = {"family": "dpo", "preference_data.source": "pairs.jsonl"}
    base.update(over)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(REPO / "recipes/smoke.yaml", [f"{k}={v}" for k, v in base.items()])


def test_offline_dpo_needs_no_reward_function():
    cfg = load_config(None, ["family=dpo", "preference_data.source=pairs.jsonl"])
    assert cfg.rewards.functions == []
    with pytest.raises(ConfigError, match=r"rewards\.functions"):
        load_config(None, ["family=dpo", "preference_data.source=builtin:self"])


@pytest.mark.parametrize("name", ["dpo", "ipo", "tdpo", "tgdpo", "treg", "cdpo", "online_dpo"])
def test_shipped_dpo_recipes_load(name):
    cfg = load_config(REPO / "recipes" / f"{name}.yaml")
    assert cfg.family == "dpo" and cfg.model.name_or_path == "smollm2-135m"
    assert cfg.dpo.mode == ("online" if name == "online_dpo" else "offline")


def test_pair_rules_match_rl_pairs():
    from rl.dpo_config import PAIR_RULES
    from rl.pairs import RULES

    assert tuple(PAIR_RULES) == tuple(RULES)


# ------------------------------------------------------------------------------------------ independent reference
def response_logits(model, prompt, response):
    """[len(response), V] logits predicting each response token, one unpadded sequence."""
    ids = torch.tensor([prompt + response])
    return model(input_ids=ids).logits[0, len(prompt) - 1: len(prompt) + len(response) - 1].float()


def independent_loss(policy, ref, guidance, rows, pcfg, tok):
    """The loss of the pairs by plain autograd + the registered (TRL-checked) loss; rows [chosen; rejected]."""
    from rl.algorithms.preference import PreferenceInputs
    from rl.algorithms.registry import PREFERENCE_LOSSES
    from rl.credit.treg import treg_token_reward

    sides = [(r.prompt_ids, r.chosen_ids, r.chosen_weight) for r in rows] + \
            [(r.prompt_ids, r.rejected_ids, r.rejected_weight) for r in rows]
    pol, ref_lp, kl, gl, better, worse, weights, eos = [], [], [], [], [], [], [], []
    for prompt, resp, wt in sides:
        y = torch.tensor(resp)
        lp_pol = torch.log_softmax(response_logits(policy, prompt, resp), -1)
        pol.append(lp_pol.gather(1, y[:, None])[:, 0])
        with torch.no_grad():
            lp_ref = torch.log_softmax(response_logits(ref, prompt, resp), -1)
            ref_lp.append(lp_ref.gather(1, y[:, None])[:, 0])
            if guidance is not None:
                gl.append(torch.log_softmax(response_logits(guidance, prompt, resp), -1).gather(1, y[:, None])[:, 0])
            for out, template in ((better, pcfg.treg_better_template), (worse, pcfg.treg_worse_template)):
                before, after = template.split("{prompt}")
                p2 = tok(before, add_special_tokens=False)["input_ids"] + prompt + \
                    (tok(after, add_special_tokens=False)["input_ids"] if after else [])
                out.append(torch.log_softmax(response_logits(ref, p2, resp), -1).gather(1, y[:, None])[:, 0])
        kl.append((lp_ref.exp() * (lp_ref - lp_pol)).sum(-1))  # full-vocabulary KL(pi_ref || pi_theta)
        weights.append(torch.tensor(wt))
        eos.append(torch.tensor([0.0] * (len(resp) - 1) + [float(resp[-1] == EOS)]))

    def pad(xs):
        return torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)

    mask = pad([torch.ones(len(s[1])) for s in sides])
    extra = {}
    if pcfg.loss == "tgdpo":
        extra["guidance_logp"] = pad(gl)
    if pcfg.loss in ("tdpo1", "tdpo2"):
        extra["ref_kl"] = pad(kl)
    if pcfg.loss == "treg":
        extra["token_reward"] = treg_token_reward(pad(better), pad(worse), mask)
    if pcfg.loss == "cdpo":  # the data's weight columns are p_CE
        extra["ce_prob"], extra["eos_mask"] = pad(weights), pad(eos)
    else:  # for every other loss they multiply the method's own token weights
        extra["weight"] = pad(weights)
    per_pair, _ = PREFERENCE_LOSSES[pcfg.loss](PreferenceInputs(pad(pol), pad(ref_lp), mask, **extra), pcfg)
    return per_pair.sum() / len(rows)  # normaliser: the global pair count


def expected_weights(model_dir, rows, pcfg, tok, steps, guidance_dir=None) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = copy.deepcopy(policy).requires_grad_(False)
    guidance = AutoModelForCausalLM.from_pretrained(guidance_dir, dtype=torch.float32) if guidance_dir else None
    opt = torch.optim.AdamW(policy.parameters(), lr=LR, eps=EPS, weight_decay=0.0, foreach=False)
    for _ in range(steps):
        opt.zero_grad()
        independent_loss(policy, ref, guidance, rows, pcfg, tok).backward()
        opt.step()
    return {k: v.detach() for k, v in policy.state_dict().items()}


def run_steps(cfg, model_dir, batch, tmp_path, steps, precompute=False):
    """(exported weights after ``steps`` train_pairs calls through the real Ray ranks, last metrics)."""
    from rl.trainer_group import TrainerGroup

    group = TrainerGroup(cfg, model_dir, 10)
    try:
        if precompute:
            batch = dict(batch, ref_logp=group.reference_logp(batch))
        for step in range(steps):
            metrics = group.train_pairs(batch, step)
        out = tmp_path / f"export_{len(list(tmp_path.iterdir()))}"
        group.export_hf(str(out), model_dir)
    finally:
        group.shutdown()
    return load_file(str(out / "model.safetensors")), metrics


def assert_weights(got, want, start):
    assert max(float((want[k] - start[k]).abs().max()) for k in got) > 1e-3  # the steps did something
    for k in got:
        torch.testing.assert_close(got[k], want[k], atol=3e-6, rtol=1e-4, msg=k)


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def dpo_one_rank(tiny_model_dir, ray_local, tok, tmp_path_factory):
    cfg = cfg_for("dpo")
    rows = make_pairs()
    got = run_steps(cfg, tiny_model_dir, train_batch(rows, tok, cfg.preference), tmp_path_factory.mktemp("d1"), 2)
    return rows, cfg, got


def test_two_ranks_uneven_pairs_equal_one_rank_and_independent_adam(dpo_one_rank, tiny_model_dir, tok, tmp_path):
    """3 pairs over 2 ranks (2 + 1), one pair per micro-batch (rank 1 adds a padding pair), 2 steps."""
    rows, cfg1, (one, m1) = dpo_one_rank
    cfg2 = cfg_for("dpo", **{"trainer.num_ranks": 2, "trainer.micro_batch_size": 2})
    two, m2 = run_steps(cfg2, tiny_model_dir, train_batch(rows, tok, cfg2.preference), tmp_path, 2)
    start = load_file(f"{tiny_model_dir}/model.safetensors")
    want = expected_weights(tiny_model_dir, rows, cfg1.preference, tok, 2)
    assert_weights(one, want, start)
    assert_weights(two, want, start)
    for k in ("train/loss", "train/reward_accuracy", "train/reward_margin", "train/grad_norm", "batch/pairs"):
        assert m2[k] == pytest.approx(m1[k], rel=1e-4, abs=1e-7), k
    assert m1["batch/pairs"] == 3 and m1["train/reward_margin"] != 0


def test_precomputed_reference_equals_on_the_fly(dpo_one_rank, tiny_model_dir, tok, tmp_path):
    """Reference log-probs computed once over the pairs in another order and padding, stored per response
    token, scattered back by offset: the same two updates as the on-the-fly pass."""
    from rl.loops.dpo import precompute_reference

    rows, cfg, (on_the_fly, _) = dpo_one_rank
    from rl.trainer_group import TrainerGroup

    group = TrainerGroup(cfg, tiny_model_dir, 10)
    try:
        pairs = PairSet([rows[2], rows[0], rows[1]], {}, "x", "train", EOS)  # another order / padding width
        batcher = PairBatcher(tok, cfg.preference)
        store = precompute_reference(group, pairs, batcher, chunk_pairs=2)
        order = [1, 2, 0]  # positions in ``pairs`` of rows 0, 1, 2
        collated = pairs.collate(order)
        batch = batcher(collated, store.batch(order, collated["completion_ids"].shape[1]))
        assert batch["ref_logp"].abs().sum() > 0
        # held-out metrics before training: pi = pi_ref, every implicit reward is 0, no pair is 'won'
        m = group.eval_pairs(batch)
        assert m["eval/pairs"] == 3
        assert m["eval/reward_margin"] == pytest.approx(0.0, abs=1e-6) and m["eval/reward_accuracy"] == 0.0
        assert m["eval/dpo_loss"] == pytest.approx(float(-F.logsigmoid(torch.tensor(0.0))), rel=1e-5)
        for step in range(2):
            group.train_pairs(batch, step)
        out = tmp_path / "export"
        group.export_hf(str(out), tiny_model_dir)
    finally:
        group.shutdown()
    got = load_file(str(out / "model.safetensors"))
    for k in got:
        torch.testing.assert_close(got[k], on_the_fly[k], atol=2e-6, rtol=1e-4, msg=k)


@pytest.fixture(scope="module")
def guidance_dir(tiny_model_dir, tmp_path_factory):
    """A guidance model pi_hat that differs from the reference (the tiny model, perturbed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("guidance")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("loss", ["tgdpo", "treg", "cdpo"])
def test_zero3_two_ranks_equal_independent_adam(loss, tiny_model_dir, ray_local, tok, guidance_dir, tmp_path):
    """ZeRO-3 on 2 ranks (parameters, reference and guidance partitioned), uneven pairs, 2 steps."""
    over = {"trainer.num_ranks": 2, "trainer.micro_batch_size": 2, "trainer.zero_stage": 3}
    if loss == "tgdpo":
        over["dpo.guidance_model"] = guidance_dir
    cfg = cfg_for(loss, **over)
    rows = make_pairs()
    got, m = run_steps(cfg, tiny_model_dir, train_batch(rows, tok, cfg.preference), tmp_path, 2)
    want = expected_weights(tiny_model_dir, rows, cfg.preference, tok, 2,
                            guidance_dir if loss == "tgdpo" else None)
    assert_weights(got, want, load_file(f"{tiny_model_dir}/model.safetensors"))
    if loss == "treg":
        assert m["train/treg_reg"] != 0
    if loss == "tgdpo":
        assert "train/tgdpo_negative_weights_per_pair" in m


def test_tdpo2_zero3_equals_zero0_and_independent_adam(tiny_model_dir, ray_local, tok, tmp_path):
    """TDPO2 (full-vocabulary KL from the policy's and the reference's hidden states and heads) on 2 ranks under
    ZeRO-0 and ZeRO-3 (heads gathered for the loss and its backward): the same 2 updates, equal to autograd
    over full logits. The second step has pi != pi_ref, so the KL term has a gradient."""
    rows = make_pairs()
    results = []
    for stage in (0, 3):
        # the same forward on both sides (ZeRO-3 has no shared-prompt forward): the KL metrics are small
        # differences of near-equal sums, which another summation order moves by ~1e-4 relative
        cfg = cfg_for("tdpo2", **{"trainer.num_ranks": 2, "trainer.micro_batch_size": 2, "trainer.zero_stage": stage,
                                  "trainer.share_prompt_forward": False})
        results.append(run_steps(cfg, tiny_model_dir, train_batch(rows, tok, cfg.preference), tmp_path, 2))
    (z0, m0), (z3, m3) = results
    for k in z0:
        torch.testing.assert_close(z3[k], z0[k], atol=2e-6, rtol=1e-4, msg=k)
    for k in ("train/loss", "train/grad_norm", "train/tdpo_seq_kl_rejected", "train/reward_margin"):
        assert m3[k] == pytest.approx(m0[k], rel=1e-4, abs=1e-8), k
    assert m0["train/tdpo_seq_kl_chosen"] > 0 and m0["train/tdpo_seq_kl_rejected"] > 0
    want = expected_weights(tiny_model_dir, rows, cfg.preference, tok, 2)
    assert_weights(z0, want, load_file(f"{tiny_model_dir}/model.safetensors"))


def test_lora_reference_is_the_base_with_adapters_off(tiny_model_dir, tok):
    """Under LoRA no reference copy is loaded: reference statistics (log-probs, TDPO's hidden states and head)
    come from the policy with its adapters disabled, and stay put while the adapters train."""
    from rl.engine import PolicyEngine
    from rl.metrics import RankMetrics
    from rl.objectives.base import Stat

    cfg = cfg_for("tdpo2", **{"model.lora.rank": 4, "trainer.lr": 1e-2, "trainer.adam_eps": 1e-8})
    eng = PolicyEngine(cfg, tiny_model_dir, 0, 1, "127.0.0.1", 29483, 10, reference=True)
    assert "reference" not in eng.models
    obj = PreferenceObjective(cfg.preference)
    b = train_batch(make_pairs(), tok, cfg.preference)
    m = b["loss_mask"].bool()

    def prepared():
        out = dict(b)
        obj.prepare(eng, out)
        return out

    first = prepared()
    policy = eng.stats(b, [Stat("p", "policy", "logp", temperature=1.0)])["p"]
    torch.testing.assert_close(first["ref_logp"][m], policy[m])  # LoRA B starts at 0: pi = pi_ref
    metrics = RankMetrics()
    for _ in range(2):
        mb = prepared()
        eng.train_step([(obj, [mb], obj.norm_counts(mb))], metrics)
    again = prepared()
    torch.testing.assert_close(again["ref_logp"], first["ref_logp"])  # the reference did not move
    torch.testing.assert_close(again["ref_hidden"], first["ref_hidden"])
    moved = eng.stats(b, [Stat("p", "policy", "logp", temperature=1.0)])["p"]
    assert (moved[m] - policy[m]).abs().max() > 1e-4  # the adapters trained
    assert metrics.export()["train/tdpo_seq_kl_rejected"][1] > 0  # second step: pi != pi_ref


def test_build_pairs_cli_plumbs_recipe_and_arguments(tmp_path, tiny_model_dir, monkeypatch):
    """`tokencredit build-pairs RECIPE overrides --out --n --limit --seed --rule` with a stand-in rollout pool."""
    import json

    import rl.setup
    from rl.cli import main
    from rollout.types import Completion

    class Pool:
        calls: list = []

        def generate(self, prompt_ids, sampling):
            self.calls.append(sampling)
            return [[Completion(i, [5, EOS], None, "ab" if k % 2 == 0 else "abc", "stop") for k in range(sampling.n)]
                    for i in range(len(prompt_ids))]

        def shutdown(self):
            pass

    pool = Pool()
    monkeypatch.setattr(rl.setup, "make_pool", lambda cfg, path, placement: pool)
    monkeypatch.setattr(rl.setup, "init_ray", lambda cfg: None)
    reward = REPO / "tests" / "e2e" / "pair_rewards.py"
    out = tmp_path / "p.jsonl"
    assert main(["build-pairs", "smoke", f"model.name_or_path={tiny_model_dir}",
                 f"rewards.functions=[{{name: '{reward}:even_length'}}]", "--out", str(out), "--n", "3",
                 "--limit", "5", "--seed", "4", "--rule", "default"]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 5 and pool.calls[0].n == 3
    assert all(r["chosen"] == "ab" and r["rejected"] == "abc" and r["seed"] == 4 and r["rule"] == "default"
               for r in rows)
