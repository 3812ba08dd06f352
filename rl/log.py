"""One logging set-up for a run: a few readable lines on the console, everything else in a file.

Console (stderr), by default (``logging.level: info``):
  - our own messages as ``[tokencredit] ...``: the phases (model, data, engines starting and how
    long they took), the per-step progress (rl/tracking.py) and the closing summary;
  - our warnings and errors, and any library's errors (also those raised in the Ray actors,
    which Ray forwards with a ``(RolloutWorker pid=...)`` prefix).
Files, in the run folder's ``logs/``:
  - ``driver.log``: every logger of this process (Ray's, transformers', ours) at INFO and up;
  - ``trainer-K.log``, ``rollout-K.log``: each Ray actor's whole stdout and stderr (vLLM,
    DeepSpeed, torch's C++ warnings, progress bars), see rollout/logs.py.
``tokencredit train --verbose`` (or ``logging.level: debug``) shows all of it on the console too,
as the libraries print it; ``logging.level: warning`` keeps only warnings, errors and the summary.

Command output (``tokencredit recipes``, ``config-keys``, ``--print-config``) is not logging: it
goes to stdout with ``print``.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
from pathlib import Path

from rollout.logs import ENV_DIR, ENV_VERBOSE, FILE_FORMAT, OURS, ShortFormatter, is_ours

log = logging.getLogger(__name__)
LEVELS = ("debug", "info", "warning")
_TAG = "_tokencredit_handler"
_state: dict = {"verbose": False, "level": logging.INFO, "log_dir": None, "console": None}


class _ConsoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _state["verbose"]:
            return record.levelno >= (logging.DEBUG if is_ours(record.name) else logging.INFO)
        if is_ours(record.name):
            return record.levelno >= _state["level"]
        return record.levelno >= logging.ERROR


class _ConsoleHandler(logging.Handler):
    """stderr, looked up at each record; through rich (colours, above a live progress bar) on a terminal."""

    STYLES = {logging.WARNING: "yellow", logging.ERROR: "bold red", logging.CRITICAL: "bold red"}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            rich = console()
            if rich is not None:  # a Text keeps the style to this line (not the live bar printed after it)
                from rich.text import Text

                rich.print(Text(text, style=self.STYLES.get(record.levelno, "")), highlight=False, soft_wrap=True)
            else:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


class _Pending(logging.Handler):
    """Holds the records logged before the run folder exists; they go to driver.log once it does."""

    def __init__(self, capacity: int = 5000) -> None:
        super().__init__(logging.DEBUG)
        self.records: collections.deque = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def console():
    """The process's rich Console on stderr when stderr is a terminal, else None (plain lines)."""
    isatty = getattr(sys.stderr, "isatty", None)
    if not (callable(isatty) and isatty()) or os.environ.get("TERM") == "dumb":
        return None
    if _state["console"] is None:
        from rich.console import Console

        _state["console"] = Console(stderr=True)
    return _state["console"]


def _tagged(handler: logging.Handler, kind: str) -> logging.Handler:
    setattr(handler, _TAG, kind)
    return handler


def _handlers(kind: str | None = None) -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, _TAG, None) and kind in (None, getattr(h, _TAG))]


def setup_logging(verbose: bool = False, level: str = "info") -> None:
    """Console handler (and a buffer for driver.log) on the root logger; safe to call again.

    ``verbose`` (``--verbose``, or ``level="debug"``) shows every library's output on the console."""
    level = level.lower()
    if level not in LEVELS:
        raise ValueError(f"logging.level={level!r} is not one of {list(LEVELS)}")
    _state["verbose"] = verbose or level == "debug"
    _state["level"] = logging.WARNING if level == "warning" else logging.INFO
    root = logging.getLogger()
    if not _handlers("console"):
        handler = _tagged(_ConsoleHandler(), "console")
        handler.setFormatter(ShortFormatter())
        handler.addFilter(_ConsoleFilter())
        root.addHandler(handler)
    if not _handlers("file") and not _handlers("pending"):
        root.addHandler(_tagged(_Pending(), "pending"))
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    for name in OURS:  # ours reach the root handlers (and pytest's caplog), nothing of their own
        log = logging.getLogger(name)
        log.handlers[:] = [h for h in log.handlers if not isinstance(h, logging.StreamHandler)]
        log.setLevel(logging.DEBUG)
        log.propagate = True


def quiet_libraries() -> None:
    """Process-wide defaults for a training run's driver (and the local Ray actors it starts, which
    inherit the environment): no tokenizers fork warnings, no tqdm bars unless verbose."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not _state["verbose"]:
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    adopt_library_loggers()


def adopt_library_loggers() -> None:
    """Libraries that print through handlers of their own (Ray, transformers) log through ours instead:
    to driver.log, and to the console only when they are errors (or with --verbose)."""
    if "ray" in sys.modules:
        log = logging.getLogger("ray")
        log.handlers[:] = []
        log.propagate = True
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        hf_logging.enable_propagation()
        if not _state["verbose"]:
            hf_logging.disable_progress_bar()


def attach_run_log(run_dir: Path) -> Path:
    """Start ``RUN_DIR/logs/driver.log`` (with what was logged so far) and point the Ray actors
    started from now on at ``RUN_DIR/logs/`` (``ray_runtime_env``). Returns the logs folder."""
    log_dir = Path(run_dir).resolve() / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if not _handlers("console"):  # train() called from Python, not the CLI: the same console lines
        setup_logging()
    root = logging.getLogger()
    for old in _handlers("file"):
        root.removeHandler(old)
        old.close()
    handler = _tagged(logging.FileHandler(log_dir / "driver.log", encoding="utf-8"), "file")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    for pending in _handlers("pending"):
        root.removeHandler(pending)
        for record in pending.records:  # type: ignore[attr-defined]
            handler.handle(record)
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    _state["log_dir"], _state["attached"] = log_dir, True
    os.environ[ENV_DIR] = str(log_dir)  # local Ray actors inherit it; remote ones get ray_runtime_env()
    os.environ[ENV_VERBOSE] = "1" if _state["verbose"] else "0"
    adopt_library_loggers()
    shown = "also in" if _state["verbose"] else "in"
    hint = "" if _state["verbose"] else "; --verbose shows them here"
    log.info("run folder: %s (engine logs %s %s/%s)", relative(run_dir), shown, relative(log_dir), hint)
    return log_dir


def detach_run_log() -> None:
    """End of a run: close driver.log; actors started later no longer log into this run's folder.
    ``run_log_dir`` still names it (for an error message that points there)."""
    root = logging.getLogger()
    for old in _handlers("file"):
        root.removeHandler(old)
        old.close()
    for key in (ENV_DIR, ENV_VERBOSE):
        os.environ.pop(key, None)
    _state["attached"] = False


def run_log_dir() -> Path | None:
    """The logs folder of the current (or last) run in this process; None before ``attach_run_log``."""
    return _state["log_dir"]


def is_verbose() -> bool:
    return bool(_state["verbose"])


def ray_runtime_env() -> dict:
    """The job-level runtime_env for ``ray.init``: tells every actor where to log (rollout/logs.py)."""
    if not _state.get("attached"):
        return {}
    return {"env_vars": {ENV_DIR: str(_state["log_dir"]), ENV_VERBOSE: "1" if _state["verbose"] else "0"}}


def relative(path: Path | str) -> str:
    """``path`` relative to the working folder when it is inside it (shorter lines), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)
