"""Wait until a Ray cluster has the nodes a run needs (SLURM and other launchers; instead of sleeping).

    python -m rl.cluster_wait --address HEAD:PORT --nodes 2 --timeout 600
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def use_token_auth_if_present() -> None:
    """`ray start` turns token authentication on and keeps the token in ~/.ray/auth_token; a driver
    connecting to it must use token mode too (Ray's default here would send no token)."""
    if Path("~/.ray/auth_token").expanduser().is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def wait_for_nodes(nodes: int, timeout_s: float, poll_s: float = 2.0) -> int:
    """Block (on a connected Ray) until ``nodes`` nodes are alive; the count, or TimeoutError naming what is missing."""
    import ray

    start = last = time.monotonic()
    while True:
        alive = [n for n in ray.nodes() if n.get("Alive")]
        if len(alive) >= nodes:
            return len(alive)
        now = time.monotonic()
        if now - start > timeout_s:
            raise TimeoutError(f"only {len(alive)} of {nodes} Ray nodes joined within {timeout_s:.0f}s: "
                               f"{sorted(n['NodeManagerAddress'] for n in alive)}")
        if now - last > 30:
            print(f"[tokencredit] waiting for Ray nodes: {len(alive)} of {nodes} joined ({now - start:.0f}s)",
                  file=sys.stderr, flush=True)
            last = now
        time.sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", required=True, help="the Ray head, HOST:PORT")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    import ray

    use_token_auth_if_present()
    deadline = time.monotonic() + args.timeout
    while True:  # the head itself may still be starting
        try:
            ray.init(address=args.address, logging_level="ERROR")
            break
        except ConnectionError:
            if time.monotonic() > deadline:
                print(f"[tokencredit] no Ray head at {args.address} within {args.timeout:.0f}s", file=sys.stderr)
                return 1
            time.sleep(2)
    try:
        n = wait_for_nodes(args.nodes, max(deadline - time.monotonic(), 1.0))
    except TimeoutError as e:
        print(f"[tokencredit] {e}", file=sys.stderr)
        return 1
    finally:
        ray.shutdown()
    print(f"[tokencredit] {n} Ray nodes are up", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
