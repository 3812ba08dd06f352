"""Metrics out: live progress bar, metrics.jsonl, TensorBoard, optional W&B, PNG report, closing summary."""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

# (label, metric) shown per step, in this order, when the step has them (GRPO family, then DPO family)
STEP_FIELDS = (("reward", "reward/total/mean"), ("accuracy", "train/accuracy"),
               ("pair accuracy", "train/reward_accuracy"), ("margin", "train/reward_margin"),
               ("held-out greedy", "eval/greedy_acc"), ("held-out pair accuracy", "eval/reward_accuracy"))


class Timer:
    """Per-step timing breakdown: ``with timer("generation"): ...`` -> timing/generation seconds."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def pop(self) -> dict[str, float]:
        out = {f"timing/{k}": v for k, v in self.times.items()}
        out["timing/step"] = sum(self.times.values())
        self.times = {}
        return out


class Tracker:
    """Writes each step's metrics to ``metrics.jsonl``, TensorBoard and W&B.

    ``start_step`` is the step the run starts from: k when it resumes from the checkpoint of step
    k, 0 for a fresh run. The log must read as one run, so rows a previous attempt wrote after
    step k (steps it computed again, or never checkpointed) are dropped from ``metrics.jsonl``
    before anything is appended (all rows when k = 0), and TensorBoard purges events at steps > k
    (``SummaryWriter(purge_step=k + 1)``; k = 0 purges every step). A W&B run is resumed with
    ``resume="allow"`` and not rewritten.
    """

    def __init__(self, run_dir: Path, cfg, total_steps: int, start_step: int = 0) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        self.wandb = None
        truncate_metrics(self.path, start_step)
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = start_step + 1 if start_step > 0 else 0
            self.tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=purge)
        if cfg.logging.wandb_project:
            try:
                import wandb
            except ImportError:
                raise RuntimeError("logging.wandb_project is set but wandb is not installed: pip install wandb") from None
            self.wandb = wandb.init(project=cfg.logging.wandb_project, mode=cfg.logging.wandb_mode,
                                    dir=str(run_dir), name=run_dir.name, resume="allow")
        self.pass_k = cfg.eval.pass_k
        self.bar = StepProgress(cfg.name, total_steps, start_step, live=cfg.logging.progress)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step":
                    self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(row, step=step)
        if step == 0 and (held_out := eval_text(metrics, self.pass_k)):
            log.info("held-out %s (before training)", held_out)

    def progress(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.update(step, metrics)

    def close(self) -> None:
        self.bar.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def step_text(metrics: dict[str, float]) -> str:
    parts = [f"{label} {metrics[key]:.3g}" for label, key in STEP_FIELDS if key in metrics]
    if "timing/step" in metrics:
        parts.append(f"{metrics['timing/step']:.0f} s")
    return ", ".join(parts)


def eval_text(metrics: dict[str, float], pass_k: int) -> str:
    """``accuracy: greedy 31.2%, pass@4 68.8%`` from one evaluation's metrics ('' when none)."""
    parts = [f"{label} {metrics[key]:.1%}" for label, key in eval_fields(pass_k) if key in metrics]
    return "accuracy: " + ", ".join(parts) if parts else ""


def eval_fields(pass_k: int) -> tuple[tuple[str, str], ...]:
    return (("greedy", "eval/greedy_acc"), (f"pass@{pass_k}", "eval/pass_at_k"),
            ("pair accuracy", "eval/reward_accuracy"))


class StepProgress:
    """Training progress: a live rich bar when stderr is a terminal (log lines print above it), else
    one ``step k/N: reward ..., accuracy ...`` line per step (logs, CI, pipes)."""

    def __init__(self, name: str, total: int, start: int, live: bool = True) -> None:
        from rl.log import console

        self.total, self.bar, self.task = total, None, None
        con = console() if live else None
        if con is not None:
            from rich import progress as rp

            self.bar = rp.Progress(rp.TextColumn("[bold]{task.description}"), rp.BarColumn(), rp.MofNCompleteColumn(),
                                   rp.TextColumn("steps"), rp.TimeElapsedColumn(), rp.TextColumn("eta"),
                                   rp.TimeRemainingColumn(), rp.TextColumn("{task.fields[stats]}"), console=con,
                                   refresh_per_second=1)
            self.task = self.bar.add_task(name, total=total, completed=start, stats="")
            self.bar.start()

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=step, stats=step_text(metrics))
        else:
            log.info("step %d/%d: %s", step, self.total, step_text(metrics))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def run_summary(run_dir: Path, cfg, seconds: float) -> list[str]:
    """The closing lines of ``tokencredit train``: held-out accuracy before -> after, time taken, and
    where the run folder, report.png, the HF export and the engine logs are."""
    from rl.log import relative

    run_dir = Path(run_dir)
    rows = read_metrics(run_dir / "metrics.jsonl")
    last = max((r["step"] for r in rows), default=0)
    lines = [f"done: {cfg.name}, {last} step{'' if last == 1 else 's'} in {format_seconds(seconds)}"]
    held_out, steps = [], set()
    for label, key in eval_fields(cfg.eval.pass_k):
        points = [(r["step"], r[key]) for r in rows if key in r]
        steps.update(s for s, _ in points)
        if len(points) > 1:
            held_out.append(f"{label} {points[0][1]:.1%} -> {points[-1][1]:.1%}")
        elif points:
            held_out.append(f"{label} {points[0][1]:.1%}")
    if held_out:
        span = f"step {min(steps)} -> {max(steps)}" if len(steps) > 1 else f"step {max(steps)}"
        lines.append(f"  held-out accuracy   {', '.join(held_out)}  ({span})")
    lines.append(f"  run folder          {relative(run_dir)}")
    for label, path in (("report", run_dir / "report.png"), ("HF model", run_dir / "hf_model"),
                        ("engine logs", run_dir / "logs")):
        if path.exists():
            lines.append(f"  {label:<20}{relative(path)}")
    return lines


def truncate_metrics(path: Path, start_step: int) -> int:
    """Keep the rows of ``path`` with step <= ``start_step`` (none when it is 0); returns rows dropped.

    A line that is not JSON (a write torn by the crash) is dropped too. Rewritten through a
    temporary file and a rename, so a crash here leaves the old or the new log."""
    if not path.is_file():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    steps = [_step(line) for line in lines]
    keep = [line for line, s in zip(lines, steps) if start_step > 0 and s is not None and s <= start_step]
    if len(keep) == len(lines):
        return 0
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, path)
    return len(lines) - len(keep)


def _step(line: str) -> int | None:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_report(run_dir: Path, title: str) -> Path | None:
    """reward / accuracy curves (train and held-out) as ``report.png`` in the run folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.jsonl")
    if not rows:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("reward", ["reward/total/mean", "train/reward_margin", "eval/reward_margin"]),  # DPO: implicit rewards
              ("accuracy", ["train/accuracy", "eval/greedy_acc", "eval/pass_at_k", "train/reward_accuracy",
                            "eval/reward_accuracy"]),
              ("seconds", ["timing/step", "timing/generation", "timing/update"])]
    for ax, (name, keys) in zip(axes, panels):
        for k in keys:
            pts = [(r["step"], r[k]) for r in rows if k in r]
            if pts:
                ax.plot(*zip(*pts), marker="o" if k.startswith("eval") else None, label=k)
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a panel with no curve (no eval yet) has no legend, and no warning
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    out = run_dir / "report.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
