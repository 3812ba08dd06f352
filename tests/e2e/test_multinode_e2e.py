"""Multi-node for real, rehearsed on loopback: a Ray head and a second Ray node (separate raylet
processes on 127.0.0.1), one trainer rank and one rollout worker on each. The trainer ranks meet at
rank 0's node address, weights reach the worker on the other node without passing through the
driver, and the per-step losses equal a one-node run with the same ranks and workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
KEYS = ("train/loss", "train/grad_norm", "reward/total/mean", "batch/completion_len")


def run(mode: str, root: Path, model_dir: str) -> Path:
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_ADDRESS="", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
               RAY_AUTH_MODE="token")
    out = subprocess.run([sys.executable, str(HERE / "multinode_run.py"), mode, str(root), model_dir],
                         env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert out.returncode == 0, out.stderr[-4000:]
    # Ray forwards the actors' lines to this stdout too, also after the run's own line
    run_dirs = [line[len("RUN_DIR="):] for line in out.stdout.splitlines() if line.startswith("RUN_DIR=")]
    assert len(run_dirs) == 1, out.stdout[-4000:]
    return Path(run_dirs[0])


def metrics(run_dir: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.e2e
def test_two_loopback_nodes_match_one_node(tmp_path, tiny_model_dir):
    two = run("two_nodes", tmp_path / "two", tiny_model_dir)
    placed = json.loads((two / "cluster.json").read_text())
    rank_nodes = [r["node_id"] for r in sorted(placed["trainer_ranks"], key=lambda r: r["rank"])]
    worker_nodes = [w["node_id"] for w in placed["rollout_workers"]]
    assert len(set(rank_nodes)) == 2 and set(rank_nodes) == set(worker_nodes)  # one rank + one worker per node
    assert all(r["node"].startswith("127.") for r in placed["trainer_ranks"])  # loopback only
    one = run("one_node", tmp_path / "one", tiny_model_dir)
    got, want = metrics(two), metrics(one)
    assert sorted(got) == sorted(want) == [1, 2]
    for step in (1, 2):
        for key in KEYS:
            assert got[step][key] == pytest.approx(want[step][key], rel=1e-5, abs=1e-7), (step, key)
