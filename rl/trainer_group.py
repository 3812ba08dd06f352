"""The driver's handle on the data-parallel trainer ranks (Ray actors, rl/trainer_rank.py).

Start-up: the ranks are placed (rl/placement.py), rank 0 names the rendezvous — its node's IP and
a port free there — and every rank joins it. A step: each rank receives the token ids, masks and
rewards of its own whole groups (``shard_groups``) and returns a record of scalars, which the
driver reduces (rl/metrics.py). Nothing sized by the model comes back; ``received_bytes`` counts
what does. Every wait has a timeout (``cluster.timeout_s``) and reports what it waits for.
"""

from __future__ import annotations

import logging
import pickle
import time

import ray
import torch

from rl.config import Config
from rl.metrics import reduce_ranks
from rl.trainer_rank import TrainerRank, split_rows
from rollout.errors import death_cause

log = logging.getLogger(__name__)


class TrainerError(RuntimeError):
    pass


def shard_groups(group_id: torch.Tensor, parts: int) -> list[torch.Tensor]:
    """Row indices per rank: whole groups (contiguous, in order), near-equal group counts."""
    groups = torch.unique_consecutive(group_id)
    out = []
    for s in split_rows(groups.numel(), parts):
        keep = torch.isin(group_id, groups[s])
        out.append(keep.nonzero()[:, 0])
    return out


def shard_pairs(num_pairs: int, parts: int) -> list[torch.Tensor]:
    """Row indices per rank of an interleaved pair batch (rows 2i, 2i+1 = pair i): whole pairs, contiguous,
    near-equal pair counts (rl/objectives/preference.py)."""
    return [torch.arange(2 * s.start, 2 * s.stop) for s in split_rows(num_pairs, parts)]


class TrainerGroup:
    def __init__(self, cfg: Config, model_path: str, total_optimizer_steps: int, placement=None) -> None:
        t = cfg.trainer
        self.cfg, self.world = cfg, t.num_ranks
        self.timeout = cfg.cluster.timeout_s
        self.received_bytes = 0
        self.nodes: list[dict] = []
        self.dead = False  # a rank died: shutdown kills the rest at once (they may hang in a collective)
        actor = ray.remote(TrainerRank)
        self.ranks = [
            actor.options(num_cpus=t.num_cpus_per_rank, num_gpus=t.num_gpus_per_rank,
                          **(placement.trainer(r) if placement is not None else {})).remote(
                cfg, model_path, r, self.world, total_optimizer_steps)
            for r in range(self.world)
        ]
        try:
            self.nodes = self._all("identity", what="trainer ranks to be placed and start (Ray actor start-up)")
            addr, port = self._get([self.ranks[0].rendezvous_address.remote()], "rank 0's rendezvous address")[0]
            log.info("trainer rendezvous at %s:%d (rank 0's node); ranks on %s", addr, port,
                     sorted({n["node"] for n in self.nodes}))
            self._all("prepare_ops", what="trainer ranks to load DeepSpeed's C++ ops (built by launch/install.sh; "
                                          "otherwise compiled now, once, ~30 s per op on 2 cores: rl/ds_ops.py)")
            self._all("start", addr, port,
                      what=f"trainer ranks to join the rendezvous at {addr}:{port} (every rank must arrive), then "
                           f"load the model ({model_path}) and start DeepSpeed")
        except BaseException:
            self.shutdown()
            raise

    # ------------------------------------------------------------------ plumbing
    def _get(self, refs: list, what: str) -> list:
        """Results in order (``refs[i]`` is rank i's call). The first rank that fails or dies raises at once
        (the others may be waiting for it in a collective); every 30 s without results a log line says what
        is awaited."""
        start = last_log = time.monotonic()
        index = {ref: i for i, ref in enumerate(refs)}
        results: list = [None] * len(refs)
        pending = list(refs)
        while pending:
            left = self.timeout - (time.monotonic() - start)
            if left <= 0:
                raise TrainerError(f"trainer call {what!r} did not finish within cluster.timeout_s="
                                   f"{self.timeout:.0f}s ({len(pending)} of {len(refs)} ranks still busy)")
            ready, pending = ray.wait(pending, num_returns=1, timeout=min(30.0, left))
            for ref in ready:
                results[index[ref]] = self._result(ref, index[ref], what)
            if pending and time.monotonic() - last_log >= 30.0:
                last_log = time.monotonic()
                log.info("still waiting for %s (%.0fs, %d of %d ranks)", what, last_log - start,
                         len(pending), len(refs))
        self.received_bytes += sum(len(pickle.dumps(r)) for r in results)
        return results

    def _result(self, ref, rank: int, what: str):
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as e:
            self.dead = True
            raise TrainerError(f"trainer {self._where(rank)} died during {what!r}: {death_cause(e)}") from None
        except ray.exceptions.RayTaskError as e:  # an exception inside the rank: re-raise its cause
            cause = e.cause if getattr(e, "cause", None) is not None else e
            raise TrainerError(f"trainer call {what!r} failed: {type(cause).__name__}: {cause}") from cause

    def _where(self, rank: int) -> str:
        """``rank 1 (node 10.0.0.3, host gpu7, pid 4242)``, as far as it is known."""
        n = next((n for n in self.nodes if n.get("rank") == rank), None)
        if n is None:
            return f"rank {rank} (during start-up, before it reported its node)"
        return f"rank {rank} (node {n['node']}, host {n.get('host', '?')}, pid {n['pid']})"

    def _all(self, method: str, *args, what: str | None = None) -> list:
        return self._get([getattr(r, method).remote(*args) for r in self.ranks], what or method)

    # ------------------------------------------------------------------ training
    def train_step(self, batch: dict, ntp: dict | None, step: int, total_steps: int, inspect: bool = False
                   ) -> tuple[dict[str, float], dict | None]:
        """One rollout step on every rank over its whole groups: (reduced metrics, inspect payload)."""
        rows = shard_groups(batch["group_id"], self.world)
        ntp_rows = split_rows(ntp["ntp_mask"].shape[0], self.world) if ntp is not None else [None] * self.world
        refs = []
        for actor, idx, nrows in zip(self.ranks, rows, ntp_rows):
            shard = _take(batch, idx) if idx.numel() else _dummy(batch)
            part = None if ntp is None else (_take(ntp, nrows) if nrows.stop > nrows.start else _dummy(ntp, "ntp_mask"))
            refs.append(actor.train_step.remote(shard, part, step, total_steps, inspect))
        results = self._get(refs, f"train_step {step + 1}")
        metrics = reduce_ranks([rec for rec, _ in results])
        if metrics.get("batch/tokens"):
            metrics["batch/loss_tokens_frac"] = metrics["batch/loss_tokens"] / metrics["batch/tokens"]
        payload = None
        if inspect:
            kept = [(p, idx) for (_, p), idx in zip(results, rows) if idx.numel()]
            payload = _merge_inspect(kept, batch["group_id"].shape[0])
        return metrics, payload

    # ------------------------------------------------------------------ preference pairs (family: dpo)
    def _pair_shards(self, batch: dict) -> list[tuple[dict, torch.Tensor]]:
        rows = shard_pairs(batch["completion_ids"].shape[0] // 2, self.world)
        return [(_take(batch, idx) if idx.numel() else _dummy_pair(batch), idx) for idx in rows]

    def train_pairs(self, batch: dict, step: int) -> dict[str, float]:
        """One optimizer step over interleaved pairs, each rank on its whole pairs: reduced metrics."""
        refs = [actor.train_pairs.remote(shard, step) for actor, (shard, _) in zip(self.ranks, self._pair_shards(batch))]
        return reduce_ranks(self._get(refs, f"train_pairs {step + 1}"))

    def eval_pairs(self, batch: dict) -> dict[str, float]:
        refs = [actor.eval_pairs.remote(shard) for actor, (shard, _) in zip(self.ranks, self._pair_shards(batch))]
        return reduce_ranks(self._get(refs, "eval_pairs"))

    def reference_logp(self, batch: dict) -> torch.Tensor:
        """log pi_ref at every completion token of an interleaved pair batch, in its row order [2B, T]."""
        shards = self._pair_shards(batch)
        refs = [actor.reference_logp.remote(shard) for actor, (shard, _) in zip(self.ranks, shards)]
        out = self._get(refs, "reference_logp")
        return torch.cat([o for o, (_, idx) in zip(out, shards) if idx.numel()])

    def token_entropy(self, batch: dict, reference: bool) -> torch.Tensor:
        n = batch["completion_ids"].shape[0]
        parts = split_rows(n, self.world)
        refs = [r.token_entropy.remote(_take(batch, s) if s.stop > s.start else _dummy(batch), reference)
                for r, s in zip(self.ranks, parts)]
        out = self._get(refs, "token_entropy")
        return torch.cat([o for o, s in zip(out, parts) if s.stop > s.start])

    # ------------------------------------------------------------------ weights, checkpoints
    def attach_rollout(self, target) -> None:
        self._all("attach_rollout", target, what="trainer ranks to connect to the rollout workers for weight sync")

    def sync_weights(self, step: int) -> float:
        self.synced_step = step
        return max(self._all("sync_weights", step, what=f"weight sync to the rollout workers (step {step})"))

    def resync_rollout(self, target) -> float:
        """After the pool restarted a worker (rollout/pool.py ``on_restart``): connect rank 0 to the new
        worker handles and send the current weights again, under the version of the last sync."""
        self.attach_rollout(target)
        return self.sync_weights(getattr(self, "synced_step", 0))

    def save(self, path: str, client_state: dict) -> None:
        self._all("save", path, client_state, what=f"checkpoint save to {path}")

    def load(self, path: str) -> dict:
        return self._all("load", path, what=f"checkpoint load from {path}")[0]

    def export_hf(self, path: str, tokenizer_path: str) -> None:
        self._all("export_hf", path, tokenizer_path, what=f"HF export to {path}")

    def shutdown(self) -> None:
        if not self.dead:  # after a death the others may hang in a collective: no point waiting for them
            refs = [r.close.remote() for r in self.ranks]
            ray.wait(refs, num_returns=len(refs), timeout=30)
        for r in self.ranks:
            try:
                ray.kill(r)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.ranks = []
        from rollout.cleanup import remove_stale_sync_folders

        remove_stale_sync_folders()  # rank 0's /dev/shm weight files when it could not remove them itself


def _take(batch: dict, idx) -> dict:
    return {k: v[idx] for k, v in batch.items() if isinstance(v, torch.Tensor)}


def _dummy(batch: dict, mask_key: str = "token_mask") -> dict:
    """One row that enters no loss: a rank without rows still steps in lockstep with the others."""
    out = _take(batch, slice(0, 1))
    out[mask_key] = torch.zeros_like(out["completion_mask"]).float()
    return out


def _dummy_pair(batch: dict) -> dict:
    """One pair (two rows) that enters no loss, for a rank without pairs."""
    out = _take(batch, slice(0, 2))
    out["loss_mask"] = torch.zeros_like(out["completion_mask"]).float()
    return out


def _merge_inspect(parts: list[tuple[dict, torch.Tensor]], n: int) -> dict:
    """The ranks' per-token credit maps back in batch row order."""
    def merge(get):
        pieces = [(get(p), idx) for p, idx in parts]
        if any(x is None for x, _ in pieces):
            return None
        width = max(x.shape[1] for x, _ in pieces)
        out = torch.zeros(n, width)
        for x, idx in pieces:
            out[idx, : x.shape[1]] = x
        return out

    keys = set.intersection(*(set(p["extras"]) for p, _ in parts)) if parts else set()
    return {"advantages": merge(lambda p: p["advantages"]), "token_mask": merge(lambda p: p["token_mask"]),
            "token_weight": merge(lambda p: p["token_weight"]), "entropy": merge(lambda p: p["entropy"]),
            "extras": {k: merge(lambda p, k=k: p["extras"][k]) for k in keys}}
