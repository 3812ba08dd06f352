"""Bucketing and flat packing of named tensors (rollout.weight_sync.packing), against hand-worked layouts."""

from __future__ import annotations

import pytest
import torch

from rollout.weight_sync.packing import (
    ALIGN_BYTES,
    TensorMeta,
    bucket_named_tensors,
    pack_bucket,
    plan_bucket,
    unpack_bucket,
)


def _f32(numel: int) -> torch.Tensor:
    return torch.arange(numel, dtype=torch.float32)


def test_buckets_fill_in_order_and_oversized_tensors_travel_alone():
    # sizes 4, 8, 12, 16 bytes with a 12-byte budget: [a b] (12), [c] (12), [d] (16 > 12, alone)
    named = [("a", _f32(1)), ("b", _f32(2)), ("c", _f32(3)), ("d", _f32(4))]
    buckets = list(bucket_named_tensors(named, bucket_bytes=12))
    assert [[n for n, _ in b] for b in buckets] == [["a", "b"], ["c"], ["d"]]


def test_an_oversized_first_tensor_does_not_leave_an_empty_bucket():
    named = [("big", _f32(10)), ("small", _f32(1))]
    assert [[n for n, _ in b] for b in bucket_named_tensors(named, bucket_bytes=8)] == [["big"], ["small"]]


def test_bucket_size_must_be_positive():
    with pytest.raises(ValueError, match="sync_bucket_mb"):
        list(bucket_named_tensors([("a", _f32(1))], bucket_bytes=0))


def test_layout_aligns_every_offset():
    # 3 uint8 bytes at 0; the float32 pair starts at the next multiple of ALIGN_BYTES
    bucket = [("u", torch.zeros(3, dtype=torch.uint8)), ("f", _f32(2))]
    metas, total = plan_bucket(bucket)
    assert metas[0] == TensorMeta("u", "uint8", (3,), 0, 3)
    assert metas[1] == TensorMeta("f", "float32", (2,), ALIGN_BYTES, 8)
    assert total == 2 * ALIGN_BYTES


def test_pack_then_unpack_gives_the_same_tensors_as_views_of_one_buffer():
    torch.manual_seed(0)
    bucket = [
        ("w", torch.randn(3, 5).to(torch.bfloat16)),
        ("b", torch.randn(7)),
        ("ids", torch.tensor([[1, -2], [3, 4]], dtype=torch.int64)),
        ("scalar", torch.tensor(2.5)),
        ("empty", torch.zeros(0, 4)),
        ("strided", torch.randn(4, 6)[:, ::2]),  # not contiguous on the sender
    ]
    flat, metas = pack_bucket(bucket)
    assert flat.dtype == torch.uint8 and flat.dim() == 1
    out = unpack_bucket(flat, metas)
    assert [n for n, _ in out] == [n for n, _ in bucket]
    lo, hi = flat.data_ptr(), flat.data_ptr() + flat.numel()
    for (name, got), (_, want) in zip(out, bucket):
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert torch.equal(got, want), name
        if got.numel():
            assert lo <= got.data_ptr() < hi, f"{name} was copied instead of viewed"


def test_packing_casts_floating_tensors_only_and_sizes_buckets_as_sent():
    w, ids = torch.randn(4, 6, requires_grad=True), torch.arange(3)
    flat, metas = pack_bucket([("w", w[:, ::2]), ("ids", ids)], dtype=torch.bfloat16)
    assert [(m.dtype, m.nbytes) for m in metas] == [("bfloat16", 24), ("int64", 24)]
    out = dict(unpack_bucket(flat, metas))
    assert torch.equal(out["w"], w[:, ::2].detach().to(torch.bfloat16)) and torch.equal(out["ids"], ids)
    # 4 fp32 tensors of 8 bytes are 4 bytes each in bf16: two fit in an 8-byte bucket
    named = [(str(i), torch.zeros(2)) for i in range(4)]
    assert len(list(bucket_named_tensors(named, bucket_bytes=8, dtype=torch.bfloat16))) == 2
    assert len(list(bucket_named_tensors(named, bucket_bytes=8))) == 4


def test_unpack_refuses_metadata_past_the_buffer():
    flat, metas = pack_bucket([("x", _f32(4))])
    bad = [TensorMeta("x", "float32", (400,), 0, 1600)]
    with pytest.raises(ValueError, match="'x'"):
        unpack_bucket(flat, bad)
    with pytest.raises(ValueError, match="flat uint8"):
        unpack_bucket(flat.view(torch.float32), metas)
