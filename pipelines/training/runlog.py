"""What a run reports: a Rich progress bar, JSON-lines metrics, skipped samples, TensorBoard.

``OUT/metrics.jsonl`` gets one object per logged step ({"step", "split", values...}) and
``OUT/errors.jsonl`` one per skipped sample (shard, key, stage, message). TensorBoard
scalars go to ``OUT/tensorboard`` when the ``tensorboard`` package is installed.
Only rank 0 reports; the other ranks hold a disabled logger.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vqtok.pipelines.errors import SampleError


def _tensorboard_writer(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory))


class RunLogger:
    def __init__(self, out: Path, *, enabled: bool = True, progress: bool = True,
                 tensorboard: bool = True) -> None:
        self.out = out
        self.enabled = enabled
        self.progress = progress and enabled
        self.tensorboard = None
        if enabled:
            out.mkdir(parents=True, exist_ok=True)
            self.tensorboard = _tensorboard_writer(out / "tensorboard") if tensorboard else None

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        """Append {"step", "split", **values} to metrics.jsonl (and TensorBoard)."""
        if not self.enabled:
            return
        record = {"step": step, "split": split, "time": round(time.time(), 3), **values}
        with (self.out / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(f"{split}/{name}", value, step)

    def sample_error(self, error: SampleError) -> None:
        if not self.enabled:
            return
        with (self.out / "errors.jsonl").open("a") as f:
            f.write(json.dumps(error.__dict__, sort_keys=True) + "\n")
        print(f"skipped: {error.describe()}", file=sys.stderr)

    @contextmanager
    def progress_bar(
        self, total: int, done: int
    ) -> Iterator[Callable[[int, dict[str, float]], None]]:
        """Yields ``update(step, values)``: step, loss, steps/s and ETA on a Rich bar."""
        if not self.progress:
            yield lambda step, values: None
            return
        bar = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.2f} steps/s"),
            TimeRemainingColumn(), console=Console(stderr=True),
        )
        task = bar.add_task("train", total=total, completed=done, loss=float("nan"), rate=0.0)
        start = time.monotonic()

        def update(step: int, values: dict[str, float]) -> None:
            rate = (step - done) / max(time.monotonic() - start, 1e-9)
            bar.update(task, completed=step, loss=values.get("loss", float("nan")), rate=rate)

        with bar:
            yield update

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
