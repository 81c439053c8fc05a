"""Placeholder: commands land here when their library code does."""

import typer


def register(app: typer.Typer) -> None:
    del app
