"""Security default: a local Ray instance (``tokencredit train``, the test fixtures) and ``launch/ray_cluster.sh
head`` without a BIND_IP listen on loopback only, and no dashboard is started for a local run.

Each case starts its own Ray in a subprocess (the session's Ray may already run in this process) and lists
the listening sockets of every process that carries the subprocess's marker in its environment (the Ray
processes inherit it), so sockets of other programs on the machine are not looked at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[2]
MARK = "TOKENCREDIT_TEST_MARK"

LOCAL = """
import time, ray
from rollout.local_ray import init_local_ray
init_local_ray(1, log_to_driver=False)

@ray.remote
class Probe:
    def ping(self):
        return 1

p = Probe.remote()
ray.get(p.ping.remote())
print("ready", flush=True)
time.sleep(120)
"""


def marked_processes(mark: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == mark:
                out.append(p)
        except (psutil.Error, OSError):
            pass
    return out


def listening(procs: list[psutil.Process]) -> list[tuple[str, str, int]]:
    rows = []
    for p in procs:
        try:
            for c in p.net_connections(kind="inet"):
                if c.status == psutil.CONN_LISTEN:
                    rows.append((p.name(), c.laddr.ip, c.laddr.port))
        except (psutil.Error, OSError):
            pass
    return rows


def is_loopback(ip: str) -> bool:
    return ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def wait_for_sockets(mark: str, want: set[str], timeout_s: float = 60) -> list[tuple[str, str, int]]:
    """The marked processes' listening sockets once the named Ray processes listen (they start one by one)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = listening(marked_processes(mark))
        if want <= {name for name, _, _ in rows} or time.monotonic() > deadline:
            time.sleep(3)  # the agents start a moment later; give them the time to bind too
            return listening(marked_processes(mark))
        time.sleep(1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_marked(mark: str) -> None:
    """Whatever this test started and is still alive (only processes carrying its own marker)."""
    procs = marked_processes(mark)
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


def stop_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(30)
            return
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


@pytest.mark.timeout(180)
def test_local_instance_listens_on_loopback_only():
    mark = uuid.uuid4().hex
    env = dict(os.environ, **{MARK: mark}, PYTHONPATH=str(REPO))
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the helper must set it itself
    proc = subprocess.Popen([sys.executable, "-c", LOCAL], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        rows = wait_for_sockets(mark, {"gcs_server", "raylet"})
        assert {"gcs_server", "raylet"} <= {name for name, _, _ in rows}, rows
        wide = [r for r in rows if not is_loopback(r[1])]
        assert not wide, f"Ray listens beyond loopback: {wide}"
        assert not any("dashboard" in name for name, _, _ in rows)
    finally:
        stop_group(proc)
        kill_marked(mark)


@pytest.mark.timeout(180)
def test_ray_cluster_head_without_bind_ip_listens_on_loopback_only():
    mark = uuid.uuid4().hex
    # its own Ray temp dir: `ray start` records itself there as the machine's current cluster
    tmp = tempfile.mkdtemp(prefix="tcr-", dir="/tmp")
    env = dict(os.environ, **{MARK: mark}, RAY_TMPDIR=tmp, TOKENCREDIT_VENV=str(Path(sys.executable).parents[1]))
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    port = free_port()
    proc = subprocess.Popen(["bash", str(REPO / "launch/ray_cluster.sh"), "head", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        rows = wait_for_sockets(mark, {"gcs_server", "raylet"}, timeout_s=90)
        assert {"gcs_server", "raylet"} <= {name for name, _, _ in rows}, rows
        wide = [r for r in rows if not is_loopback(r[1])]
        assert not wide, f"`ray_cluster.sh head` listens beyond loopback: {wide}"
    finally:
        stop_group(proc)
        kill_marked(mark)
