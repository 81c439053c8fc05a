"""`vqtok bench ...`: benchmarks that print a table and can write JSON."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vqtok.cli.common import out, write_json

bench_app = typer.Typer(help="Benchmarks: speed and memory figures for BENCHMARKS.md.", no_args_is_help=True)


def print_rows(rows: list[dict], title: str) -> None:
    if not rows:
        out.print("no rows")
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = Table(*columns, title=title)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    out.print(table)


@bench_app.command("kernels")
def kernels(
    quick: bool = typer.Option(False, "--quick", help="One small case, a few seconds."),
    device: str = typer.Option("auto", help="cpu, cuda, or auto."),
    repeats: int = typer.Option(5, min=1, help="Timed runs per case (the median is reported)."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON."),
) -> None:
    """Nearest-code search and the EMA update against torch.cdist and an unchunked matmul."""
    from vqtok.pipelines.bench_kernels import bench_kernels

    rows = bench_kernels(device=device, quick=quick, repeats=repeats)
    print_rows(rows, "kernels")
    write_json(json_path, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
