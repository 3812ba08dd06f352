"""Helpers shared by benchmarks/preference_ablation.py and benchmarks/dpo_vs_trl.py.

* ``machine()``: what the figures were measured on (CPU model, cores, memory, GPUs, load average).
* ``TreeSampler``: a thread that samples the resident set (RSS) of a process and all its descendants
  every ``interval`` seconds, grouped by role (a Ray actor's class from its ``ray::Class.method`` process
  title, the Ray daemons, the driver), and the 1-minute load average next to it. Sums of RSS count pages
  shared between processes once per process (an upper bound on the tree's physical memory); the largest
  single process (the trainer rank, TRL's process) is exact.
* ``spread`` / ``median_spread``: mean and sample standard deviation / median and quartiles of a list.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import threading
from pathlib import Path

GIB = 1024**3


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """The machine, for the record next to every figure."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) * 1024 / GIB, 1)
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpus = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a description, never a failure
        pass
    return {
        "host": platform.node(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "memory_gib": mem,
        "gpus": gpus or "none",
        "python": platform.python_version(),
        "load_average_1_5_15": load_average(),
    }


def process_role(cmdline: list[str], name: str = "") -> str | None:
    """The role a process's command line names, or None (then it inherits its parent's role).

    Ray actors retitle their process ``ray::ClassName`` / ``ray::ClassName.method``; pooled Ray workers
    are ``ray::IDLE`` (or ``default_worker.py`` before they retitle) until an actor or task takes them;
    the Ray daemons keep their executable / script names. A role can change over a process's life (an
    idle worker becomes an actor), so callers look it up on every sample."""
    first = cmdline[0] if cmdline else name
    if first.startswith("ray::"):
        cls = first[5:].split(".", 1)[0].split(" ", 1)[0]
        if cls in ("DashboardAgent", "RuntimeEnvAgent", "dashboard"):
            return "ray_daemons"
        return "ray_idle_worker" if cls in ("IDLE", "") else cls
    joined = " ".join(cmdline[:4])
    if "default_worker.py" in joined:
        return "ray_idle_worker"
    base = os.path.basename(first)
    daemons = ("ray/dashboard", "log_monitor.py", "monitor.py", "runtime_env", "ray_client_server")
    if base in ("gcs_server", "raylet") or any(d in joined for d in daemons):
        return "ray_daemons"
    return None


class TreeSampler:
    """Peak RSS of a process tree, overall and by role, sampled by a daemon thread (see the module doc)."""

    def __init__(self, pid: int | None = None, interval: float = 0.5, root_role: str = "driver") -> None:
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid or os.getpid())
        self.interval, self.root_role = interval, root_role
        self.peak_total = 0
        self.peak_process = 0  # the largest single process
        self.peak_by_role: dict[str, int] = {}
        self.samples = 0
        self.loads: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._marks: dict[str, int] = {}  # phase name -> peak total in that phase
        self._phase: str | None = None

    def _roles(self, procs, parents: dict[int, int]) -> dict[int, str]:
        """pid -> role for this sample: named by its command line, else its nearest named ancestor's."""
        named: dict[int, str | None] = {}
        for p in procs:
            if p.pid == self.root.pid:
                named[p.pid] = self.root_role
                continue
            try:
                named[p.pid] = process_role(p.cmdline(), p.name())
            except (self._psutil.Error, OSError):
                named[p.pid] = None
        out: dict[int, str] = {}
        for pid in named:
            q, seen = pid, 0
            while named.get(q) is None and q in parents and seen < 64:
                q, seen = parents[q], seen + 1
            out[pid] = named.get(q) or "other"
        return out

    def sample(self) -> int:
        """One sample now; returns the tree's total RSS in bytes."""
        ps = self._psutil
        try:
            procs = [self.root] + self.root.children(recursive=True)
        except ps.Error:
            return 0
        parents, rss = {}, {}
        for p in procs:
            try:
                parents[p.pid] = p.ppid()
                rss[p.pid] = p.memory_info().rss
            except (ps.Error, OSError):
                continue
        roles = self._roles([p for p in procs if p.pid in rss], parents)
        by_role: dict[str, int] = {}
        for pid, r in roles.items():
            by_role[r] = by_role.get(r, 0) + rss[pid]
        total = sum(rss.values())
        self.peak_total = max(self.peak_total, total)
        self.peak_process = max([self.peak_process, *rss.values()])
        for r, v in by_role.items():
            self.peak_by_role[r] = max(self.peak_by_role.get(r, 0), v)
        if self._phase is not None:
            self._marks[self._phase] = max(self._marks.get(self._phase, 0), total)
        self.samples += 1
        self.loads.append(os.getloadavg()[0])
        return total

    def phase(self, name: str | None) -> None:
        """Attribute the following samples' peak to ``name`` too (None: no phase)."""
        self._phase = name
        if name is not None:
            self.sample()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, daemon=True, name="tree-rss")
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def report(self) -> dict:
        loads = self.loads or [os.getloadavg()[0]]
        return {
            "peak_rss_tree_gib": round(self.peak_total / GIB, 3),
            "peak_rss_largest_process_gib": round(self.peak_process / GIB, 3),
            "peak_rss_by_role_gib": {k: round(v / GIB, 3) for k, v in sorted(self.peak_by_role.items())},
            "peak_rss_tree_by_phase_gib": {k: round(v / GIB, 3) for k, v in self._marks.items()},
            "rss_samples": self.samples,
            "rss_interval_s": self.interval,
            "load_average_1min": {
                "mean": round(sum(loads) / len(loads), 2),
                "max": round(max(loads), 2),
                "min": round(min(loads), 2),
            },
        }


def spread(values) -> dict:
    """{"mean", "sd" (sample, n-1; 0 for one value), "min", "max", "n", "values"} of the finite values."""
    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not xs:
        return {"mean": None, "sd": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "mean": round(statistics.fmean(xs), 6),
        "sd": round(statistics.stdev(xs), 6) if len(xs) > 1 else 0.0,
        "min": round(min(xs), 6),
        "max": round(max(xs), 6),
        "n": len(xs),
        "values": [round(x, 6) for x in xs],
    }


def median_spread(values) -> dict:
    """{"median", "q1", "q3", "min", "max", "n"} of the finite values (quartiles by linear interpolation)."""
    xs = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    if not xs:
        return {"median": None, "q1": None, "q3": None, "min": None, "max": None, "n": 0}

    def q(f: float) -> float:
        pos = f * (len(xs) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])

    return {
        "median": round(q(0.5), 6),
        "q1": round(q(0.25), 6),
        "q3": round(q(0.75), 6),
        "min": round(xs[0], 6),
        "max": round(xs[-1], 6),
        "n": len(xs),
    }
