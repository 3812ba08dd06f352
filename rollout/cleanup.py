"""What a killed process leaves in /dev/shm, and removing it once its owner is gone.

* ``tokencredit-sync-<pid>-*``: the cpu_shm weight-sync folders (one engine-dtype copy of the model,
  rollout/weight_sync/cpu_shm.py) of trainer rank 0, or a worker's bytes-to-files folder. Their owner
  removes them on a clean exit; after a SIGKILL (a dead rank, an OOM kill, a killed run) the pid in the
  name tells that nobody uses them any more.
* ``__KMP_REGISTERED_LIB_<pid>_<uid>``: Intel OpenMP's registration file, written by every rollout
  engine process (vLLM on CPU preloads libiomp) and removed only on a clean exit.

Only files whose pid is no longer alive are removed, and KMP files only for pids this program ran.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable

SHM = "/dev/shm"
SYNC_PREFIX = "tokencredit-sync-"
_SYNC = re.compile(rf"^{SYNC_PREFIX}(\d+)-")
_KMP = re.compile(r"^__KMP_REGISTERED_LIB_(\d+)(_\d+)?$")


def sync_folder_prefix() -> str:
    """``tempfile.mkdtemp(prefix=...)`` for a /dev/shm folder that ``remove_stale_sync_folders`` can attribute."""
    return f"{SYNC_PREFIX}{os.getpid()}-"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_sync_folders(shm_dir: str = SHM) -> list[str]:
    """Remove ``tokencredit-sync-<pid>-*`` folders whose process is gone; the names removed."""
    removed = []
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return removed
    for name in names:
        m = _SYNC.match(name)
        if m and not pid_alive(int(m.group(1))):
            shutil.rmtree(os.path.join(shm_dir, name), ignore_errors=True)
            removed.append(name)
    return removed


def remove_stale_kmp_files(pids: Iterable[int], shm_dir: str = SHM) -> list[str]:
    """Remove Intel OpenMP registration files of the given pids that are no longer alive."""
    dead = {p for p in pids if p > 0 and not pid_alive(p)}
    removed = []
    if not dead:
        return removed
    try:
        names = os.listdir(shm_dir)
    except OSError:
        return removed
    for name in names:
        m = _KMP.match(name)
        if m and int(m.group(1)) in dead:
            try:
                os.unlink(os.path.join(shm_dir, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def process_tree(pid: int) -> list:
    """``pid`` and its descendants (the engine's own processes) as ``psutil.Process`` objects, which
    recognise a reused pid; [] when it does not run on this machine."""
    try:
        import psutil

        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except Exception:  # noqa: BLE001 - gone, or not ours to see
        return []


def end_processes(procs: list, timeout_s: float = 10) -> None:
    """SIGTERM, then SIGKILL, what is still alive of ``procs`` (from ``process_tree``): an engine process
    whose worker was killed would otherwise run on as an orphan. psutil refuses a pid that was reused."""
    import psutil

    alive = []
    for p in procs:
        try:
            if p.is_running():
                p.terminate()
                alive.append(p)
        except psutil.Error:
            pass
    _, left = psutil.wait_procs(alive, timeout=timeout_s)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=5)
