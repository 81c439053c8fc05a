"""The `vqtok` command. Thin: every command parses flags and calls a library function."""

from __future__ import annotations

import os
import sys

import typer

from vqtok.cli import bench, compress, data, info, lm, models, train
from vqtok.cli.common import console

app = typer.Typer(
    name="vqtok",
    help="VQ-VAE tokenizers and compressed-representation pipelines for audio, images and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (info, models, data, train, lm, compress, bench):
    module.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # the last guard: a bug reads as one line, not a traceback
        if os.environ.get("VQTOK_DEBUG"):
            raise
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {exc}\n"
            "This is a bug in vqtok; rerun with VQTOK_DEBUG=1 for the traceback and report it.",
            highlight=False,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
