"""One error policy for every pipeline stage (tar read, keys, decode, model, write).

A failing sample is either fatal (`on_error="raise"`) or skipped: each skip is counted and
written as one JSON line (shard, key, stage, message) so that no sample is dropped silently.
`max_error_rate` turns too many skips into a failure once the run is over.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

OnError = Literal["raise", "skip"]
STAGES = ("tar", "keys", "decode", "label", "model", "write")
# Decoders name their input by repr, e.g. "<_io.BytesIO object at 0x7f...>": drop the address,
# so that the error logs of two runs over the same data are identical.
OBJECT_ADDRESS = re.compile(r" (?:object )?at 0x[0-9a-fA-F]+")


class PipelineError(Exception):
    """A failure the user can act on; the CLI prints its message (no traceback) and exits 1."""


class UsageError(PipelineError):
    """Bad arguments or inputs given by the user; the CLI exits 2."""


@dataclass(frozen=True)
class SampleError:
    """One sample that could not go through a stage."""

    shard: str
    key: str
    stage: str
    message: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", OBJECT_ADDRESS.sub("", self.message))

    def describe(self) -> str:
        return f"{self.shard}: sample {self.key!r} failed at {self.stage}: {self.message}"


class ErrorPolicy:
    """Applies `on_error` to sample failures and logs the skipped ones as JSON lines."""

    def __init__(self, on_error: OnError = "raise", max_error_rate: float = 1.0) -> None:
        if on_error not in ("raise", "skip"):
            raise UsageError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
        if not 0.0 <= max_error_rate <= 1.0:
            raise UsageError(f"max_error_rate must lie in [0, 1], got {max_error_rate}")
        self.on_error = on_error
        self.max_error_rate = max_error_rate

    def handle(self, error: SampleError, log: list[SampleError]) -> None:
        """Raise `PipelineError` under "raise"; otherwise append `error` to `log`."""
        if self.on_error == "raise":
            raise PipelineError(error.describe() + " (use --on-error skip to skip bad samples)")
        log.append(error)

    def check_rate(self, skipped: int, total: int) -> None:
        """Fail when the fraction of skipped samples exceeds `max_error_rate`."""
        if total and skipped / total > self.max_error_rate:
            raise PipelineError(
                f"{skipped} of {total} samples failed ({skipped / total:.1%}), "
                f"more than --max-error-rate {self.max_error_rate:.1%}"
            )


def write_error_log(path: Path, errors: list[SampleError]) -> None:
    """Write one JSON object per skipped sample; removes a stale log when there is none."""
    if not errors:
        path.unlink(missing_ok=True)
        return
    lines = (json.dumps(error.__dict__, sort_keys=True) for error in errors)
    path.write_text("\n".join(lines) + "\n")
