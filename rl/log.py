"""One logging set-up for the command line: our messages on stderr as ``[tokencredit] ...``."""

from __future__ import annotations

import logging
import sys

OURS = ("rl", "rollout", "rewards", "benchmarks")


def setup_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[tokencredit] %(message)s"))
    for name in OURS:
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(logging.DEBUG if verbose else logging.INFO)
        log.propagate = False
