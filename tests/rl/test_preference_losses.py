"""DPO-family losses (rl/algorithms/preference.py, specs/dpo_methods.md).

* dpo / ipo / label-smoothed dpo against TRL's own DPOTrainer loss on a tiny Llama (value, parameter grads);
* every token-weighted variant collapses to DPO when its weights are 1;
* hand-worked numbers (different lengths, padding, a truncated row) per method: value and d loss / d logp.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from rl.algorithms.preference import PreferenceInputs
from rl.algorithms.preference_config import PREFERENCE_LOSS_NAMES, PreferenceConfig
from rl.algorithms.registry import PREFERENCE_LOSSES
from rl.credit.cdpo import cdpo_weights
from rl.credit.tgdpo import tgdpo_weights
from rl.credit.treg import treg_token_reward

F64 = torch.float64


def loss_fn(name):
    from rl.algorithms import load_all

    load_all()
    return PREFERENCE_LOSSES[name]


def nls(z: float) -> float:
    """-log sigmoid(z)"""
    return math.log1p(math.exp(-z))


def sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# ----------------------------------------------------------------------------------------------------
# Hand-worked batch: B = 2 pairs, T = 4. Rows 0, 1 chosen; rows 2, 3 rejected.
#   row 0: 3 tokens (EOS last)          delta = [0.5, -1.0, 0.0]        sum -0.5
#   row 1: 4 tokens (EOS last)          delta = [0.2, -0.2, 0.5, -1.0]  sum -0.5
#   row 2: 2 tokens (EOS last)          delta = [-0.25, 0.5]            sum  0.25
#   row 3: 4 tokens, truncated (no EOS) delta = [-0.5, -0.5, 0.5, -2.0] sum -2.5
# Padding holds junk (77 / -33 / 9) so a missed mask shows up in every number.
# ----------------------------------------------------------------------------------------------------
PAD_POL, PAD_REF, PAD_X = 77.0, -33.0, 9.0
POL = [[-1.0, -2.0, -0.5], [-0.2, -0.3, -1.0, -2.0], [-3.0, -1.0], [-0.7, -2.5, -0.1, -3.0]]
REF = [[-1.5, -1.0, -0.5], [-0.4, -0.1, -1.5, -1.0], [-2.75, -1.5], [-0.2, -2.0, -0.6, -1.0]]
DELTA = [[0.5, -1.0, 0.0], [0.2, -0.2, 0.5, -1.0], [-0.25, 0.5], [-0.5, -0.5, 0.5, -2.0]]
EOS_AT = [2, 3, 1, None]  # row 3 was cut at the length limit
H_DPO = [-0.5 - 0.25, -0.5 - (-2.5)]  # [-0.75, 2.0]
BETA = 0.1


def padded(rows, pad):
    return torch.tensor([r + [pad] * (4 - len(r)) for r in rows], dtype=F64)


def hand_inputs(pads=(PAD_POL, PAD_REF, PAD_X), **extra) -> PreferenceInputs:
    mask = padded([[1.0] * len(r) for r in POL], 0.0)
    pol = padded(POL, pads[0]).requires_grad_(True)
    fields = {k: padded(v, pads[2]) if isinstance(v, list) else v for k, v in extra.items()}
    return PreferenceInputs(policy_logp=pol, ref_logp=padded(REF, pads[1]), mask=mask, **fields)


def eos_mask() -> torch.Tensor:
    m = torch.zeros(4, 4, dtype=F64)
    for i, t in enumerate(EOS_AT):
        if t is not None:
            m[i, t] = 1.0
    return m


def expected_grad(weights, h, d_margin) -> torch.Tensor:
    """d sum_pairs loss / d logp_t = d_margin(h_i) * (+w_t on chosen, -w_t on rejected), 0 on padding."""
    g = torch.zeros(4, 4, dtype=F64)
    for row, w in enumerate(weights):
        pair, sign = row % 2, (1.0 if row < 2 else -1.0)
        for t, wt in enumerate(w):
            g[row, t] = sign * d_margin(h[pair]) * wt
    return g


def sigmoid_dmargin(beta, eps=0.0):
    """d/dh of -(1-eps) log s(beta h) - eps log s(-beta h)."""
    return lambda h: -(1 - eps) * beta * sig(-beta * h) + eps * beta * sig(beta * h)


def run(name, x, **cfg):
    per_pair, metrics = loss_fn(name)(x, PreferenceConfig(loss=name, **cfg))
    per_pair.sum().backward()
    return per_pair.detach(), metrics, x.policy_logp.grad


ONES = [[1.0] * len(r) for r in DELTA]


def test_dpo_hand_worked():
    per_pair, m, grad = run("dpo", hand_inputs(), beta=BETA)
    torch.testing.assert_close(per_pair, torch.tensor([nls(-0.075), nls(0.2)], dtype=F64))
    torch.testing.assert_close(grad, expected_grad(ONES, H_DPO, sigmoid_dmargin(BETA)))
    # rewards: beta * sum delta; chosen [-0.05, -0.05], rejected [0.025, -0.25]
    assert m["reward_chosen"].item() == pytest.approx(-0.05)
    assert m["reward_rejected"].item() == pytest.approx((0.025 - 0.25) / 2)
    assert m["reward_margin"].item() == pytest.approx((-0.075 + 0.2) / 2)
    assert m["reward_accuracy"].item() == pytest.approx(0.5)
    assert m["pairs"].item() == 2


def test_label_smoothed_dpo_hand_worked():
    eps = 0.2
    per_pair, _, grad = run("dpo", hand_inputs(), beta=BETA, label_smoothing=eps)
    want = [(1 - eps) * nls(BETA * h) + eps * nls(-BETA * h) for h in H_DPO]
    torch.testing.assert_close(per_pair, torch.tensor(want, dtype=F64))
    torch.testing.assert_close(grad, expected_grad(ONES, H_DPO, sigmoid_dmargin(BETA, eps)))


def test_ipo_hand_worked_length_normalised():
    per_pair, _, grad = run("ipo", hand_inputs(), beta=BETA)
    # pair 0: -0.5/3 - 0.25/2; pair 1: -0.5/4 - (-2.5)/4 = 0.5; target 1/(2 tau) = 5
    d0, d1 = -0.5 / 3 - 0.125, 0.5
    torch.testing.assert_close(per_pair, torch.tensor([(d0 - 5) ** 2, (d1 - 5) ** 2], dtype=F64))
    lens = [3, 4, 2, 4]
    want = torch.zeros(4, 4, dtype=F64)
    for row, n in enumerate(lens):
        d = (d0, d1)[row % 2]
        want[row, :n] = 2 * (d - 5) * (1.0 if row < 2 else -1.0) / n
    torch.testing.assert_close(grad, want)


# log pi_hat - log pi_ref
TG_GAP = [[2.0, 0.0, -4.0], [0.0, 10.0, 0.0, 0.0], [1.0, -2.0], [0.0, 0.0, 0.0, 30.0]]


def tg_inputs():
    guidance = [[r + g for r, g in zip(rr, gg)] for rr, gg in zip(REF, TG_GAP)]
    return hand_inputs(guidance_logp=guidance)


def test_tgdpo_hand_worked_with_a_negative_weight():
    # alpha * r_hat = 0.5 * 0.1 * gap; chosen 1 + that, rejected 1 - that
    w = [[1.1, 1.0, 0.8], [1.0, 1.5, 1.0, 1.0], [0.95, 1.1], [1.0, 1.0, 1.0, -0.5]]
    h = [(0.55 - 1.0) - (-0.2375 + 0.55), (0.2 - 0.3 + 0.5 - 1.0) - (-0.5 - 0.5 + 0.5 + 1.0)]
    assert h == pytest.approx([-0.7625, -1.1])
    per_pair, m, grad = run("tgdpo", tg_inputs(), beta=BETA, tgdpo_alpha=0.5)
    torch.testing.assert_close(per_pair, torch.tensor([nls(BETA * v) for v in h], dtype=F64))
    torch.testing.assert_close(grad, expected_grad(w, h, sigmoid_dmargin(BETA)))
    assert m["tgdpo_negative_weights"].item() == 1  # row 3's last token: 1 - 1.5
    assert m["tgdpo_clamped"].item() == 0
    # r_hat uses the run's beta (official) unless tgdpo_guidance_beta is set: alpha * beta_g is what counts
    per_pair2, _, _ = run("tgdpo", tg_inputs(), beta=BETA, tgdpo_alpha=0.25, tgdpo_guidance_beta=0.2)
    torch.testing.assert_close(per_pair2, per_pair)


def test_tgdpo_clamp_zeroes_negative_weights_and_counts_them():
    w = [[1.1, 1.0, 0.8], [1.0, 1.5, 1.0, 1.0], [0.95, 1.1], [1.0, 1.0, 1.0, 0.0]]
    h = [-0.7625, (0.2 - 0.3 + 0.5 - 1.0) - (-0.5 - 0.5 + 0.5)]
    per_pair, m, grad = run("tgdpo", tg_inputs(), beta=BETA, tgdpo_alpha=0.5, tgdpo_clamp=True)
    torch.testing.assert_close(per_pair, torch.tensor([nls(BETA * v) for v in h], dtype=F64))
    torch.testing.assert_close(grad, expected_grad(w, h, sigmoid_dmargin(BETA)))
    assert m["tgdpo_clamped"].item() == 1


CE = [[0.9, 0.2, 1.0], [0.5, 0.5, 0.1, 0.7], [0.1, 0.6], [0.0, 0.8, 0.4, 0.3]]


@pytest.mark.parametrize(
    "only_neg,eos,w",
    [
        # official default: chosen unweighted, rejected 1 - p_CE, EOS weight 1 on both sides
        (True, "one", [[1, 1, 1], [1, 1, 1, 1], [0.9, 1.0], [1.0, 0.2, 0.6, 0.7]]),
        # EOS scored like any token (row 3 has no EOS: same weights as above)
        (True, "score", [[1, 1, 1], [1, 1, 1, 1], [0.9, 0.4], [1.0, 0.2, 0.6, 0.7]]),
        # ablation: chosen weighted by p_CE, EOS still 1
        (False, "one", [[0.9, 0.2, 1.0], [0.5, 0.5, 0.1, 1.0], [0.9, 1.0], [1.0, 0.2, 0.6, 0.7]]),
    ],
)
def test_cdpo_hand_worked(only_neg, eos, w):
    h = []
    for pair in range(2):
        sw = sum(a * b for a, b in zip(w[pair], DELTA[pair]))
        sl = sum(a * b for a, b in zip(w[pair + 2], DELTA[pair + 2]))
        h.append(sw - sl)
    per_pair, m, grad = run("cdpo", hand_inputs(ce_prob=CE, eos_mask=eos_mask()), beta=BETA,
                            cdpo_only_neg=only_neg, cdpo_eos_weight=eos)
    torch.testing.assert_close(per_pair, torch.tensor([nls(BETA * v) for v in h], dtype=F64))
    torch.testing.assert_close(grad, expected_grad(w, h, sigmoid_dmargin(BETA)))
    # the logged rewards stay the unweighted beta * sum delta (official code)
    assert m["reward_margin"].item() == pytest.approx((-0.075 + 0.2) / 2)
    if (only_neg, eos) == (True, "one"):
        assert h == pytest.approx([-0.775, 1.2])


def test_cdpo_default_needs_the_eos_mask():
    with pytest.raises(ValueError, match="eos_mask"):
        loss_fn("cdpo")(hand_inputs(ce_prob=CE), PreferenceConfig(loss="cdpo"))


KL = [[0.1, 0.2, 0.3], [0.0, 0.5, 0.5, 1.0], [0.4, 0.6], [1.0, 1.0, 1.0, 1.0]]  # SeqKL: w [0.6, 2], l [1, 4]


@pytest.mark.parametrize("name,z,dkl_w,dkl_l", [
    # tdpo1: z = h - (KL_l - KL_w); dz/dKL_w = +1, dz/dKL_l = -1
    ("tdpo1", [-0.75 - 0.4, 2.0 - 2.0], 1.0, -1.0),
    # tdpo2, alpha 0.5: z = h - 0.5 (KL_l - sg KL_w); no gradient into the chosen KL
    ("tdpo2", [-0.75 - 0.2, 2.0 - 1.0], 0.0, -0.5),
])
def test_tdpo_hand_worked(name, z, dkl_w, dkl_l):
    kl = padded(KL, PAD_X).requires_grad_(True)
    x = hand_inputs(ref_kl=kl)
    per_pair, m, grad = run(name, x, beta=BETA, tdpo_alpha=0.5)
    torch.testing.assert_close(per_pair, torch.tensor([nls(BETA * v) for v in z], dtype=F64))
    torch.testing.assert_close(grad, expected_grad(ONES, z, sigmoid_dmargin(BETA)))
    want = torch.zeros(4, 4, dtype=F64)
    for row, k in enumerate(KL):
        want[row, : len(k)] = sigmoid_dmargin(BETA)(z[row % 2]) * (dkl_w if row < 2 else dkl_l)
    torch.testing.assert_close(kl.grad, want)
    assert m["tdpo_seq_kl_chosen"].item() == pytest.approx(1.3)
    assert m["tdpo_seq_kl_rejected"].item() == pytest.approx(2.5)


RHAT = [[0.25, -0.25, 0.1], [0.0, 0.4, -0.1, 0.2], [-0.3, 0.2], [0.1, 0.1, -0.4, 0.0]]


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_treg_hand_worked(reduction):
    alpha = 0.25
    # L_REG = -beta * sum_t r_hat_t log pi_t: rows [-0.02, 0.042, -0.07, 0.028] (sum)
    reg = [-0.1 * sum(r * p for r, p in zip(rr, pp)) for rr, pp in zip(RHAT, POL)]
    assert reg == pytest.approx([-0.02, 0.042, -0.07, 0.028])
    lens = [3, 4, 2, 4]
    if reduction == "mean":
        reg = [v / n for v, n in zip(reg, lens)]
    wseq = [sig(-BETA * h) for h in H_DPO]  # sigma(r_l - r_w)
    want = [nls(BETA * H_DPO[i]) + alpha * wseq[i] * (reg[i] + reg[i + 2]) for i in range(2)]
    per_pair, m, grad = run("treg", hand_inputs(token_reward=RHAT), beta=BETA, treg_alpha=alpha,
                            treg_token_reduction=reduction)
    torch.testing.assert_close(per_pair, torch.tensor(want, dtype=F64))
    g = expected_grad(ONES, H_DPO, sigmoid_dmargin(BETA))  # w is a constant: only the DPO term and L_REG
    for row, rr in enumerate(RHAT):
        for t, r in enumerate(rr):
            g[row, t] += alpha * wseq[row % 2] * (-BETA * r) / (lens[row] if reduction == "mean" else 1)
    torch.testing.assert_close(grad, g)
    assert m["treg_weight"].item() == pytest.approx(sum(wseq) / 2)


def test_treg_weight_with_gradient_differs():
    x1, x2 = hand_inputs(token_reward=RHAT), hand_inputs(token_reward=RHAT)
    _, _, g_detached = run("treg", x1, beta=BETA)
    _, _, g_live = run("treg", x2, beta=BETA, treg_detach_weight=False)
    assert not torch.allclose(g_detached, g_live)


@pytest.mark.parametrize("name", PREFERENCE_LOSS_NAMES)
def test_non_finite_padding_never_reaches_loss_or_gradient(name):
    extra = {"guidance_logp": [[r + g for r, g in zip(rr, gg)] for rr, gg in zip(REF, TG_GAP)], "ce_prob": CE,
             "token_reward": RHAT, "ref_kl": KL}
    clean, _, clean_grad = run(name, hand_inputs(pads=(0.0, 0.0, 0.0), eos_mask=eos_mask(), **extra))
    junk = (math.nan, -math.inf, math.nan)
    dirty, _, dirty_grad = run(name, hand_inputs(pads=junk, eos_mask=eos_mask(), **extra))
    torch.testing.assert_close(dirty, clean)
    torch.testing.assert_close(dirty_grad, clean_grad)


# ----------------------------------------------------------------------------------------------------
# Every variant is DPO when its weights are 1 (random batch, value and gradient).
# ----------------------------------------------------------------------------------------------------


def random_batch(seed=0, b=3, t=7):
    gen = torch.Generator().manual_seed(seed)
    lens = torch.randint(1, t + 1, (2 * b,), generator=gen)
    mask = (torch.arange(t)[None, :] < lens[:, None]).to(F64)
    pol = (-torch.rand(2 * b, t, generator=gen, dtype=F64) * 3).requires_grad_(True)
    ref = -torch.rand(2 * b, t, generator=gen, dtype=F64) * 3
    return pol, ref, mask, gen


def dpo_reference(seed, **cfg):
    pol, ref, mask, _ = random_batch(seed)
    per_pair, _ = loss_fn("dpo")(PreferenceInputs(pol, ref, mask), PreferenceConfig(loss="dpo", **cfg))
    per_pair.sum().backward()
    return per_pair.detach(), pol.grad


def variant(seed, name, extra, **cfg):
    pol, ref, mask, gen = random_batch(seed)
    fields = extra(pol, ref, mask, gen)
    x = PreferenceInputs(pol, ref, mask, **fields)
    per_pair, _ = loss_fn(name)(x, PreferenceConfig(loss=name, **cfg))
    per_pair.sum().backward()
    return per_pair.detach(), pol.grad


def _rand_like(mask, gen, lo=-1.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(mask.shape, generator=gen, dtype=F64)


def _ce(pol, ref, mask, gen):
    p = torch.rand(mask.shape, generator=gen, dtype=F64)
    b = mask.shape[0] // 2
    p[b:] = 0.0  # rejected p_CE = 0 -> weight 1
    return {"ce_prob": p, "eos_mask": torch.zeros_like(mask)}


def _ce_both(pol, ref, mask, gen):
    p = torch.ones_like(mask)
    p[mask.shape[0] // 2:] = 0.0  # chosen weight p_CE = 1, rejected 1 - 0
    return {"ce_prob": p, "eos_mask": torch.zeros_like(mask)}


VARIANTS = [
    ("tgdpo alpha=0", "tgdpo", lambda p, r, m, g: {"guidance_logp": _rand_like(m, g, -5, 0)},
     {"tgdpo_alpha": 0.0}),
    ("tgdpo pi_hat=ref", "tgdpo", lambda p, r, m, g: {"guidance_logp": r.clone()}, {"tgdpo_alpha": 2.0}),
    ("cdpo p_CE(rej)=0", "cdpo", _ce, {}),
    ("cdpo chosen p_CE=1", "cdpo", _ce_both, {"cdpo_only_neg": False}),
    ("treg alpha=0", "treg", lambda p, r, m, g: {"token_reward": _rand_like(m, g, -0.5, 0.5)},
     {"treg_alpha": 0.0}),
    ("treg r_hat=0", "treg", lambda p, r, m, g: {"token_reward": torch.zeros_like(m)}, {"treg_alpha": 0.5}),
    ("tdpo1 KL=0", "tdpo1", lambda p, r, m, g: {"ref_kl": torch.zeros_like(m)}, {}),
    ("tdpo2 KL=0", "tdpo2", lambda p, r, m, g: {"ref_kl": torch.zeros_like(m)}, {}),
    ("tdpo2 alpha=0", "tdpo2", lambda p, r, m, g: {"ref_kl": _rand_like(m, g, 0, 2)}, {"tdpo_alpha": 0.0}),
    ("dpo weight=1", "dpo", lambda p, r, m, g: {"weight": torch.ones_like(m)}, {}),
]


@pytest.mark.parametrize("label,name,extra,cfg", VARIANTS, ids=[v[0] for v in VARIANTS])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_variant_reduces_to_dpo(label, name, extra, cfg, smoothing):
    want, want_grad = dpo_reference(3, beta=0.3, label_smoothing=smoothing)
    got, got_grad = variant(3, name, extra, beta=0.3, label_smoothing=smoothing, **cfg)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got_grad, want_grad)


@pytest.mark.parametrize("name", PREFERENCE_LOSS_NAMES)
def test_per_pair_losses_do_not_depend_on_the_other_pairs(name):
    """No mean inside: pairs {0, 2} and {1} scored apart give the same per-pair values as together."""
    pol, ref, mask, gen = random_batch(7)
    extra = {"guidance_logp": _rand_like(mask, gen, -4, 0), "ce_prob": _rand_like(mask, gen, 0, 1),
             "token_reward": _rand_like(mask, gen, -0.5, 0.5), "ref_kl": _rand_like(mask, gen, 0, 1),
             "eos_mask": torch.zeros_like(mask)}
    cfg = PreferenceConfig(loss=name, tgdpo_alpha=1.0)
    whole, _ = loss_fn(name)(PreferenceInputs(pol, ref, mask, **extra), cfg)
    parts = []
    for pairs in ([0, 2], [1]):
        rows = pairs + [p + 3 for p in pairs]
        sub = {k: v[rows] for k, v in extra.items()}
        parts.append(loss_fn(name)(PreferenceInputs(pol[rows], ref[rows], mask[rows], **sub), cfg)[0])
    torch.testing.assert_close(whole, torch.stack([parts[0][0], parts[1][0], parts[0][1]]))


def test_nonunit_weights_do_change_the_loss():
    """The reductions above are not vacuous: a non-zero alpha moves TGDPO away from DPO."""
    want, _ = dpo_reference(3, beta=0.3)
    got, _ = variant(3, "tgdpo", VARIANTS[0][2], beta=0.3, tgdpo_alpha=0.5)
    assert not torch.allclose(got, want)


# ----------------------------------------------------------------------------------------------------
# Inputs, config and registry
# ----------------------------------------------------------------------------------------------------


def test_inputs_validation_names_the_field():
    pol, ref, mask, _ = random_batch(0)
    with pytest.raises(ValueError, match="ref_logp"):
        PreferenceInputs(pol, ref[:, :3], mask)
    with pytest.raises(ValueError, match="even"):
        PreferenceInputs(pol[:5], ref[:5], mask[:5])
    with pytest.raises(ValueError, match="guidance_logp"):
        PreferenceInputs(pol, ref, mask, guidance_logp=ref[:2])
    x = PreferenceInputs(pol, ref, mask)
    for name, field_name in [("tgdpo", "guidance_logp"), ("cdpo", "ce_prob"), ("treg", "token_reward"),
                             ("tdpo1", "ref_kl"), ("tdpo2", "ref_kl")]:
        with pytest.raises(ValueError, match=field_name):
            loss_fn(name)(x, PreferenceConfig(loss=name))


def test_registry_matches_config_choices():
    loss_fn("dpo")
    assert set(PREFERENCE_LOSSES) == set(PREFERENCE_LOSS_NAMES)


@pytest.mark.parametrize("kwargs,key", [
    ({"loss": "simpo"}, "preference.loss"),
    ({"beta": 0.0}, "preference.beta"),
    ({"label_smoothing": 0.5}, "preference.label_smoothing"),
    ({"label_smoothing": -0.1}, "preference.label_smoothing"),
    ({"loss": "ipo", "label_smoothing": 0.1}, "preference.label_smoothing"),
    ({"tdpo_alpha": -1.0}, "preference.tdpo_alpha"),
    ({"tgdpo_alpha": -0.5}, "preference.tgdpo_alpha"),
    ({"tgdpo_guidance_beta": 0.0}, "preference.tgdpo_guidance_beta"),
    ({"cdpo_beta_ce": -1.0}, "preference.cdpo_beta_ce"),
    ({"cdpo_eos_weight": "zero"}, "preference.cdpo_eos_weight"),
    ({"treg_alpha": -0.25}, "preference.treg_alpha"),
    ({"treg_token_reduction": "max"}, "preference.treg_token_reduction"),
    ({"chunk_tokens": 0}, "preference.chunk_tokens"),
])
def test_config_check_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        PreferenceConfig(**kwargs)


def test_config_defaults_follow_the_spec():
    c = PreferenceConfig()
    assert (c.loss, c.beta, c.label_smoothing) == ("dpo", 0.1, 0.0)
    assert (c.tdpo_alpha, c.tgdpo_alpha, c.tgdpo_clamp, c.tgdpo_guidance_beta) == (0.5, 0.5, False, None)
    assert (c.cdpo_only_neg, c.cdpo_beta_ce, c.cdpo_eos_weight) == (True, 1.0, "one")
    assert (c.treg_alpha, c.treg_token_reduction, c.treg_detach_weight) == (0.25, "sum", True)


# ----------------------------------------------------------------------------------------------------
# Weight providers (rl/credit/tgdpo.py, cdpo.py, treg.py)
# ----------------------------------------------------------------------------------------------------


def test_tgdpo_weights_are_constants_zero_on_padding():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.0, -2.0, 5.0], [-1.0, 5.0, 5.0]])
    guide = torch.tensor([[1.0, -2.0, 5.0], [-31.0, 0.0, 0.0]], requires_grad=True)
    w, n_neg = tgdpo_weights(guide, ref, mask, beta=0.1, alpha=0.5, clamp=False)
    # row 0 chosen: 1 + 0.05*[2, 0]; row 1 rejected: 1 - 0.05*(-30) = 2.5
    torch.testing.assert_close(w, torch.tensor([[1.1, 1.0, 0.0], [2.5, 0.0, 0.0]]))
    assert not w.requires_grad and int(n_neg) == 0


def test_cdpo_weights_reject_scores_outside_unit_interval():
    mask = torch.ones(2, 2)
    with pytest.raises(ValueError, match="ce_prob"):
        cdpo_weights(torch.tensor([[0.5, 0.5], [1.5, 0.5]]), mask, only_neg=True)
    # padding may hold anything
    w = cdpo_weights(torch.tensor([[0.5, 7.0], [0.25, -3.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]),
                     only_neg=True)
    torch.testing.assert_close(w, torch.tensor([[1.0, 0.0], [0.75, 0.0]]))


def test_treg_token_reward_by_hand():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    better = torch.tensor([[math.log(3.0), -1.0, 0.0, 9.0]], requires_grad=True)
    worse = torch.tensor([[0.0, -1.0, math.log(3.0), -9.0]])
    r = treg_token_reward(better, worse, mask)
    # sigma(ln 3) = 3/4, sigma(0) = 1/2, sigma(-ln 3) = 1/4; minus 1/2; padding 0
    torch.testing.assert_close(r, torch.tensor([[0.25, 0.0, -0.25, 0.0]]))
    assert not r.requires_grad


# ----------------------------------------------------------------------------------------------------
# Against TRL 1.16's DPOTrainer (an independent implementation), tiny random Llama.
# ----------------------------------------------------------------------------------------------------

# prompt / chosen / rejected token ids; 2 = EOS. The collator's max_length cuts the last rejected row.
EXAMPLES = [
    {"prompt_ids": [5, 6, 7], "chosen_ids": [8, 9, 2], "rejected_ids": [10, 2]},
    {"prompt_ids": [11, 12], "chosen_ids": [13, 2], "rejected_ids": [14, 15, 16, 2]},
    {"prompt_ids": [17, 18, 19, 20], "chosen_ids": [21, 22, 23, 24, 2],
     "rejected_ids": [25, 26, 27, 28, 29, 30, 2]},
]
MAX_LEN = 10


@pytest.fixture(scope="module")
def tiny_models():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rl.models import resolve_model, tiny_llama_config

    cfg = tiny_llama_config(vocab_size=512, hidden=64, layers=1, heads=2)
    torch.manual_seed(0)
    policy = AutoModelForCausalLM.from_config(cfg)
    torch.manual_seed(1)
    ref = AutoModelForCausalLM.from_config(cfg)
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    return policy, ref, tok


def trl_loss_and_grads(policy, ref, tok, batch, tmp_path, **dpo_args):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    # bf16 defaults to True in DPOConfig: the prepared reference would run under bf16 autocast
    args = DPOConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False,
                     disable_dropout=True, **dpo_args)
    ds = Dataset.from_dict({"prompt": ["a"], "chosen": [" b"], "rejected": [" c"]})  # unused; required
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.detach(), grads, metrics


def completion_only(per_position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """TRL's [2B, L-1] shifted layout -> our [2B, T] completion-only layout, right-padded (keeps grad)."""
    rows = [v[m.bool()] for v, m in zip(per_position, mask)]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)


def our_loss_and_grads(policy, ref, batch, name, **cfg):
    from rl.algorithms.logprobs import chunked_logprobs

    ids, att = batch["input_ids"], batch["attention_mask"]
    shift_mask = batch["completion_mask"][:, 1:].double()

    def token_logps(model):
        hidden = model.model(input_ids=ids, attention_mask=att).last_hidden_state
        lp, _ = chunked_logprobs(hidden[:, :-1], model.lm_head.weight, ids[:, 1:], chunk_tokens=7)
        return completion_only(lp, shift_mask)

    pol = token_logps(policy)
    with torch.no_grad():
        ref_lp = token_logps(ref)
    mask = completion_only(shift_mask, shift_mask)
    per_pair, metrics = loss_fn(name)(PreferenceInputs(pol, ref_lp, mask), PreferenceConfig(loss=name, **cfg))
    loss = per_pair.sum() / per_pair.shape[0]  # the caller's normaliser: global pair count
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}, metrics


@pytest.mark.parametrize("name,cfg,trl_args", [
    ("dpo", {"beta": 0.1}, {"beta": 0.1, "loss_type": ["sigmoid"]}),
    ("ipo", {"beta": 0.1}, {"beta": 0.1, "loss_type": ["ipo"]}),
    # TRL 1.16's "sigmoid" ignores label_smoothing. -(1-e) ls(bh) - e ls(-bh) = 2(1-e) sigmoid - (1-2e) robust
    # with robust = (-(1-e) ls(bh) + e ls(-bh)) / (1-2e): TRL's own terms, combined by its loss_weights.
    ("dpo", {"beta": 0.3, "label_smoothing": 0.2},
     {"beta": 0.3, "label_smoothing": 0.2, "loss_type": ["sigmoid", "robust"], "loss_weights": [1.6, -0.6]}),
])
def test_matches_trl_dpo_trainer(tiny_models, tmp_path, name, cfg, trl_args):
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    policy, ref, tok = tiny_models
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id, max_length=MAX_LEN)(EXAMPLES)
    comp = batch["completion_mask"]
    assert comp[5].sum() < len(EXAMPLES[2]["rejected_ids"])  # the last rejected row really is truncated
    ours_pol, ours_ref = copy.deepcopy(policy), copy.deepcopy(ref)
    trl_loss, trl_grads, trl_metrics = trl_loss_and_grads(copy.deepcopy(policy), copy.deepcopy(ref), tok,
                                                          batch, tmp_path, **trl_args)
    loss, grads, metrics = our_loss_and_grads(ours_pol, ours_ref, batch, name, **cfg)
    assert loss.item() > 0.01
    torch.testing.assert_close(loss.float(), trl_loss.float(), rtol=1e-5, atol=1e-6)
    assert set(grads) == set(trl_grads)
    for n in grads:
        torch.testing.assert_close(grads[n], trl_grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert max(g.abs().max().item() for g in grads.values()) > 1e-4  # gradients are not trivially zero
    for ours, theirs in [("reward_chosen", "rewards/chosen"), ("reward_rejected", "rewards/rejected"),
                         ("reward_margin", "rewards/margins"), ("reward_accuracy", "rewards/accuracies")]:
        assert metrics[ours].item() == pytest.approx(trl_metrics[theirs], rel=1e-5, abs=1e-6)
