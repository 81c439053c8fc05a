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
    from vqtok.pipelines.bench.kernels import bench_kernels

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
    from vqtok.pipelines.bench.quantizer import bench_quantizer

    rows = bench_quantizer(n=n, k=k, d=d, steps=steps, compare=compare)
    print_rows(rows, "quantizer training step")
    write_json(json_path, rows)


@bench_app.command("pipeline")
def pipeline(
    preset: str = typer.Option("image-vq-f8", help="Model preset to encode with."),
    samples: int = typer.Option(512, min=1, help="Samples per throughput run."),
    size: int = typer.Option(128, min=8, help="Image side in pixels."),
    batch_size: int = typer.Option(16, min=1),
    workers: int = typer.Option(1, min=0, help="DataLoader workers decoding beside the model."),
    repeats: int = typer.Option(3, min=1, help="Paired model-only / pipeline runs."),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the result as JSON."),
) -> None:
    """Encode throughput through the whole pipeline against the model alone, and peak memory
    against the number of shards."""
    from vqtok.pipelines.bench.pipeline import bench_pipeline

    result = bench_pipeline(preset, samples=samples, size=size, batch_size=batch_size, workers=workers, repeats=repeats)
    out.print_json(data=result)
    write_json(json_path, result)


@bench_app.command("train")
def train(
    presets: list[str] = typer.Option(None, "--preset", help="Presets to time (default: all)."),
    steps: int = typer.Option(5, min=1),
    batch_size: int = typer.Option(2, min=1),
    device: str = typer.Option("cpu"),
    json_path: Path | None = typer.Option(None, "--json", help="Also write the rows as JSON."),
) -> None:
    """Training steps per second and peak memory for each preset."""
    from vqtok.pipelines.bench.train import bench_train

    rows = bench_train(presets or None, steps=steps, batch_size=batch_size, device=device)
    print_rows(rows, "training step")
    write_json(json_path, rows)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
