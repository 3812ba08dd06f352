"""Write a bucket as a safetensors file in place, casting while copying (cpu_shm's hot path).

``safetensors.torch.save_file`` needs cast copies of the tensors, serialises them
into one bytes object, then writes it: three passes over the model and ~2x its
size in fresh memory, whose page faults dominated the time of a sync here. This
writer lays out the file once and, when the previous sync left a file with the same
layout, copies each tensor straight into its mmap-ed pages (cast included), so a
steady-state sync touches the model's bytes once and faults no new pages.
Format: 8-byte little-endian header size, JSON header padded with spaces to 8 bytes,
then the tensors back to back (readers check that they tile the data exactly).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from rollout.weight_sync.packing import wire_dtype

SAFETENSORS_DTYPES = {
    torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def plan_file(bucket: list[tuple[str, torch.Tensor]], dtype: torch.dtype | None) -> tuple[bytes, list[tuple]]:
    """(8-byte size + padded header, [(data offset, wire dtype, tensor)]) for a bucket.

    Wider dtypes come first so that every tensor starts at a multiple of its element size.
    """
    order = sorted(bucket, key=lambda item: -wire_dtype(item[1], dtype).itemsize)  # stable within a width
    header: dict = {"__metadata__": {"format": "pt"}}
    entries, offset = [], 0
    for name, tensor in order:
        wdtype = wire_dtype(tensor, dtype)
        if wdtype not in SAFETENSORS_DTYPES:
            raise TypeError(f"sync_weights: tensor {name!r} has dtype {wdtype}, which safetensors cannot hold")
        nbytes = tensor.numel() * wdtype.itemsize
        header[name] = {"dtype": SAFETENSORS_DTYPES[wdtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + nbytes]}
        entries.append((offset, wdtype, tensor))
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, entries


@torch.no_grad()
def write_bucket_file(path: str, bucket: list[tuple[str, torch.Tensor]], dtype: torch.dtype | None = None) -> bool:
    """Write ``bucket`` to ``path`` as safetensors; True when an existing file's pages were reused."""
    prefix, entries = plan_file(bucket, dtype)
    data_bytes = sum(t.numel() * d.itemsize for _, d, t in entries)
    size = len(prefix) + data_bytes
    reuse = os.path.isfile(path) and os.path.getsize(path) == size
    if reuse:
        with open(path, "rb") as f:
            reuse = f.read(len(prefix)) == prefix
    with open(path, "r+b" if reuse else "w+b") as f:
        if not reuse:
            f.truncate(size)
            f.write(prefix)
            f.flush()
        if data_bytes:
            _copy_into(f.fileno(), size, len(prefix), entries)
    return reuse


def _copy_into(fileno: int, size: int, start: int, entries: list[tuple]) -> None:
    # MAP_POPULATE maps every page in one go: ~60x fewer page faults than touching them one by one
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
    mm = mmap.mmap(fileno, size, flags=flags)
    try:
        data = torch.frombuffer(mm, dtype=torch.uint8, count=size - start, offset=start)
        for offset, wdtype, tensor in entries:
            nbytes = tensor.numel() * wdtype.itemsize
            data[offset:offset + nbytes].view(wdtype).view(tensor.shape).copy_(tensor)  # cast + write, one pass
        del data  # the mmap cannot close while a tensor still points into it
    finally:
        mm.close()


TORCH_DTYPES = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@contextmanager
def mapped_bucket_files(paths: list[str]) -> Iterator[Iterator[tuple[str, torch.Tensor]]]:
    """Zero-copy (name, tensor) views of safetensors files (each file stays mapped while a view lives).

    The receiver's counterpart of ``write_bucket_file``: tensors are views into private
    (copy-on-write) mappings of the files, so the engine's weight loader copies each byte
    once, straight into its parameters, instead of after an extra copy out of the file.
    """
    maps: list[mmap.mmap] = []

    def views() -> Iterator[tuple[str, torch.Tensor]]:
        for path in paths:
            with open(path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
                size = os.fstat(f.fileno()).st_size
                if size == 8 + n:  # no tensor data (only empty tensors)
                    mm = None
                else:
                    mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
                    maps.append(mm)
            for name, entry in header.items():
                if name == "__metadata__":
                    continue
                begin, end = entry["data_offsets"]
                dtype, shape = TORCH_DTYPES[entry["dtype"]], entry["shape"]
                if end == begin:
                    yield name, torch.empty(shape, dtype=dtype)
                    continue
                raw = torch.frombuffer(mm, dtype=torch.uint8, count=end - begin, offset=8 + n + begin)
                yield name, raw.view(dtype).view(shape)

    try:
        yield views()
    finally:
        # no mm.close(): it would unmap under any view a loader still holds (a crash, not an error).
        # torch.frombuffer holds a reference to each mapping, so it closes when its last view is freed.
        maps.clear()
