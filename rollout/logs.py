"""Where a run's Ray actors write: a file in the run folder, not the driver's console.

Every actor of a training run (the rollout workers here, the trainer ranks in rl/trainer_rank.py)
calls ``capture_actor_output(name)`` first thing in its constructor. When the driver has set
``TOKENCREDIT_LOG_DIR`` for the Ray job (rl/log.py), the process's stdout and stderr are
redirected, at the file-descriptor level, to ``LOG_DIR/NAME.log``: vLLM's and DeepSpeed's
loggers, transformers' progress bars, Python warnings, torch's C++ warnings, a native crash's
last words. What still reaches the driver's console (through Ray's ``log_to_driver``) is a
short line for each warning or error of our own loggers (rl, rollout, rewards) and for each
error of any library. With ``TOKENCREDIT_VERBOSE=1`` (``tokencredit train --verbose``) the
output goes to both, the console and the file, unfiltered. Without ``TOKENCREDIT_LOG_DIR``
(an actor started outside ``tokencredit train``) nothing changes.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
from pathlib import Path

ENV_DIR = "TOKENCREDIT_LOG_DIR"
ENV_VERBOSE = "TOKENCREDIT_VERBOSE"
OURS = ("rl", "rollout", "rewards", "benchmarks")
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_captured: dict[str, object] = {}  # this process: {"path": Path, "console": Handler | None}


def is_ours(name: str) -> bool:
    return name.split(".", 1)[0] in OURS


class ConsoleWorthy(logging.Filter):
    """What a person must see: our warnings and errors, and any library's errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= (logging.WARNING if is_ours(record.name) else logging.ERROR)


class ShortFormatter(logging.Formatter):
    """``[tokencredit] message`` for our INFO lines, ``[tokencredit] warning: ...`` above it,
    ``[vllm] error: ...`` for a library's record."""

    def format(self, record: logging.LogRecord) -> str:
        who = "tokencredit" if is_ours(record.name) else record.name.split(".", 1)[0]
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"[{who}] {level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def verbose_from_env() -> bool:
    return os.environ.get(ENV_VERBOSE, "") not in ("", "0")


def capture_actor_output(name: str) -> Path | None:
    """Send this process's output to ``$TOKENCREDIT_LOG_DIR/NAME.log`` (see the module docstring).

    Returns the log file, or None when no log folder is set. Idempotent within a process."""
    if _captured:
        return _captured["path"]  # type: ignore[return-value]
    log_dir = os.environ.get(ENV_DIR)
    if not log_dir:
        return None
    path = Path(log_dir) / f"{name}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as e:  # an unwritable run folder must not stop the run: keep Ray's own log files
        print(f"[tokencredit] warning: cannot write {path} ({e}); this process logs to Ray's log folder",
              file=sys.stderr, flush=True)
        return None
    verbose = verbose_from_env()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    console_fd = os.dup(2)  # what Ray forwards to the driver's console
    if verbose:
        _tee(file_fd, console_fd)
    else:
        os.dup2(file_fd, 1)
        os.dup2(file_fd, 2)
        os.close(file_fd)

    # our loggers, and any library that propagates to the root, into the file (fd 2)
    to_file = logging.StreamHandler(sys.stderr)
    to_file.setFormatter(logging.Formatter(FILE_FORMAT))
    root = logging.getLogger()
    root.addHandler(to_file)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    for ours in OURS:
        logging.getLogger(ours).setLevel(logging.DEBUG if verbose else logging.INFO)

    console = None
    if not verbose:  # verbose: the tee already shows everything
        console = logging.StreamHandler(os.fdopen(console_fd, "w", buffering=1, closefd=False))
        console.setFormatter(ShortFormatter())
        console.addFilter(ConsoleWorthy())
        root.addHandler(console)
        # DeepSpeed's logger has its own stdout handler and does not propagate: errors from it too
        logging.getLogger("DeepSpeed").addHandler(console)
    _captured.update(path=path, console=console)
    return path


def forward_errors(logger_name: str) -> None:
    """Show ``logger_name``'s errors on the console too, for a library logger that does not propagate
    to the root and configures itself on import (vLLM: call it after importing vllm)."""
    console = _captured.get("console")
    log = logging.getLogger(logger_name)
    if console is not None and console not in log.handlers:
        log.addHandler(console)  # type: ignore[arg-type]


def _tee(file_fd: int, console_fd: int) -> None:
    """fd 1 and 2 -> a pipe -> a thread that writes every byte to the file and to the console."""
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)

    def write_all(fd: int, data: bytes) -> None:
        while data:
            data = data[os.write(fd, data):]

    def pump() -> None:
        while True:
            data = os.read(read_fd, 1 << 16)
            if not data:
                return
            for fd in (file_fd, console_fd):
                try:
                    write_all(fd, data)
                except OSError:
                    pass

    thread = threading.Thread(target=pump, name="tokencredit-log-tee", daemon=True)
    thread.start()

    def drain() -> None:  # at exit: end the pipe (fd 1 and 2 -> /dev/null) and let the thread copy what is left
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        thread.join(timeout=5)

    atexit.register(drain)
