"""Where trainer ranks and rollout workers run: one Ray placement-group bundle per node.

``cluster.nodes`` bundles, each holding ``trainer.num_ranks / nodes`` ranks and
``rollout.num_workers / nodes`` workers with their CPUs and GPUs (``*_per_rank``,
``*_per_worker``). One node: a single bundle (PACK). Several: STRICT_SPREAD, one bundle per
node, so rank r lands on node r // ranks_per_node and worker i on node i // workers_per_node.
Colocated or separate GPUs follow from the per-actor GPU counts: fractions that add up to one GPU
share it (e.g. 0.5 + 0.5: the rollout engine beside the trainer, CUDA IPC sync), whole GPUs keep
them apart (NCCL sync).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Placement:
    group: object | None  # ray.util.placement_group.PlacementGroup
    ranks_per_node: int
    workers_per_node: int

    def _options(self, bundle: int) -> dict:
        if self.group is None:
            return {}
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        return {"scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=self.group, placement_group_bundle_index=bundle)}

    def trainer(self, rank: int) -> dict:
        return self._options(rank // self.ranks_per_node)

    def worker(self, index: int) -> dict:
        return self._options(index // self.workers_per_node)

    def remove(self) -> None:
        if self.group is not None:
            from ray.util import remove_placement_group

            remove_placement_group(self.group)
            self.group = None


def node_bundle(cfg) -> dict[str, float]:
    t, r, nodes = cfg.trainer, cfg.rollout, cfg.cluster.nodes
    rpn, wpn = t.num_ranks // nodes, r.num_workers // nodes
    res = {"CPU": rpn * t.num_cpus_per_rank + wpn * r.num_cpus_per_worker,
           "GPU": rpn * t.num_gpus_per_rank + wpn * r.num_gpus_per_worker}
    return {k: v for k, v in res.items() if v > 0}


def make_placement(cfg, timeout_s: float) -> Placement:
    """Reserve the bundles (waits until Ray can place them; an error naming what is missing)."""
    import ray
    from ray.util import placement_group

    nodes = cfg.cluster.nodes
    bundle = node_bundle(cfg)
    rpn, wpn = cfg.trainer.num_ranks // nodes, cfg.rollout.num_workers // nodes
    if not bundle:
        return Placement(None, rpn, wpn)
    strategy = "STRICT_SPREAD" if nodes > 1 else "PACK"
    group = placement_group([dict(bundle) for _ in range(nodes)], strategy=strategy, name="")
    start, deadline = time.monotonic(), time.monotonic() + timeout_s
    while True:
        ready, _ = ray.wait([group.ready()], timeout=min(30.0, max(deadline - time.monotonic(), 0.0)))
        if ready:
            return Placement(group, rpn, wpn)
        alive = [n for n in ray.nodes() if n.get("Alive")]
        have = [{k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU")} for n in alive]
        if time.monotonic() >= deadline:
            from ray.util import remove_placement_group

            remove_placement_group(group)
            raise RuntimeError(
                f"Ray could not place {nodes} node bundle(s) of {bundle} ({strategy}) within cluster.timeout_s="
                f"{timeout_s:.0f}s; the cluster has {len(alive)} node(s) with {have}: lower cluster.nodes, "
                f"the *_per_rank / *_per_worker resources, or add nodes")
        log.info("waiting for Ray to place %d bundle(s) of %s (%s); %d node(s) joined so far: %s (%.0fs)",
                 nodes, bundle, strategy, len(alive), have, time.monotonic() - start)
