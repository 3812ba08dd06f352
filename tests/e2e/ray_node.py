"""A second Ray node joining GCS_ADDRESS on loopback, as its own raylet process (tests only).

    python tests/e2e/ray_node.py 127.0.0.1:PORT NUM_CPUS

``ray start --address`` refuses to add a node while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which is
what keeps Ray from resolving "this node" to the machine's network address; so the node is started
with Ray's own Node class (what ``ray start`` runs), bound to 127.0.0.1. It stops on SIGTERM.
"""

from __future__ import annotations

import signal
import sys

import ray._private.node as node_mod
from ray._private.parameter import RayParams


def main(gcs_address: str, num_cpus: str) -> None:
    params = RayParams(gcs_address=gcs_address, node_ip_address="127.0.0.1", num_cpus=int(num_cpus), num_gpus=0,
                       object_store_memory=256 * 2**20, include_log_monitor=False, node_manager_port=0,
                       min_worker_port=0, max_worker_port=0)
    node = node_mod.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
    print("joined", flush=True)
    signal.sigwait([signal.SIGTERM, signal.SIGINT])
    node.kill_all_processes(check_alive=False, allow_graceful=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
