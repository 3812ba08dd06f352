"""Data-parallel trainer ranks as Ray actors, driven by the controller.

Each rank holds a ``PolicyEngine``. The controller sends every rank the same
calls with its own slice of rows; every remote call has a timeout so a dead or
hung rank becomes an error naming the rank and the call, not a hang.
"""

from __future__ import annotations

import math
import socket

import ray
import torch

from rl.config import Config


class TrainerError(RuntimeError):
    pass


@ray.remote
class TrainerRank:
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int, master_addr: str,
                 master_port: int, total_optimizer_steps: int) -> None:
        from rl.engine import PolicyEngine

        self.rank = rank
        self.engine = PolicyEngine(cfg, model_path, rank, world_size, master_addr, master_port,
                                   total_optimizer_steps)

    def call(self, method: str, *args, **kwargs):
        return getattr(self.engine, method)(*args, **kwargs)

    def node(self) -> str:
        return socket.gethostname()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def split_rows(n: int, parts: int) -> list[slice]:
    """Contiguous, near-equal slices of n rows over parts (some may be empty)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (i < extra)
        out.append(slice(start, start + size))
        start += size
    return out


class TrainerGroup:
    def __init__(self, cfg: Config, model_path: str, total_optimizer_steps: int) -> None:
        t = cfg.trainer
        self.cfg, self.world = cfg, t.num_ranks
        self.timeout = cfg.cluster.timeout_s
        port = _free_port()
        self.ranks = [
            TrainerRank.options(num_cpus=t.num_cpus_per_rank, num_gpus=t.num_gpus_per_rank,
                                name=None).remote(cfg, model_path, r, self.world, "127.0.0.1", port,
                                                  total_optimizer_steps)
            for r in range(self.world)
        ]
        self._all("lm_head")  # waits for start-up; raises with the rank on failure

    # ------------------------------------------------------------------ plumbing
    def _get(self, refs: list, what: str) -> list:
        try:
            return ray.get(refs, timeout=self.timeout)
        except ray.exceptions.GetTimeoutError:
            raise TrainerError(f"trainer call {what!r} did not finish within cluster.timeout_s="
                               f"{self.timeout:.0f}s") from None
        except ray.exceptions.RayActorError as e:
            raise TrainerError(f"a trainer rank died during {what!r}: {e}") from None
        except ray.exceptions.RayTaskError as e:  # an exception inside the rank: re-raise its cause
            cause = e.cause if getattr(e, "cause", None) is not None else e
            raise TrainerError(f"trainer call {what!r} failed: {type(cause).__name__}: {cause}") from cause

    def _all(self, method: str, *args, **kwargs) -> list:
        return self._get([r.call.remote(method, *args, **kwargs) for r in self.ranks], method)

    def _rank0(self, method: str, *args, **kwargs):
        return self._get([self.ranks[0].call.remote(method, *args, **kwargs)], method)[0]

    # ------------------------------------------------------------------ API
    def _row_split(self, method: str, batch: dict, *args) -> list:
        """``method`` on every rank over its contiguous share of ``batch``'s rows, in row order."""
        n = batch["completion_ids"].shape[0]
        refs = [r.call.remote(method, {k: v[s] for k, v in batch.items()}, *args)
                for r, s in zip(self.ranks, split_rows(n, self.world)) if s.stop > s.start]
        return self._get(refs, method)

    def forward_stats(self, batch: dict, need_entropy: bool, need_hidden: bool, need_ref: bool) -> dict:
        parts = self._row_split("forward_stats", batch, need_entropy, need_hidden, need_ref)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def token_entropy(self, batch: dict, reference: bool) -> torch.Tensor:
        return torch.cat(self._row_split("token_entropy", batch, reference))

    def _rank_micro_batches(self, batch: dict, mask_key: str) -> list[list[dict]]:
        """Each rank's micro-batches of ``batch``. Every rank gets the same number (DeepSpeed
        steps in lockstep): a rank short of rows backprops zero-``mask_key`` copies of row 0."""
        n = batch["completion_ids"].shape[0]
        gas = max(1, math.ceil(n / (self.cfg.trainer.micro_batch_size * self.world)))
        per_rank = []
        for s in split_rows(n, self.world):
            rows = list(range(s.start, s.stop)) or [0]
            micro_batches = []
            for ms in split_rows(len(rows), gas):
                idx = rows[ms] if ms.stop > ms.start else rows[:1]
                mb = {k: v[idx] for k, v in batch.items()}
                if ms.stop <= ms.start or s.stop <= s.start:
                    mb[mask_key] = torch.zeros_like(mb[mask_key])
                micro_batches.append(mb)
            per_rank.append(micro_batches)
        return per_rank

    def train_mini_batch(self, batch: dict, ntp: dict | None = None) -> dict:
        """One optimizer step on every rank over ``batch`` (rows without loss tokens already removed).

        ``ntp`` (RMT): document rows with an ``ntp_mask``; their lambda * L_NTP joins the same step.
        """
        from rl.algorithms.aggregation import loss_counts

        global_tokens, global_seqs = loss_counts(batch["loss_mask"])
        rl_parts = self._rank_micro_batches(batch, "loss_mask")
        ntp_parts = self._rank_micro_batches(ntp, "ntp_mask") if ntp is not None else [None] * self.world
        ntp_tokens = float(ntp["ntp_mask"].sum()) if ntp is not None else 0.0
        refs = [r.call.remote("train_mini_batch", rl_mb, global_tokens, global_seqs, ntp_mb, ntp_tokens)
                for r, rl_mb, ntp_mb in zip(self.ranks, rl_parts, ntp_parts)]
        results = self._get(refs, "train_mini_batch")
        out = dict(results[0])
        if ntp is not None:  # the ranks' NLL sums -> the mean NLL over every NTP token
            out.pop("train/ntp_nll_sum", None)
            out["train/ntp_nll"] = sum(r["train/ntp_nll_sum"] for r in results) / max(ntp_tokens, 1.0)
        return out

    def lm_head(self):
        return self._rank0("lm_head")

    def named_weights(self) -> dict:
        return self._rank0("named_weights")

    def save(self, path: str, client_state: dict) -> None:
        self._all("save", path, client_state)

    def load(self, path: str) -> dict:
        return self._all("load", path)[0]

    def export_hf(self, path: str, tokenizer_path: str) -> None:
        self._all("export_hf", path, tokenizer_path)

    def shutdown(self) -> None:
        for r in self.ranks:
            ray.kill(r)
