"""Helpers shared by the CLI modules: one console, one way to fail, one way to run a job."""

from __future__ import annotations

import errno
import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from vqtok.pipelines import PipelineError, UsageError

T = TypeVar("T")

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit: 2 for bad input or usage, 1 for a failed job."""
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


interrupt_reported = False  # whether a command said why it stopped on Ctrl-C


def exit_interrupted(message: str) -> NoReturn:
    """Say in one line what Ctrl-C left behind, and exit 130."""
    global interrupt_reported
    typer.echo(message, err=True)
    interrupt_reported = True
    raise typer.Exit(130)


def print_table(table: Table) -> None:
    """Print `table` on stdout whole, at its natural width even when piped or narrow.

    Rich otherwise fits tables to 80 columns on a pipe and cuts cells (preset names users
    must copy among them); a terminal narrower than the table wraps its lines instead.
    """
    options = out.options.update(max_width=1 << 16)
    width = Measurement.get(out, options, table).maximum
    Console(width=max(width, out.width), soft_wrap=False, highlight=False).print(table)


def write_json(path: Path | None, payload: object) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {path}")


def run_job(job: Callable[[], T]) -> T:
    """Run a library call, turning its errors into messages and exit codes (never a traceback)."""
    try:
        return job()
    except UsageError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except PipelineError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        exit_interrupted("interrupted; partial outputs removed")
    except OSError as exc:
        if exc.errno in PATH_ERRORS:  # a path the user gave cannot be used as asked
            typer.echo(f"error: {describe_os_error(exc)}", err=True)
            raise typer.Exit(2) from None
        typer.echo(f"error: {describe_os_error(exc)}", err=True)
        raise typer.Exit(1) from None


# OS errors that mean a path given by the user cannot be used as asked (exit 2, bad input),
# with the words that say why; other OS errors (a full disk, a failing device) are exit 1.
PATH_ERRORS = {
    errno.EACCES: "permission denied (not writable or not readable by this user)",
    errno.EPERM: "operation not permitted",
    errno.EEXIST: "exists and is a file, where a folder is needed",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EISDIR: "is a folder, where a file is needed",
    errno.ENAMETOOLONG: "the name is too long for the file system",
    errno.ELOOP: "too many symbolic links",
    errno.EROFS: "the file system is read-only",
}


def describe_os_error(exc: OSError) -> str:
    """One line naming the path and the condition, e.g. "out: the file system is read-only"."""
    reason = PATH_ERRORS.get(exc.errno) or exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    name = str(exc.filename)
    shown = name if len(name) <= 120 else f"{name[:60]}...{name[-40:]}"
    return f"{shown}: {reason}"


@contextmanager
def echo_warnings() -> Iterator[None]:
    """Show each warning the library raises inside as one `warning: ...` line on stderr.

    Each is shown when raised.
    """
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_: typer.echo(f"warning: {message}", err=True)
        yield


def print_summary(summary: Any) -> None:
    typer.echo(json.dumps(summary.to_dict() if hasattr(summary, "to_dict") else summary, indent=2))


CONFIG_HELP = "Job config as TOML or JSON; flags, then --set, override it."
SET_HELP = "Override any config key (repeatable), e.g. --set runtime.batch_size=32."


def default_of(config_class: type, key: str) -> Any:
    """The dataclass default of a dotted `key`, for help texts: defaults live in one place."""
    value: Any = config_class._defaults()
    for part in key.split("."):
        value = value[part]
    return value


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--frame-size must look like HxW (e.g. 64x64), not {text!r}") from None
    return height, width
