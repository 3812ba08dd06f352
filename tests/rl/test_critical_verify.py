"""§3.3 rollout verification (rl/critical_verify.py) on a scripted pool whose correctness depends on the prefix:
the official critical-token rule applied to real per-prefix counts, forcing a different token there (never the
original), pass@k with and without, random positions, one generate call for all prefixes of a trajectory."""

from __future__ import annotations

import pytest
import torch

from rl.credit.critical import pass_at_k

BAD = 1000  # the token after which the scripted "model" always fails
ALTS = (1500, 1501)  # the only tokens the scripted next-token distribution allows besides the original one


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def scorer():
    from rewards.scorer import RewardScorer

    def ends_right(prompts, completions, **_):
        return [float(c.rstrip().endswith("RIGHT")) for c in completions]

    return RewardScorer([{"name": ends_right}])


def prompt_set(n=2):
    from rl.data import PromptRow, PromptSet

    return PromptSet([PromptRow(f"prompt {i}", [7 + i, 8, 9], "x", {}, index=i) for i in range(n)], 0, "hand")


class ScriptedPool:
    """RolloutPool stand-in. A prompt is x (3 tokens) + a response prefix. Continuations end in " RIGHT" or
    " WRONG": from a prefix holding BAD all fail; otherwise ``right_of(prefix_len)`` of the n succeed (all of
    them by default)."""

    def __init__(self, tok, right_of=None):
        self.tok, self.right_of, self.calls = tok, right_of, []

    def generate(self, prompt_ids, sampling):
        from rollout.types import Completion

        self.calls.append(([list(p) for p in prompt_ids], sampling))
        out = []
        for i, p in enumerate(prompt_ids):
            prefix = p[3:]
            right = 0 if BAD in prefix else (sampling.n if self.right_of is None else self.right_of(len(prefix)))
            group = []
            for j in range(sampling.n):
                text = " RIGHT" if j < right else " WRONG"
                ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                group.append(Completion(i, ids, None, text, "stop"))
            out.append(group)
        return out


def scripted_logits(prompt_ids, response_ids, positions):
    """Next-token logits at x + y_<i: the original token y_i is by far the likeliest, then ALTS; nothing else."""
    out = torch.full((len(positions), 49152), float("-inf"))
    for r, i in enumerate(positions):
        out[r, list(ALTS)] = 0.0
        out[r, response_ids[i]] = 8.0
    return out


def trajectory(prompt=0, response=(300, 301, 302, BAD, 304, 305)):
    from rl.critical_verify import Trajectory

    return Trajectory(prompt_index=prompt, prompt_ids=[7 + prompt, 8, 9], response_ids=list(response), pair_index=prompt)


def run(tok, pool, trajs, **kw):
    from rl.critical_verify import VerifyConfig, verify_critical_tokens
    from rollout.types import SamplingSpec

    vc = VerifyConfig(**{"rollouts": 8, "ks": [1, 4, 8], "random_positions": 1, "seed": 3, **kw})
    return verify_critical_tokens(pool, scorer(), prompt_set(), trajs, scripted_logits, tok, vc,
                                  SamplingSpec(temperature=0.7, top_p=0.9, max_tokens=16), "ends_right", 0.5)


def test_forced_alternatives_never_draw_the_original_token():
    from rl.critical_verify import forced_alternatives

    probs = torch.tensor([0.97, 0.01, 0.02, 0.0])
    g = torch.Generator().manual_seed(0)
    alt = forced_alternatives(probs, 0, 2000, g)
    assert alt.shape == (2000,) and 0 not in alt.tolist() and 3 not in alt.tolist()
    frac2 = (alt == 2).float().mean().item()
    assert abs(frac2 - 2 / 3) < 0.05  # renormalised over the remaining mass: 0.02 / 0.03
    with pytest.raises(ValueError, match="no other token"):
        forced_alternatives(torch.tensor([1.0, 0.0]), 0, 4, g)


def test_critical_token_found_and_forcing_recovers(tok):
    pool = ScriptedPool(tok)
    rep = run(tok, pool, [trajectory()])
    (t,) = rep["trajectories"]
    assert t["counts"] == [8, 8, 8, 0, 0, 0] and t["critical_index"] == 3  # the prefix ending at BAD fails
    assert t["critical_token_id"] == BAD
    # one generate call with all 6 prefixes (n = rollouts), then one with every forced prompt (n = 1)
    prefixes, s1 = pool.calls[0]
    assert len(prefixes) == 6 and s1.n == 8 and s1.temperature == 0.7 and s1.top_p == 0.9
    assert prefixes == [[7, 8, 9] + [300, 301, 302, BAD, 304, 305][: i + 1] for i in range(6)]
    forced, s2 = pool.calls[1]
    assert s2.n == 1 and len(forced) == 8 * 2  # critical + one random position, 8 alternatives each
    crit = [p for p in forced[:8]]
    assert all(p[:6] == [7, 8, 9, 300, 301, 302] and p[6] in ALTS and len(p) == 7 for p in crit)
    assert t["with"]["correct"] == 0 and t["without"]["correct"] == 8
    assert t["with"]["pass_at_k"] == {"1": 0.0, "4": 0.0, "8": 0.0}
    assert t["without"]["pass_at_k"] == {"1": 1.0, "4": 1.0, "8": 1.0}
    (rnd,) = t["random"]
    r = rnd["position"]
    assert r != 3 and 0 <= r < 6
    assert all(p[: 3 + r] == [7, 8, 9] + [300, 301, 302, BAD, 304, 305][:r] and p[3 + r] in ALTS for p in forced[8:])
    want = 8 if r < 3 else 0  # before BAD, every continuation succeeds; after it, none, forced or not
    assert rnd["with"]["correct"] == want and rnd["without"]["correct"] == want
    s = rep["summary"]
    assert s["trajectories"] == 1 and s["found"] == 1
    assert s["critical"]["without"]["1"] == 1.0 and s["critical"]["with"]["1"] == 0.0


def test_rule_on_counts_with_a_recovery(tok):
    """Counts by prefix length 1..6: 5 0 4 0 1 0 -> candidate 1, discarded at 2 (4 > 3), candidate 3 stands."""
    counts = {1: 5, 2: 0, 3: 4, 4: 0, 5: 1, 6: 0}
    pool = ScriptedPool(tok, right_of=lambda n: counts[n])
    rep = run(tok, pool, [trajectory(response=(300, 301, 302, 303, 304, 305))], random_positions=0)
    (t,) = rep["trajectories"]
    assert t["counts"] == [5, 0, 4, 0, 1, 0] and t["critical_index"] == 3
    assert t["with"]["pass_at_k"]["1"] == 0.0 and t["random"] == []
    assert t["without"]["correct"] == 0  # the scripted pool scores a forced prefix (4 tokens) like counts[4]
    assert rep["summary"]["random"]["with"] == {}


def test_no_critical_token_and_recover_threshold(tok):
    pool = ScriptedPool(tok, right_of=lambda n: 2)  # 2/8 correct everywhere: never 0
    rep = run(tok, pool, [trajectory(response=(300, 301, 302))], recover=3)
    (t,) = rep["trajectories"]
    assert t["critical_index"] is None and t["without"] is None and t["random"] == []
    assert rep["summary"]["found"] == 0
    pool = ScriptedPool(tok, right_of=lambda n: 2)
    (t,) = run(tok, pool, [trajectory(response=(300, 301, 302))], zero=2)["trajectories"]
    assert t["critical_index"] == 0  # zero=2 counts 2/8 as failing


def test_continuation_budget_is_cut_to_the_remaining_tokens(tok):
    from rl.critical_verify import _cut
    from rollout.types import Completion

    c = Completion(0, [11, 12, 13, 2], None, "abc", "stop")
    assert _cut(c, 2).token_ids == [11, 12] and _cut(c, 2).finish_reason == "length"
    assert _cut(c, 4) is c and _cut(c, 9) is c


def test_summary_pass_at_k_is_the_mean_over_trajectories(tok):
    pool = ScriptedPool(tok)
    rep = run(tok, pool, [trajectory(0), trajectory(1, (300, BAD, 302))], random_positions=0)
    a, b = rep["trajectories"]
    assert a["critical_index"] == 3 and b["critical_index"] == 1
    assert rep["summary"]["critical"]["without"]["4"] == pytest.approx(
        (pass_at_k(8, a["without"]["correct"], 4) + pass_at_k(8, b["without"]["correct"], 4)) / 2)


def test_hf_next_token_logits_match_a_direct_forward(tok, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from rl.critical_verify import HFNextToken

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    x, y = [1, 20, 30, 40], [50, 60, 70, 80, 90]
    got = HFNextToken(model)(x, y, [0, 2, 4])
    with torch.no_grad():
        for r, i in enumerate([0, 2, 4]):
            want = model(torch.tensor([x + y[:i]])).logits[0, -1].float()
            assert torch.allclose(got[r], want, atol=1e-4)
