"""The `vqtok` command. Thin: every command parses flags and calls a library function."""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
import typer.core
from rich.markup import escape

from vqtok.cli import bench, compress, data, info, lm, models, train
from vqtok.cli.common import PATH_ERRORS, console, describe_os_error


class QuietHelpGroup(typer.core.TyperGroup):
    """The root command group; once built, its help is made quiet and literal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _quiet_flags(self)


app = typer.Typer(
    cls=QuietHelpGroup,
    name="vqtok",
    help="VQ-VAE tokenizers and compressed-representation pipelines for audio, images and video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (info, models, data, train, lm, compress, bench):
    module.register(app)


def _quiet_flags(command: typer.core.TyperCommand | typer.core.TyperGroup) -> None:
    """Show help texts as written, and no type beside on/off flags.

    Typer renders help as Rich markup, which would swallow `[ray]` in `vqtok[ray]`; and
    `--resume <bool>` reads as if the flag took a value.
    """
    command.help = escape(command.help) if command.help else command.help
    command.short_help = escape(command.short_help) if command.short_help else None
    for param in command.params:
        if param.param_type_name == "option":
            param.help = escape(param.help) if param.help else param.help
            if param.is_flag:
                param.metavar = ""
    make_help_option = command.get_help_option  # --help is made per call, not a param

    def quiet_help_option(ctx: typer.Context) -> object:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = quiet_help_option
    for sub in getattr(command, "commands", {}).values():
        _quiet_flags(sub)


def run() -> None:
    """Run the command line (from `vqtok.cli.main`, which guards the imports)."""
    try:
        app()
    except OSError as exc:  # a path or device problem met outside a job's own guard
        sys.stderr.write(f"error: {describe_os_error(exc)}\n")
        sys.exit(2 if exc.errno in PATH_ERRORS else 1)
    except Exception as exc:  # the last guard: a bug reads as one line, not a traceback
        if os.environ.get("VQTOK_DEBUG"):
            raise
        console.print(
            f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}\n"
            "This is a bug in vqtok; rerun with VQTOK_DEBUG=1 for the traceback and report it.",
            highlight=False,
            markup=True,
        )
        sys.exit(1)


if __name__ == "__main__":  # `python -m vqtok.cli.app` runs as `vqtok` does, Ctrl-C guard included
    from vqtok.cli.main import main

    main()
