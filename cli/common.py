"""Helpers shared by the CLI modules: one console, one way to fail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NoReturn

import typer
from rich.console import Console

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
