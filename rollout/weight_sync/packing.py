"""Bucketing and flat packing of named tensors (pure torch; runs on both ends of a sync).

A bucket is a list of (name, tensor) of at most ``bucket_bytes`` (a tensor larger
than that travels alone). GPU backends pack a bucket into one flat uint8 buffer so
that one NCCL broadcast / one CUDA IPC handle moves it; the receiver unpacks views
into that buffer, without copies.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

# Offsets are rounded up to this many bytes so that every view has an aligned start
# (a uint8 slice can only be viewed as a dtype whose size divides its offset).
ALIGN_BYTES = 64


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # "bfloat16", "float32", ... (torch attribute name; picklable and readable)
    shape: tuple[int, ...]
    offset: int  # byte offset in the flat buffer
    nbytes: int


def tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype name {name!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bucket_named_tensors(named: Iterable[tuple[str, torch.Tensor]],
                         bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group tensors in order into buckets of at most ``bucket_bytes`` (oversized ones alone)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {bucket_bytes} bytes (rollout.sync_bucket_mb)")
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor_nbytes(tensor)
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def _aligned(n: int) -> int:
    return (n + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def plan_bucket(bucket: list[tuple[str, torch.Tensor]]) -> tuple[list[TensorMeta], int]:
    """Byte layout of a bucket in one flat buffer: (metadata, total bytes)."""
    metas, offset = [], 0
    for name, tensor in bucket:
        nbytes = tensor_nbytes(tensor)
        metas.append(TensorMeta(name, dtype_name(tensor.dtype), tuple(tensor.shape), offset, nbytes))
        offset = _aligned(offset + nbytes)
    return metas, offset


def pack_bucket(bucket: list[tuple[str, torch.Tensor]],
                device: torch.device | str | None = None) -> tuple[torch.Tensor, list[TensorMeta]]:
    """Copy a bucket into one flat uint8 tensor (on ``device``, default: the first tensor's)."""
    metas, total = plan_bucket(bucket)
    device = device if device is not None else (bucket[0][1].device if bucket else "cpu")
    flat = torch.empty(max(total, 1), dtype=torch.uint8, device=device)
    for meta, (_, tensor) in zip(metas, bucket):
        src = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        flat[meta.offset:meta.offset + meta.nbytes].copy_(src)
    return flat, metas


def unpack_bucket(flat: torch.Tensor, metas: list[TensorMeta]) -> list[tuple[str, torch.Tensor]]:
    """Views into ``flat`` with each tensor's dtype and shape (no copies)."""
    if flat.dtype != torch.uint8 or flat.dim() != 1:
        raise ValueError(f"expected a flat uint8 buffer, got {flat.dtype} of shape {tuple(flat.shape)}")
    out = []
    for meta in metas:
        if meta.offset + meta.nbytes > flat.numel():
            raise ValueError(f"tensor {meta.name!r} ends at byte {meta.offset + meta.nbytes}, "
                             f"past the {flat.numel()}-byte buffer")
        raw = flat[meta.offset:meta.offset + meta.nbytes]
        out.append((meta.name, raw.view(dtype_from_name(meta.dtype)).view(meta.shape)))
    return out
