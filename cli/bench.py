"""`vqtok bench ...`: benchmarks that print a table and can write JSON.

Each takes `--config FILE` and `--set key=value` like every job; its flags override the
config file and default to the config dataclass.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vqtok.cli.common import (
    CONFIG_HELP,
    SET_HELP,
    default_of,
    fail,
    out,
    print_table,
    run_job,
    write_json,
)
from vqtok.pipelines.bench.kernels import KernelsBenchConfig
from vqtok.pipelines.bench.media import MediaBenchConfig
from vqtok.pipelines.bench.pipeline import PipelineBenchConfig
from vqtok.pipelines.bench.quantizer import QuantizerBenchConfig
from vqtok.pipelines.bench.quantizers import QuantizersBenchConfig
from vqtok.pipelines.bench.train import TrainBenchConfig
from vqtok.pipelines.bench.video_pipeline import VideoPipelineBenchConfig

bench_app = typer.Typer(
    help="Benchmarks: speed and memory figures for BENCHMARKS.md.", no_args_is_help=True
)
JSON_HELP = "Also write the results, with the resolved config, as JSON."
K, Q, P, T = KernelsBenchConfig, QuantizerBenchConfig, PipelineBenchConfig, TrainBenchConfig
V = VideoPipelineBenchConfig


def print_rows(rows: list[dict], title: str) -> None:
    if not rows:
        out.print("no rows")
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    table = Table(*columns, title=title)
    for r in rows:
        table.add_row(*("" if r.get(c) is None else str(r.get(c)) for c in columns))
    print_table(table)


@bench_app.command("kernels")
def kernels(
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    quick: bool | None = typer.Option(None, "--quick", help="One small case, a few seconds."),
    device: str | None = typer.Option(
        None, help=f"cpu, cuda, or auto (default: {default_of(K, 'device')})."
    ),
    repeats: int | None = typer.Option(
        None,
        help=f"Timed runs per case, the median is reported (default: {default_of(K, 'repeats')}).",
    ),
    json_path: Path | None = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Nearest-code search and the EMA update against torch.cdist and an unchunked matmul."""
    from vqtok.pipelines.bench.kernels import bench_kernels

    options = run_job(
        lambda: K.load(config, {"quick": quick, "device": device, "repeats": repeats}, set_)
    )
    rows = bench_kernels(options)
    print_rows(rows, "kernels")
    write_json(json_path, {"config": options.to_dict(), "rows": rows})


@bench_app.command("quantizer")
def quantizer(
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    n: int | None = typer.Option(
        None, help=f"Encoder vectors per step (default: {default_of(Q, 'n')})."
    ),
    k: int | None = typer.Option(None, help=f"Codebook size (default: {default_of(Q, 'k')})."),
    d: int | None = typer.Option(None, help=f"Vector size (default: {default_of(Q, 'd')})."),
    steps: int | None = typer.Option(
        None, help=f"Timed steps, the median is reported (default: {default_of(Q, 'steps')})."
    ),
    compare: bool | None = typer.Option(
        None,
        "--compare/--no-compare",
        help="Also time vector_quantize_pytorch when it is installed (default: on).",
    ),
    json_path: Path | None = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Speed and memory of one VQ training step (nearest code, EMA, losses, backward) beside
    vector_quantize_pytorch. To compare the quality of quantizers, see `bench quantizers`."""
    from vqtok.pipelines.bench.quantizer import bench_quantizer

    options = run_job(
        lambda: Q.load(config, {"n": n, "k": k, "d": d, "steps": steps, "compare": compare}, set_)
    )
    rows = bench_quantizer(options)
    print_rows(rows, "quantizer training step")
    write_json(json_path, {"config": options.to_dict(), "rows": rows})


@bench_app.command("pipeline")
def pipeline(
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    preset: str | None = typer.Option(
        None, help=f"Model preset to encode with (default: {default_of(P, 'preset')})."
    ),
    samples: int | None = typer.Option(
        None, help=f"Samples per throughput run (default: {default_of(P, 'samples')})."
    ),
    size: int | None = typer.Option(
        None, help=f"Image side in pixels (default: {default_of(P, 'size')})."
    ),
    batch_size: int | None = typer.Option(
        None, help=f"Model inputs per batch (default: {default_of(P, 'batch_size')})."
    ),
    workers: int | None = typer.Option(
        None,
        help=f"DataLoader workers decoding beside the model (default: {default_of(P, 'workers')}).",
    ),
    repeats: int | None = typer.Option(
        None, help=f"Paired model-only / pipeline runs (default: {default_of(P, 'repeats')})."
    ),
    json_path: Path | None = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Encode throughput through the whole pipeline against the model alone, and peak memory
    against the number of shards."""
    from vqtok.pipelines.bench.pipeline import bench_pipeline

    options = run_job(
        lambda: P.load(
            config,
            {
                "preset": preset,
                "samples": samples,
                "size": size,
                "batch_size": batch_size,
                "workers": workers,
                "repeats": repeats,
            },
            set_,
        )
    )
    result = bench_pipeline(options)
    out.print_json(data=result)
    write_json(json_path, {"config": options.to_dict(), **result})


@bench_app.command("video-pipeline")
def video_pipeline(
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    preset: str | None = typer.Option(
        None, help=f"Video preset to encode with (default: {default_of(V, 'preset')})."
    ),
    video: str | None = typer.Option(
        None, help="A clip to re-encode (default: the built-in Big Buck Bunny clips)."
    ),
    height: int | None = typer.Option(
        None, help=f"Rows of the re-encoded clips (default: {default_of(V, 'height')})."
    ),
    seconds: float | None = typer.Option(
        None, help=f"Length of each clip (default: {default_of(V, 'seconds')})."
    ),
    clips: int | None = typer.Option(
        None, help=f"Clips in the shard (default: {default_of(V, 'clips')})."
    ),
    repeats: int | None = typer.Option(
        None, help=f"Paired model-only / pipeline runs (default: {default_of(V, 'repeats')})."
    ),
    max_memory: str | None = typer.Option(
        None, help=f"Budget of one model call (default: {default_of(V, 'max_memory')})."
    ),
    json_path: Path | None = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Video frames per second through the whole encode pipeline against the model alone
    on the same pieces."""
    from vqtok.pipelines.bench.video_pipeline import bench_video_pipeline

    options = run_job(
        lambda: V.load(
            config,
            {"preset": preset, "video": video, "height": height, "seconds": seconds,
             "clips": clips, "repeats": repeats, "max_memory": max_memory},
            set_,
        )
    )
    result = run_job(lambda: bench_video_pipeline(options))
    out.print_json(data=result)
    write_json(json_path, {"config": options.to_dict(), **result})


@bench_app.command("train")
def train(
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    presets: list[str] | None = typer.Option(
        None, "--preset", help="Presets to time, repeatable (default: every tokenizer preset)."
    ),
    steps: int | None = typer.Option(
        None, help=f"Timed steps (default: {default_of(T, 'steps')})."
    ),
    batch_size: int | None = typer.Option(
        None, help=f"Inputs per step (default: {default_of(T, 'batch_size')})."
    ),
    device: str | None = typer.Option(
        None, help=f"Torch device (default: {default_of(T, 'device')})."
    ),
    json_path: Path | None = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Training steps per second and peak memory for each preset."""
    from vqtok.pipelines.bench.train import bench_train

    options = run_job(
        lambda: T.load(
            config,
            {
                "presets": presets or None,
                "steps": steps,
                "batch_size": batch_size,
                "device": device,
            },
            set_,
        )
    )
    rows = bench_train(options)
    print_rows(rows, "training step")
    write_json(json_path, {"config": options.to_dict(), "rows": rows})


M = MediaBenchConfig


@bench_app.command("media")
def media(
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    video_height: list[int] | None = typer.Option(
        None, help=f"Video frame heights, repeatable (default: {default_of(M, 'video_heights')})."
    ),
    video_seconds: list[float] | None = typer.Option(
        None, help=f"Clip lengths, repeatable (default: {default_of(M, 'video_seconds')})."
    ),
    audio_minutes: list[float] | None = typer.Option(
        None, help=f"Audio lengths, repeatable (default: {default_of(M, 'audio_minutes')})."
    ),
    max_memory: str | None = typer.Option(
        None, help=f"Budget of the chunked runs (default: {default_of(M, 'max_memory')})."
    ),
    json_path: Path | None = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Peak RSS and throughput of `vqtok encode` and `vqtok decode` against input size, chunked
    (under --max-memory) against whole-input where the latter fits; each run in a child
    process. Pass an empty list with --set to leave a modality out (video_heights=[])."""
    from vqtok.pipelines.bench.media import bench_media

    options = run_job(
        lambda: M.load(
            config,
            {
                "video_heights": video_height or None,
                "video_seconds": video_seconds or None,
                "audio_minutes": audio_minutes or None,
                "max_memory": max_memory,
            },
            set_,
        )
    )
    rows = bench_media(options, log=lambda row: out.print(row))
    shown = [{k: v for k, v in row.items() if not k.endswith("_bytes")} for row in rows]
    print_rows(shown, "encode and decode against input size")
    write_json(json_path, {"config": options.to_dict(), "rows": rows})


QS = QuantizersBenchConfig


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


def _seeds(text: str | None) -> list[int] | None:
    names = _names(text)
    if names is None:
        return None
    try:
        return [int(name) for name in names]
    except ValueError:
        fail(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {text!r}")


@bench_app.command("quantizers")
def quantizers(
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    modality: str | None = typer.Option(
        None, help=f"image (image-vq-f8) or audio (audio-vq-16k) (default: "
        f"{default_of(QS, 'modality')})."
    ),
    quantizers_: str | None = typer.Option(
        None, "--quantizers", help="Comma-separated, of vq, vq-ema, vq-rotation, vq-cosine, "
        "rvq, fsq, lfq, simvq, rfsq (default: all but rfsq)."
    ),
    bits: int | None = typer.Option(
        None, help=f"Bits per latent position every quantizer gets: 8, 10, 12, 14 or 16 "
        f"(default: {default_of(QS, 'bits')})."
    ),
    steps: int | None = typer.Option(
        None, help=f"Training steps of every run (default: {default_of(QS, 'steps')})."
    ),
    batch_size: int | None = typer.Option(
        None, help=f"Crops per step (default: {default_of(QS, 'batch_size')})."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Comma-separated seeds, each a full run per quantizer; mean ± "
        "std when several, e.g. 0,1,2 (default: 0)."
    ),
    data: str | None = typer.Option(
        None, help="A folder of media files (split into training and held-out files) or "
        "training shards (then also --heldout); default: the demo's photos or speech."
    ),
    heldout: str | None = typer.Option(
        None, help="Held-out shards or media folder, when --data holds shards."
    ),
    out_dir: Path | None = typer.Option(
        None, "--out", help=f"Folder for shards, runs and results.json "
        f"(default: {default_of(QS, 'out')})."
    ),
    resume: bool | None = typer.Option(
        None, "--resume", help="Reuse the finished runs of an earlier run into --out."
    ),
    device: str | None = typer.Option(
        None, help=f"Torch device (default: {default_of(QS, 'device')})."
    ),
    json_path: Path | None = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """Quality, codebook use, entropy-coded bits, speed and memory of quantizers at matched
    bits per code, with the encoder, decoder, data and training budget held fixed."""
    from vqtok.pipelines.bench.quantizers import bench_quantizers, table_rows

    flags = {
        "modality": modality, "quantizers": _names(quantizers_), "bits": bits, "steps": steps,
        "batch_size": batch_size, "seeds": _seeds(seeds),
        "data": None if data is None else [data],
        "heldout": None if heldout is None else [heldout],
        "out": None if out_dir is None else str(out_dir), "resume": resume, "device": device,
    }
    options = run_job(lambda: QS.load(config, flags, set_))
    result = run_job(lambda: bench_quantizers(options, log=out.print))
    print_rows(table_rows(result["rows"], result["matching"]),
               f"quantizers at {options.bits} bits per code: {options.modality}, "
               f"{options.steps} steps x {options.batch_size}, seeds {options.seeds}")
    out.print(f"wrote {Path(options.out) / 'results.json'}")
    write_json(json_path, result)


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
