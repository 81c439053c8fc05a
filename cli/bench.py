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


@bench_app.command("quantizer")
def quantizer(
    n: int = typer.Option(65536, help="Encoder vectors per step."),
    k: int = typer.Option(8192, help="Codebook size."),
    d: int = typer.Option(64, help="Vector size."),
    steps: int = typer.Option(3, min=1, help="Timed steps (the median is reported)."),
    compare: bool = typer.Option(True, help="Also time vector_quantize_pytorch when it is installed."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON."),
) -> None:
    """A VQ training step (nearest code, EMA, losses, backward) beside vector_quantize_pytorch."""
    from vqtok.pipelines.bench_quantizer import bench_quantizer

    rows = bench_quantizer(n=n, k=k, d=d, steps=steps, compare=compare)
    print_rows(rows, "quantizer training step")
    write_json(json_path, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
