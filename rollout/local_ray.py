"""Start a local Ray instance that listens on loopback only.

``ray.init(address="local", _node_ip_address="127.0.0.1")`` alone is not enough (Ray 2.60): Ray turns
a loopback address into the machine's network address (``services.resolve_ip_for_localhost``), and
its GCS, raylet and every worker then listen on all interfaces. Ray keeps "this node" on loopback
only while ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (its switch for single-machine instances), so a
local instance is started with that setting: in the environment, which the raylet and every worker
it spawns inherit, and in the already imported ``ray_constants`` (read when the node address is
resolved). Then every Ray port is bound to 127.0.0.1 and the dashboard is off
(tests/rollout/test_local_ray.py lists the sockets).

A cluster the user starts (``launch/ray_cluster.sh``, ``cluster.address``) is theirs to bind.
"""

from __future__ import annotations

import os

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Make Ray resolve this node to 127.0.0.1 in this process and in every process it starts."""
    os.environ[SINGLE_MACHINE_ENV] = "0"
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def init_local_ray(num_cpus: int, log_to_driver: bool = True, **kwargs) -> None:
    """``ray.init`` of a fresh local instance (never a running cluster), bound to loopback, no dashboard."""
    import ray

    loopback_only()
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=log_to_driver,
             _node_ip_address=LOOPBACK, **kwargs)
