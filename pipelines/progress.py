"""Progress for shard jobs: a Rich bar on a terminal, plain periodic lines otherwise.

Shows shards done/total, samples/s, errors and an ETA (from the shard rate).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class ShardProgress:
    """Context manager; call `advance(samples=, errors=, shards=)` as work completes."""

    def __init__(self, total_shards: int, *, label: str = "encode", enabled: bool = True,
                 interval: float = 10.0, stream: TextIO | None = None) -> None:
        self.total = total_shards
        self.label = label
        self.enabled = enabled
        self.interval = interval
        self.stream = stream or sys.stderr
        self.samples = self.errors = self.shards = 0
        self._start = self._last_line = time.monotonic()
        self._rich: Progress | None = None

    def __enter__(self) -> ShardProgress:
        if self.enabled and self.stream.isatty():
            self._rich = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "shards  {task.fields[rate]:.1f} samples/s  {task.fields[errors]} errors"
                ),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
            )
            self._rich.start()
            self._task = self._rich.add_task(self.label, total=self.total, rate=0.0, errors=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._rich is not None:
            self._rich.stop()
        elif self.enabled:
            self._print_line()

    @property
    def rate(self) -> float:
        """Samples per second since the start."""
        return self.samples / max(time.monotonic() - self._start, 1e-9)

    def advance(self, samples: int = 0, errors: int = 0, shards: int = 0) -> None:
        self.samples += samples
        self.errors += errors
        self.shards += shards
        if self._rich is not None:
            self._rich.update(self._task, advance=shards, rate=self.rate, errors=self.errors)
        elif self.enabled and time.monotonic() - self._last_line >= self.interval:
            self._print_line()

    def _print_line(self) -> None:
        self._last_line = time.monotonic()
        print(f"{self.label}: {self.shards}/{self.total} shards, {self.samples} samples, "
              f"{self.rate:.1f} samples/s, {self.errors} errors", file=self.stream, flush=True)
