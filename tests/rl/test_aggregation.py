"""Loss aggregation modes and their exactness across micro-batches and ranks (rl/algorithms/aggregation.py)."""

import pytest
import torch

from rl.algorithms.aggregation import AGGREGATIONS, aggregate, loss_counts, loss_scale_for_engine

F64 = torch.float64

# Per-token loss and mask; padding values (100, 7) must be ignored, row 2 is all padding.
#   token_mean              = (1+2+3+5+6) / 5 tokens                 = 17/5  = 3.4
#   seq_mean_token_mean     = (6/3 + 11/2) / 2 rows (row 2 excluded) = 3.75  (2.5 if row 2 counted)
#   seq_mean_token_sum_norm = 17 / (2 rows * max_len 8)              = 1.0625
LOSS = torch.tensor([[1.0, 2.0, 3.0, 100.0], [5.0, 6.0, 100.0, 100.0], [7.0, 7.0, 7.0, 7.0]], dtype=F64)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=F64)


def test_hand_worked_values():
    assert aggregate(LOSS, MASK, "token_mean").item() == pytest.approx(3.4)
    assert aggregate(LOSS, MASK, "seq_mean_token_mean").item() == pytest.approx(3.75)
    assert aggregate(LOSS, MASK, "seq_mean_token_sum_norm", max_len=8).item() == pytest.approx(1.0625)


def test_loss_counts_skip_padding_rows():
    assert loss_counts(MASK) == (5.0, 2.0)


def test_global_counts_divide_instead_of_local():
    assert aggregate(LOSS, MASK, "token_mean", global_tokens=10).item() == pytest.approx(1.7)
    assert aggregate(LOSS, MASK, "seq_mean_token_mean", global_seqs=3).item() == pytest.approx(2.5)
    assert aggregate(LOSS, MASK, "seq_mean_token_sum_norm", global_seqs=4, max_len=8).item() == pytest.approx(17 / 32)


def test_empty_minibatch_is_zero_not_nan():
    z = torch.zeros_like(MASK)
    for mode in AGGREGATIONS:
        out = aggregate(LOSS, z, mode, global_tokens=0, global_seqs=0, max_len=4)
        assert out.item() == 0.0
        assert aggregate(LOSS, z, mode, max_len=4).item() == 0.0


def _brute_force(loss, mask, mode, max_len):
    """Plain Python loops over the full mini-batch."""
    rows = [(loss[i].tolist(), mask[i].tolist()) for i in range(loss.shape[0])]
    tok = [(x, w) for lr, mr in rows for x, w in zip(lr, mr) if w > 0]
    kept = [[x for x, w in zip(lr, mr) if w > 0] for lr, mr in rows]
    kept = [k for k in kept if k]
    if mode == "token_mean":
        return sum(x for x, _ in tok) / len(tok)
    if mode == "seq_mean_token_mean":
        return sum(sum(k) / len(k) for k in kept) / len(kept)
    return sum(x for x, _ in tok) / (len(kept) * max_len)


@pytest.mark.parametrize("mode", sorted(AGGREGATIONS))
def test_micro_batches_and_ranks_sum_to_full_batch(mode):
    """OpenRLHF exactness: 2 ranks x 2 grad-accumulation micro-batches x 3 rows == one batch of 12."""
    torch.manual_seed(0)
    n, t, max_len, world, gas = 12, 6, 6, 2, 2
    lengths = torch.tensor([6, 1, 3, 0, 5, 2, 6, 4, 0, 1, 3, 2])  # uneven, with empty rows
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(F64)
    leaf = torch.randn(n, t, dtype=F64, requires_grad=True)
    full = aggregate(leaf, mask, mode, max_len=max_len)
    assert full.item() == pytest.approx(_brute_force(leaf.detach(), mask, mode, max_len), rel=1e-12)

    chunks = [slice(3 * k, 3 * k + 3) for k in range(world * gas)]  # rank r owns chunks 2r, 2r+1
    counts = [loss_counts(mask[c]) for c in chunks]  # all-reduce of per-micro-batch counts
    g_tok, g_seq = sum(c[0] for c in counts), sum(c[1] for c in counts)
    shares = [aggregate(leaf[c], mask[c], mode, global_tokens=g_tok, global_seqs=g_seq, max_len=max_len)
              for c in chunks]
    torch.testing.assert_close(sum(shares), full)

    # What DeepSpeed does: backward(loss) scales by 1/gas; the all-reduce averages over ranks.
    scale = loss_scale_for_engine(gas, world)
    engine = sum(
        sum(shares[r * gas + k] * scale / gas for k in range(gas)) for r in range(world)
    ) / world
    (g_engine,) = torch.autograd.grad(engine, leaf, retain_graph=True)
    (g_full,) = torch.autograd.grad(full, leaf)
    torch.testing.assert_close(g_engine, g_full)


def test_local_fallback_is_not_exact_for_uneven_micro_batches():
    # The reason global counts exist: averaging local token means weights short micro-batches up.
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=F64)
    loss = torch.tensor([[1.0, 1.0, 1.0, 1.0], [5.0, 0, 0, 0]], dtype=F64)
    local = (aggregate(loss[:1], mask[:1], "token_mean") + aggregate(loss[1:], mask[1:], "token_mean")) / 2
    assert local.item() == pytest.approx(3.0)  # (1 + 5) / 2
    assert aggregate(loss, mask, "token_mean").item() == pytest.approx(9 / 5)


def test_errors_name_the_problem():
    with pytest.raises(KeyError, match="algorithm.aggregation"):
        aggregate(LOSS, MASK, "sum")
    with pytest.raises(ValueError, match="max_len"):
        aggregate(LOSS, MASK, "seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="same"):
        aggregate(LOSS, MASK[:, :2], "token_mean")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        loss_scale_for_engine(0, 1)
    assert loss_scale_for_engine(4, 2) == 8.0
