"""DeepSpeed's C++ ops on CPU: built at install time, loaded before the trainer starts, stale build locks named.

On a CPU machine DeepSpeed compiles some ops the first time they are used (``torch.utils.cpp_extension``,
into ``$TORCH_EXTENSIONS_DIR/<op>/``). The trainer uses:

* ``deepspeed_shm_comm`` (``ShareMemCommBuilder``): always; ``deepspeed.init_distributed`` loads it for
  its shared-memory all-reduce between ranks of one node (about 30 s to build on 2 cores);
* ``cpu_adam`` (``CPUAdamBuilder``): with ``trainer.offload_optimizer`` (``DeepSpeedCPUAdam``; about 60 s).

(``fused_adam`` is built only for DeepSpeed's own ``FusedAdam``, which the trainer does not use.)
``launch/install.sh`` builds both (``python -m rl.ds_ops build``), so a run only loads them.

Each Python environment gets its own folder (``~/.cache/torch_extensions/py311_cpu-<hash of sys.prefix>``,
unless ``TORCH_EXTENSIONS_DIR`` is set): in torch's one shared folder, two checkouts with their own venv
rewrote each other's ``build.ninja`` (its include paths name the venv), and each run recompiled the op.

The build is guarded by a lock file, ``<op>/lock``, created with ``O_EXCL`` and held open by the
building process. A process killed during the build leaves the file behind, and every later run then
waits for it forever (torch polls until it disappears; the trainer's start-up ended after
``cluster.timeout_s`` with a message naming neither). ``prepare`` (each trainer rank, before
DeepSpeed starts) finds such a lock: a lock file no live process has open is stale, and the run stops
at once with one line naming the file and the command that removes it. It is not removed here: a
process between ``close`` and ``unlink`` of its own lock would see its lock vanish and fail.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import sysconfig
import time
from pathlib import Path

log = logging.getLogger(__name__)

SHM_COMM, CPU_ADAM = "ShareMemCommBuilder", "CPUAdamBuilder"


class StaleBuildLock(RuntimeError):
    pass


def extensions_root() -> Path:
    """Where the ops are built and loaded: ``TORCH_EXTENSIONS_DIR``, else a folder of this Python environment
    next to torch's default (``<cache>/torch_extensions/py311_cpu-<hash of sys.prefix>``)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root)
    from torch.utils.cpp_extension import get_default_build_root

    env = hashlib.sha256(os.path.realpath(sys.prefix).encode()).hexdigest()[:10]
    py = f"py{sys.version_info.major}{sys.version_info.minor}{sys.abiflags}"
    return Path(get_default_build_root()) / f"{py}_{_accelerator()}-{env}"


def _accelerator() -> str:
    """torch's name for the build flavour (as ``cpp_extension`` names its default folder)."""
    import torch

    if torch.version.hip is not None:
        return f"rocm{torch.version.hip.replace('.', '')}"
    if torch.version.cuda is not None:
        return f"cu{torch.version.cuda.replace('.', '')}"
    return "cpu"


def needed(offload_optimizer: bool) -> list[str]:
    """The op builders the trainer loads on this machine (none on GPU, where NCCL replaces shm comm)."""
    import torch

    if torch.cuda.is_available():
        return [CPU_ADAM] if offload_optimizer else []
    return [SHM_COMM, CPU_ADAM] if offload_optimizer else [SHM_COMM]


def _builder(class_name: str):
    """DeepSpeed's builder for this accelerator, or None when it has none / it is not compatible."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder(class_name)
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return None
    return builder


def lock_holders(lock: Path) -> list[int]:
    """Pids of the processes that have ``lock`` open (the builder keeps its lock file open while building)."""
    target = str(lock)
    holders = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        holders.append(int(pid))
                        break
                except OSError:
                    continue
        except OSError:  # gone, or another user's
            continue
    return holders


def stale_locks(names: list[str], root: Path | None = None, recheck_s: float = 1.0) -> list[Path]:
    """Lock files of these ops (DeepSpeed ``NAME``s) that no process holds, seen so twice ``recheck_s`` apart."""
    root = root or extensions_root()
    suspects = [root / n / "lock" for n in names if (root / n / "lock").exists() and not lock_holders(root / n / "lock")]
    if suspects and recheck_s > 0:
        time.sleep(recheck_s)
        suspects = [p for p in suspects if p.exists() and not lock_holders(p)]
    return suspects


def stale_lock_message(lock: Path) -> str:
    return (f"DeepSpeed's op build lock {lock} is left over from a run killed while it compiled the op (no process "
            f"holds it), and every run would wait for it forever: remove it with `rm {lock}` and start again")


def use_environment_ninja() -> None:
    """Put this Python environment's scripts folder first on PATH when it holds ``ninja`` (pip's, which
    install.sh builds with). torch runs whichever ``ninja`` PATH finds, and a process started without the venv
    on PATH (``.venv/bin/python ...`` and its Ray workers) found the system's: ninja versions hash commands
    differently, so each switch called the build stale and recompiled the op (~30 s per op on 2 cores)."""
    scripts = sysconfig.get_path("scripts")
    if not os.path.exists(os.path.join(scripts, "ninja")):
        return
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != scripts]
    os.environ["PATH"] = os.pathsep.join([scripts, *path])


def prepare(offload_optimizer: bool) -> list[str]:
    """Load (building if needed) the ops the trainer will use, after checking their build locks; the names.

    Called on each trainer rank before DeepSpeed starts, so a stale lock stops the start-up with one line
    (``StaleBuildLock``) instead of a wait until ``cluster.timeout_s``; DeepSpeed then finds them loaded."""
    root = extensions_root()
    os.environ["TORCH_EXTENSIONS_DIR"] = str(root)  # torch builds and loads here, in this process and DeepSpeed's
    use_environment_ninja()
    builders = [b for b in (_builder(c) for c in needed(offload_optimizer)) if b is not None]
    stale = stale_locks([b.NAME for b in builders], root)
    if stale:
        raise StaleBuildLock(stale_lock_message(stale[0]))
    loaded = []
    for b in builders:
        lock = root / b.NAME / "lock"
        if lock.exists():
            log.info("DeepSpeed op %s is being built by pid %s; waiting for it", b.NAME, lock_holders(lock))
        built = (root / b.NAME / f"{b.NAME}.so").exists()
        start = time.monotonic()
        try:
            b.load(verbose=False)
        except Exception as e:  # noqa: BLE001 - a compiler problem, named with the op
            raise RuntimeError(f"DeepSpeed op {b.NAME} could not be built in {root / b.NAME}: {type(e).__name__}: "
                               f"{str(e).strip().splitlines()[-1] if str(e).strip() else ''} (needs a C++ compiler "
                               f"and ninja; launch/install.sh builds it once)") from None
        if not built:
            log.info("built DeepSpeed op %s in %.0f s (once; launch/install.sh does it at install time)", b.NAME,
                     time.monotonic() - start)
        loaded.append(b.NAME)
    return loaded


def main(argv: list[str] | None = None) -> int:
    """``python -m rl.ds_ops build``: build every op the trainer may use on this machine (launch/install.sh)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["build"]:
        print("usage: python -m rl.ds_ops build", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="[install] %(message)s")
    try:
        names = prepare(offload_optimizer=True)
    except (StaleBuildLock, RuntimeError) as e:
        print(f"[install] {e}", file=sys.stderr)
        return 1
    print(f"[install] DeepSpeed ops ready: {', '.join(names) or 'none needed'} ({extensions_root()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
