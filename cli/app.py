"""The `vqtok` command. Thin: every command parses flags and calls a library function."""

from __future__ import annotations

import sys

import typer

from vqtok.cli import bench, compress, data, info, models, train

app = typer.Typer(
    name="vqtok",
    help="VQ-VAE tokenizers and compressed-representation pipelines for audio, images and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (info, models, data, train, compress, bench):
    module.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
