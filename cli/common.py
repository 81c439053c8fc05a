"""Helpers shared by the CLI modules: one console, one way to fail, one way to run a job."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from vqtok.pipelines import PipelineError, UsageError

T = TypeVar("T")

console = Console(stderr=True)
out = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a one-line error and exit: 2 for bad input or usage, 1 for a failed job."""
    console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


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
        typer.echo("interrupted; partial outputs removed", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


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
