"""Bucketing and flat packing of named tensors (pure torch; runs on both ends of a sync).

A bucket is a list of (name, tensor) of at most ``bucket_bytes`` (a tensor larger
than that travels alone), counted in the dtype it is sent in: floating tensors are
cast to the engine's dtype while they are copied into the send buffer (one pass, no
intermediate copy). GPU backends pack a bucket into one flat uint8 buffer so that one
NCCL broadcast / one CUDA IPC handle moves it; the receiver unpacks views into that
buffer, without copies.
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


def wire_dtype(t: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    """The dtype ``t`` travels in: the engine dtype for floating tensors, its own otherwise."""
    return dtype if dtype is not None and t.is_floating_point() else t.dtype


def tensor_nbytes(t: torch.Tensor, dtype: torch.dtype | None = None) -> int:
    return t.numel() * wire_dtype(t, dtype).itemsize


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"unknown torch dtype name {name!r}")
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bucket_named_tensors(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int,
                         dtype: torch.dtype | None = None) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group tensors in order into buckets of at most ``bucket_bytes`` as sent (oversized ones alone)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {bucket_bytes} bytes (rollout.sync_bucket_mb)")
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor_nbytes(tensor, dtype)
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def _aligned(n: int) -> int:
    return (n + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


def plan_bucket(bucket: list[tuple[str, torch.Tensor]],
                dtype: torch.dtype | None = None) -> tuple[list[TensorMeta], int]:
    """Byte layout of a bucket in one flat buffer: (metadata, total bytes)."""
    metas, offset = [], 0
    for name, tensor in bucket:
        nbytes = tensor_nbytes(tensor, dtype)
        metas.append(TensorMeta(name, dtype_name(wire_dtype(tensor, dtype)), tuple(tensor.shape), offset, nbytes))
        offset = _aligned(offset + nbytes)
    return metas, offset


@torch.no_grad()
def pack_bucket(bucket: list[tuple[str, torch.Tensor]], device: torch.device | str | None = None,
                dtype: torch.dtype | None = None) -> tuple[torch.Tensor, list[TensorMeta]]:
    """Copy (and cast floating tensors to ``dtype``) a bucket into one flat uint8 tensor on ``device``."""
    metas, total = plan_bucket(bucket, dtype)
    device = device if device is not None else (bucket[0][1].device if bucket else "cpu")
    flat = torch.empty(max(total, 1), dtype=torch.uint8, device=device)
    for (_, dst), (_, tensor) in zip(unpack_bucket(flat, metas), bucket):
        dst.copy_(tensor)  # cast + move + gather strides, in one pass
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
