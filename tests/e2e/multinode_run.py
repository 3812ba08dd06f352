"""Run the smoke recipe on a two-node Ray cluster rehearsed on loopback, or on one node (a subprocess of
tests/e2e/test_multinode_e2e.py, which needs a Ray of its own).

    python tests/e2e/multinode_run.py two_nodes|one_node RUN_ROOT MODEL_DIR

Two nodes: ``ray start --head`` and a second node (tests/e2e/ray_node.py) as separate processes,
each its own raylet, both bound to 127.0.0.1 (nothing outside loopback is listened on or
addressed: the caller sets RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 so that Ray resolves "this node" to
loopback, not to the machine's network address, and RAY_AUTH_MODE=token as ``ray start`` wants),
2 CPUs each; one trainer rank and one rollout worker on each node (cluster.nodes=2). One node:
the same ranks and workers in one local Ray.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from rl.cluster_wait import wait_for_nodes
from rl.config import load_config
from rl.loops.grpo import train

REPO = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def start_head(port: int) -> subprocess.Popen:
    # its own temp dir: `ray start` records itself there as "the current cluster", which other
    # processes' ray.init() on this machine would otherwise join
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
           f"--temp-dir={tempfile.gettempdir()}/tokencredit-ray-{port}",
           f"--node-ip-address={LOOPBACK}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def start_node(address: str) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).with_name("ray_node.py")), address, "2"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(20)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def main(mode: str, root: str, model_dir: str) -> None:
    overrides = [
        f"name={mode}", f"model.name_or_path={model_dir}", "model.dtype=float32", f"logging.dir={root}",
        "logging.progress=false", "logging.tensorboard=false", "logging.save_batches=false",
        "trainer.steps=2", "trainer.prompts_per_step=2", "rollout.n=4", "rollout.max_tokens=8",
        "rollout.memory_fraction=0.08", "trainer.micro_batch_size=2", "trainer.lr=1e-3", "trainer.num_ranks=2",
        "rollout.num_workers=2", "eval.at_start=false", "eval.num_prompts=2", "eval.pass_k=2",
        "checkpoint.export_hf=false", "checkpoint.save_final=false",
    ]
    nodes = []
    try:
        if mode == "two_nodes":
            port = free_port()
            nodes.append(start_head(port))
            address = f"{LOOPBACK}:{port}"
            for _ in range(120):  # the head is up when a driver can connect
                try:
                    ray.init(address=address, logging_level="ERROR")
                    break
                except ConnectionError:
                    time.sleep(2)
            nodes.append(start_node(address))
            wait_for_nodes(2, timeout_s=300)
            overrides += [f"cluster.address={address}", "cluster.nodes=2"]
        else:
            ray.init(address="local", num_cpus=4, include_dashboard=False, _node_ip_address=LOOPBACK)
        print("RUN_DIR=" + str(train(load_config(REPO / "recipes" / "smoke.yaml", overrides))), flush=True)
    finally:
        ray.shutdown()
        for proc in reversed(nodes):
            stop(proc)


if __name__ == "__main__":
    main(*sys.argv[1:4])
