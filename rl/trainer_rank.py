"""One data-parallel trainer rank (a Ray actor): holds its engine and runs whole training steps.

The driver sends each rank only token ids, masks, rewards and labels of the rank's own groups
(``shard``); everything sized by the model — old/reference passes, hidden states, the output
head, the credit chain, the loss, the optimizer — stays here, and what goes back is a record of
scalar metrics (rl/metrics.py). Weights go from rank 0 straight to the rollout workers.

A step: GRPO ``prepare`` (advantages, old pass, credit chain; rl/objectives/grpo.py), then
``algorithm.epochs`` passes over the rank's rows in ``algorithm.mini_batches`` optimizer steps.
Each optimizer step's normaliser is summed over ranks and every rank takes the same number of
micro-batches (a rank short of rows backprops zero-mask copies), so the update does not depend
on how rows fall on ranks. A mini-batch without any loss token anywhere skips the optimizer but
still advances the LR schedule, so the schedule ends where it was planned to.
"""

from __future__ import annotations

import math
import os
import socket
import time

import torch

from rl import dist
from rl.config import Config
from rl.experience import Experience
from rl.metrics import RankMetrics
from rl.tracking import Timer
from rollout.logs import capture_actor_output

EXPERIENCE_KEYS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "group_id", "rewards",
                   "sampler_logp", "truncated", "correct", "token_mask")


def split_rows(n: int, parts: int) -> list[slice]:
    """Contiguous, near-equal slices of n rows over parts (some may be empty)."""
    base, extra = divmod(n, parts)
    out, start = [], 0
    for i in range(parts):
        size = base + (i < extra)
        out.append(slice(start, start + size))
        start += size
    return out


def micro_batches(batch: dict, parts: int, mask_key: str, template: dict, unit_rows: int = 1) -> list[dict]:
    """``batch``'s rows in ``parts`` micro-batches of whole units (``unit_rows`` adjacent rows: 2 for a
    pair); an empty part is a copy of ``template``'s first unit with ``mask_key`` zeroed (it keeps this
    rank in step with the others and adds nothing)."""
    n = batch[mask_key].shape[0]
    out = []
    for u in split_rows(n // unit_rows, parts):
        s = slice(u.start * unit_rows, u.stop * unit_rows)
        if s.stop > s.start:
            out.append({k: v[s] for k, v in batch.items()})
        else:
            dummy = {k: v[:unit_rows] for k, v in template.items()}
            dummy[mask_key] = torch.zeros_like(dummy[mask_key])
            out.append(dummy)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def minibatch_order(n: int, seed: int, step: int, epoch: int, rank: int) -> torch.Tensor:
    """The order in which a rank's ``n`` active rows fill its mini-batches: a fresh permutation every
    rollout step, epoch and rank, seeded, so a resumed run repeats it."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + epoch * 31 + rank)
    return torch.randperm(n, generator=gen)


class TrainerRank:
    def __init__(self, cfg: Config, model_path: str, rank: int, world_size: int, total_optimizer_steps: int) -> None:
        capture_actor_output(f"trainer-{rank}")  # DeepSpeed/torch output -> the run folder's logs/ (rollout/logs.py)
        self.cfg, self.model_path, self.rank, self.world = cfg, model_path, rank, world_size
        self.total_optimizer_steps = total_optimizer_steps
        self.engine = None
        self.sync = None  # rank 0: the weight-sync backend to the rollout workers
        self.sync_names: set[str] | None = None

    # ------------------------------------------------------------------ start-up
    def identity(self) -> dict:
        import ray

        return {"rank": self.rank, "node": ray.util.get_node_ip_address(), "host": socket.gethostname(),
                "pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    def rendezvous_address(self) -> tuple[str, int]:
        """(this node's IP, a free port on it): rank 0's answer is where every rank meets."""
        import ray

        return ray.util.get_node_ip_address(), free_port()

    def prepare_ops(self) -> list[str]:
        """Load DeepSpeed's CPU ops before DeepSpeed starts (built at install time; a stale build lock
        stops here with one line instead of a wait until cluster.timeout_s: rl/ds_ops.py)."""
        from rl.ds_ops import prepare

        return prepare(self.cfg.trainer.offload_optimizer)

    def start(self, master_addr: str, master_port: int) -> dict:
        from rl.engine import PolicyEngine
        from rl.objectives.grpo import GRPOObjective
        from rl.objectives.ntp import NTPObjective

        a = self.cfg.algorithm
        if self.cfg.family == "dpo":  # the DPO family: one preference objective (rl/objectives/preference.py)
            from rl.objectives.preference import PreferenceObjective

            self.pref = PreferenceObjective(self.cfg.preference)
            self.engine = PolicyEngine(self.cfg, self.model_path, self.rank, self.world, master_addr, master_port,
                                       self.total_optimizer_steps, reference=True,
                                       frozen_models=self.pref.frozen_models(self.cfg.dpo.guidance_model))
            return self.identity()
        reference = a.kl.coef > 0 or (a.rmt.enable and a.rmt.entropy_model == "reference")
        self.engine = PolicyEngine(self.cfg, self.model_path, self.rank, self.world, master_addr, master_port,
                                   self.total_optimizer_steps, reference=reference)
        self.grpo = GRPOObjective(self.cfg)
        self.ntp = NTPObjective(a.rmt)  # used when a step brings documents (RMT)
        return self.identity()

    # ------------------------------------------------------------------ a training step
    def _experience(self, shard: dict) -> Experience:
        dev = self.engine.device
        return Experience(**{k: shard[k].to(dev) for k in EXPERIENCE_KEYS if shard.get(k) is not None})

    def train_step(self, shard: dict, ntp: dict | None, step: int, total_steps: int, inspect: bool):
        """Prepare and update on this rank's groups; returns (metric record, inspect payload or None)."""
        from rl.faults import injected

        if injected("kill_rank", self.rank, step + 1) is not None:  # test hook: this rank dies (rl/faults.py)
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        self.engine.inject_nan = injected("nan_loss", step + 1) is not None
        timer, m = Timer(), RankMetrics()
        exp = self._experience(shard)
        means, counts = self.grpo.prepare(self.engine, exp, step, total_steps, timer)
        m.update_means(means)
        for k, v in counts.items():
            m.sum(k, v)
        with timer("update"):
            self._update(exp, ntp, step, m)
        for k, v in timer.pop().items():
            m.max(k, v)
        return m.export(), (self._inspect(exp) if inspect else None)

    def _update(self, exp: Experience, ntp: dict | None, step: int, m: RankMetrics) -> None:
        a, eng = self.cfg.algorithm, self.engine
        active = exp.active_rows().nonzero()[:, 0]
        template = self.grpo.train_rows(exp, torch.zeros(1, dtype=torch.long, device=active.device))
        ntp = {k: v.to(eng.device) for k, v in ntp.items()} if ntp is not None else None
        steps = skipped = nonfinite = nonfinite_loss = 0
        grad_norms, shares = [], {}
        for epoch in range(a.epochs):
            order = active
            if a.mini_batches > 1:
                order = active[minibatch_order(active.numel(), self.cfg.trainer.seed, step, epoch, self.rank)
                               .to(active.device)]
            # a mini-batch's rows in batch order: one prompt's completions stay adjacent, so its micro-batches
            # share prompts (trainer.share_prompt_forward); the order within one optimizer step changes nothing
            rl_chunks = [order[s].sort().values for s in split_rows(order.numel(), a.mini_batches)]
            ntp_chunks = self._ntp_chunks(ntp, a.mini_batches)
            for j in range(a.mini_batches):
                parts = [(self.grpo, self.grpo.train_rows(exp, rl_chunks[j]), template)]
                if ntp is not None:
                    parts.append((self.ntp, ntp_chunks[j], {k: v[:1] for k, v in ntp.items()}))
                planned = self._plan(parts)
                if not planned:
                    eng.skip_step()
                    skipped += 1
                    continue
                norm, part_shares = eng.train_step(planned, m)
                for k, v in part_shares.items():
                    shares[k] = shares.get(k, 0.0) + v
                if eng.last_nonfinite:  # dropped, weights untouched (engine._step; trainer.on_nonfinite)
                    nonfinite += 1
                    nonfinite_loss += eng.last_nonfinite == "loss"
                    continue
                grad_norms.append(norm)
                steps += 1
        for k, v in shares.items():
            m.sum(f"{k}/loss", v / max(steps, 1))  # ranks' shares add up to each step's loss
        m.max("train/grad_norm", sum(grad_norms) / max(len(grad_norms), 1))
        m.max("train/optimizer_steps", steps)
        m.max("train/skipped_optimizer_steps", skipped)
        m.max("train/nonfinite_steps", nonfinite)
        m.max("train/nonfinite_loss", nonfinite_loss)
        m.max("train/lr", eng.lr)
        m.sum("train/rows_in_backward", float(active.numel()))

    def _ntp_chunks(self, ntp: dict | None, parts: int) -> list[dict]:
        if ntp is None:
            return []
        if self.cfg.algorithm.rmt.ntp_schedule == "every":
            return [ntp] * parts
        return [{k: v[s] for k, v in ntp.items()} for s in split_rows(ntp["ntp_mask"].shape[0], parts)]

    def _plan(self, parts: list[tuple]) -> list[tuple]:
        """Global normalisers and micro-batch counts (summed / maxed over ranks); parts without any
        loss token on any rank are left out, and an empty list means: skip this optimizer step."""
        mbs = self.cfg.trainer.micro_batch_size
        local_counts, local_micro = [], []
        for obj, batch, _ in parts:
            local_counts += obj.norm_counts(batch)
            r = obj.rows_per_unit  # micro-batches of whole units, at most trainer.micro_batch_size rows (>= 1 unit)
            local_micro.append(float(math.ceil(batch[obj.mask_key].shape[0] // r / max(mbs // r, 1))))
        counts = dist.all_reduce(local_counts, "sum")
        n_micro = dist.all_reduce(local_micro, "max")
        planned, i = [], 0
        for (obj, batch, template), micro in zip(parts, n_micro):
            k = len(obj.norm_counts(batch))
            norm, i = counts[i : i + k], i + k
            if norm[0] > 0:
                planned.append((obj, micro_batches(batch, max(int(micro), 1), obj.mask_key, template,
                                                   obj.rows_per_unit), norm))
        return planned

    def _inspect(self, exp: Experience) -> dict:
        """Per-token credit of this rank's rows for ``tokencredit inspect`` (token-sized, not model-sized)."""
        def cpu(t):
            return t.detach().float().cpu() if isinstance(t, torch.Tensor) else None

        return {"advantages": cpu(exp.advantages), "token_mask": cpu(exp.loss_mask()),
                "token_weight": cpu(exp.token_weight), "entropy": cpu(exp.entropy),
                "extras": {k: cpu(v) for k, v in exp.extras.items() if isinstance(v, torch.Tensor)}}

    # ------------------------------------------------------------------ preference pairs (family: dpo)
    def train_pairs(self, shard: dict, step: int) -> dict:
        """One optimizer step on this rank's whole pairs (interleaved rows, rl/objectives/preference.py):
        the no-grad statistics the loss needs, then the update with the global pair count as normaliser."""
        timer, m, eng = Timer(), RankMetrics(), self.engine
        batch = {k: v.to(eng.device) for k, v in shard.items()}
        with timer("ref_pass"):
            self.pref.prepare(eng, batch)
        m.sum("batch/pairs", self.pref.norm_counts(batch)[0])
        m.sum("batch/tokens", float(batch["loss_mask"].sum()))
        with timer("update"):
            planned = self._plan([(self.pref, batch, batch)])
            if planned:
                grad_norm, shares = eng.train_step(planned, m)
                m.sum("train/loss", shares.get(self.pref.prefix, 0.0))
                if eng.last_nonfinite:  # dropped, weights untouched (engine._step; trainer.on_nonfinite)
                    m.max("train/nonfinite_steps", 1.0)
                    m.max("train/nonfinite_loss", float(eng.last_nonfinite == "loss"))
                    planned = []
                else:
                    m.max("train/grad_norm", grad_norm)
            else:  # no pair on any rank: the LR schedule still advances
                eng.skip_step()
        m.max("train/optimizer_steps", float(bool(planned)))
        m.max("train/skipped_optimizer_steps", float(not planned))
        m.max("train/lr", eng.lr)
        for k, v in timer.pop().items():
            m.max(k, v)
        return m.export()

    def eval_pairs(self, shard: dict) -> dict:
        """Held-out pairs' implicit-reward metrics (no update); a record weighted by pair count."""
        m = RankMetrics()
        values, pairs = self.pref.evaluate(self.engine, {k: v.to(self.engine.device) for k, v in shard.items()})
        if pairs:
            m.update_means(values, pairs)
        m.sum("eval/pairs", pairs)
        return m.export()

    def reference_logp(self, shard: dict) -> torch.Tensor:
        """log pi_ref at every completion token of ``shard`` (temperature 1): [rows, T] on the CPU."""
        from rl.objectives.base import Stat

        batch = {k: v.to(self.engine.device) for k, v in shard.items()}
        return self.engine.stats(batch, [Stat("ref_logp", "reference", "logp", temperature=1.0)])["ref_logp"].cpu()

    # ------------------------------------------------------------------ other calls
    def token_entropy(self, batch: dict, reference: bool) -> torch.Tensor:
        """RMT: temperature-1 entropy at every completion position under the reference or the policy."""
        from rl.objectives.base import Stat

        model = "reference" if reference else "policy"
        return self.engine.stats(batch, [Stat("entropy", model, "entropy", temperature=1.0)])["entropy"].cpu()

    def attach_rollout(self, target) -> int:
        """Rank 0 builds the weight-sync backend to the rollout workers (and checks every name and
        shape against the rollout model before any byte is sent); other ranks only take part in
        ZeRO-3 gathers. Returns the number of tensors a sync sends."""
        from rollout.weight_sync.prepare import validate_named_tensors

        self.sync_bucket_bytes, self.sync_dtype = target.bucket_bytes, target.dtype
        meta = [(n, torch.empty(s, device="meta")) for n, s in self.engine.weight_shapes()]
        names = {n for n, _ in validate_named_tensors(meta, tied_embeddings=target.tied,
                                                      expected_shapes=target.expected_shapes)}
        self.sync_names = names
        if self.rank == 0:
            if self.sync is not None:  # again after a rollout worker was restarted: new handles
                self.sync.close()
            self.sync = target.build()
            self.sync.setup()
        return len(names)

    def sync_weights(self, step: int) -> float:
        """Stream the weights bucket by bucket to every rollout worker; seconds taken (rank 0)."""
        start = time.perf_counter()
        if self.rank != 0 and not self.engine.zero3:
            return 0.0  # replicated parameters: rank 0 alone reads them
        buckets = self.engine.iter_weight_buckets(self.sync_bucket_bytes, self.sync_dtype)
        if self.rank != 0:
            for _ in buckets:  # take part in each bucket's gather
                pass
            return 0.0
        self.sync.push(([(n, t) for n, t in b if n in self.sync_names] for b in buckets), step)
        return time.perf_counter() - start

    def save(self, path: str, client_state: dict) -> None:
        self.engine.save(path, client_state)

    def load(self, path: str) -> dict:
        return self.engine.load(path)

    def export_hf(self, path: str, tokenizer_path: str) -> None:
        from rl.hf_export import write_hf_folder

        buckets = self.engine.iter_weight_buckets(2 * 2**30, self.engine.dtype)
        if self.rank == 0:
            write_hf_folder(buckets, path, self.engine.base_config(), tokenizer_path)
        elif self.engine.zero3:
            for _ in buckets:
                pass

    def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
            self.sync = None
