"""Collectives among the trainer ranks (torch.distributed, set up by DeepSpeed), and their 1-rank no-ops.

Credit modules and objectives run on every rank over the rank's own groups; the few steps that
need the whole batch (D3S's cross-group selection and its global token top-K, exact loss
normalisers) exchange per-row or per-token *scalars* with these helpers, rank to rank. Nothing
sized by the model goes through them, and none of it goes through the driver.
"""

from __future__ import annotations

import torch


def world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _device() -> torch.device:
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def all_reduce(values: list[float], op: str = "sum") -> list[float]:
    """Element-wise sum or max of a short list of floats over all ranks (float64, exact for counts)."""
    if world() == 1 or not values:
        return list(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return t.cpu().tolist()


def all_gather_1d(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's 1-D ``local`` concatenated in rank order, this rank's offset in it).

    Lengths may differ between ranks; the result is identical on every rank, so a selection made
    from it (a max-variance subset, a top-K cut-off) is the same everywhere.
    """
    if world() == 1:
        return local, 0
    import torch.distributed as dist

    dev = _device()
    sizes = [int(s) for s in all_reduce_each(local.numel())]
    width = max(max(sizes), 1)
    buf = torch.zeros(width, dtype=local.dtype, device=dev)
    buf[: local.numel()] = local.to(dev)
    parts = [torch.empty_like(buf) for _ in sizes]
    dist.all_gather(parts, buf)
    out = torch.cat([p[:n] for p, n in zip(parts, sizes)]).to(local.device)
    return out, sum(sizes[: rank()])


def all_reduce_each(value: float) -> list[float]:
    """Every rank's scalar ``value``, in rank order."""
    if world() == 1:
        return [value]
    import torch.distributed as dist

    t = torch.zeros(world(), dtype=torch.float64, device=_device())
    t[rank()] = value
    dist.all_reduce(t)
    return t.cpu().tolist()
