"""Compression commands: `compress`, `decompress`, `fit-prior`, `eval rd` and `eval nll`.

Thin: flags become configs and calls into `vqtok.pipelines`; library errors become a
one-line message and exit 2 (bad input, wrong model, unreadable .vqt) or 1 (failure).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vqtok.cli.common import out, parse_size, print_summary, run_job, write_json
from vqtok.pipelines.compression.fit_prior import fit_prior_shards
from vqtok.pipelines.compression.vqt import CompressConfig, compress_file, decompress_file
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.evaluation.rd import RDConfig, evaluate_rd, split_paths
from vqtok.pipelines.jobs.encode import EncodeConfig


def compress(
    checkpoint: Path = typer.Argument(..., help="Tokenizer checkpoint directory (with a fitted prior)."),
    source: Path = typer.Argument(..., help="Image, audio or video file, matching the model's modality."),
    target: Path = typer.Argument(..., help="Output .vqt file."),
    device: str = typer.Option("cpu", help="Torch device for the encoder."),
    batch_size: int = typer.Option(16, help="Model inputs per encoder call."),
    window_seconds: float = typer.Option(2.0, help="Audio window length in seconds."),
    clip_stride: int | None = typer.Option(None, help="Video: frames between clip starts (default: clip length)."),
    frame_size: str | None = typer.Option(None, help="Video: resize frames to HxW before encoding."),
    levels: int | None = typer.Option(None, help="Residual VQ: keep only the first LEVELS levels (default: all)."),
    coder: str = typer.Option("auto", help="ans-static, ans-adaptive, or auto (the shorter of the two)."),
) -> None:
    """Compress one media file to .vqt; prints the rates (log2 K, empirical entropy, bytes written)."""
    def job():
        config = CompressConfig(device, batch_size, window_seconds, clip_stride, parse_size(frame_size), levels,
                                coder)
        return compress_file(checkpoint, source, target, config)

    print_summary(run_job(job))


def decompress(
    source: Path = typer.Argument(..., help="A .vqt file."),
    target: Path = typer.Argument(..., help="Restored media (.png, .wav/.flac or .mp4 by modality)."),
    checkpoint: Path | None = typer.Option(None, help="Checkpoint to decode with (default: the one the file records)."),
    device: str = typer.Option("cpu", help="Torch device for the decoder."),
) -> None:
    """Decompress a .vqt file back to media."""
    run_job(lambda: decompress_file(source, target, checkpoint, device))
    typer.echo(f"wrote {target}", err=True)


def fit_prior(
    checkpoint: Path = typer.Argument(..., help="Tokenizer checkpoint directory."),
    shards: str = typer.Argument(..., help="Training media shards: folder, file, brace pattern or URL."),
    output: Path | None = typer.Option(None, help="Save the checkpoint with its prior here (default: in place)."),
    batch_size: int = typer.Option(16, help="Model inputs per batch."),
    workers: int = typer.Option(2, help="DataLoader workers reading and decoding."),
    device: str = typer.Option("cpu", help="Torch device."),
    window_seconds: float = typer.Option(2.0, help="Audio window length in seconds."),
    frame_size: str | None = typer.Option(None, help="Video: resize frames to HxW before encoding."),
) -> None:
    """Measure the code prior on training shards and store it in the checkpoint."""
    def job():
        config = EncodeConfig(batch_size=batch_size, workers=workers, device=device,
                              window_seconds=window_seconds, frame_size=parse_size(frame_size))
        return fit_prior_shards(checkpoint, shards, output, config)

    print_summary(run_job(job))


eval_app = typer.Typer(help="Evaluate tokenizers.", no_args_is_help=True)


def parse_sweeps(items: list[str]) -> dict[str, list[int]]:
    """``["jpeg=1,3,5"]`` -> ``{"jpeg": [1, 3, 5]}``; a malformed item is a usage error."""
    sweeps: dict[str, list[int]] = {}
    for item in items:
        codec, _, values = item.partition("=")
        try:
            sweeps[codec.strip()] = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise UsageError(f"--sweep {item!r}: expected CODEC=N,N,... with whole numbers") from None
        if not codec.strip() or not sweeps[codec.strip()]:
            raise UsageError(f"--sweep {item!r}: expected CODEC=N,N,...")
    return sweeps


@eval_app.command("rd")
def rd(
    paths: list[Path] = typer.Argument(..., help="Checkpoint directories, then media files or folders of them."),
    baselines: str = typer.Option("", help="Comma-separated codecs: jpeg,webp,avif | opus,mp3 | h264."),
    out: Path = typer.Option(Path("rd"), help="Folder for the per-method JSON, rd.csv and rd-*.png."),
    window_seconds: float = typer.Option(2.0, help="Audio window length in seconds for the models."),
    device: str = typer.Option("cpu", help="Torch device for the models."),
    sweep: list[str] = typer.Option(None, help="A codec's settings instead of its default sweep, e.g. "
                                    "--sweep jpeg=1,3,5,8 --sweep opus=6,8,12 (quality, or kbps for audio)."),
) -> None:
    """Rate-distortion curves of checkpoints (each residual level count) and classical codecs."""
    def job():
        checkpoints, inputs = split_paths(paths)
        codecs = [name.strip() for name in baselines.split(",") if name.strip()]
        sweeps = parse_sweeps(sweep or [])
        unused = sorted(set(sweeps) - set(codecs))
        if unused:
            raise UsageError(f"--sweep names {', '.join(unused)}, which --baselines does not include")
        return evaluate_rd(checkpoints, inputs, out, RDConfig(codecs, sweeps, window_seconds, device))

    curves = run_job(job)
    print_summary({curve["name"]: curve["results"] for curve in curves})


@eval_app.command("nll")
def nll(
    checkpoint: Path = typer.Argument(..., help="A VAE, ladder VAE or CVAE checkpoint directory (CVAE: shards need .cls or .json conditions)."),
    shards: list[str] = typer.Argument(..., help="Shards, folders of them or brace patterns."),
    samples: int = typer.Option(1000, help="K, importance samples per input (IWAE_K and the naive estimate)."),
    batch_size: int = typer.Option(32, help="Inputs per batch."),
    limit: int = typer.Option(0, help="Evaluate at most this many inputs (0: all)."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report to this JSON file."),
    pictures: Path = typer.Option(None, help="Also draw reconstructions, samples, traversals here (images)."),
    device: str = typer.Option("cpu", help="Torch device."),
) -> None:
    """Negative ELBO, IWAE bound, naive prior-sampling estimate, KL and active units, in nats."""
    from vqtok.pipelines.evaluation.nll import evaluate_nll

    report = run_job(lambda: evaluate_nll(checkpoint, shards, samples=samples, batch_size=batch_size,
                                          max_inputs=limit or None, device=device, pictures=pictures))
    write_json(json_out, report.to_dict())
    out.print(nll_table(report.to_dict()))


def nll_table(report: dict) -> Table:
    """The NLL report as rows of (quantity, value): bounds in nats per input, then per-layer figures."""
    k = report["samples"]
    table = Table("quantity", "value", title=f"{report['model']} on {report['inputs']} inputs (K = {k})")
    rows = [("NLL = -IWAE_K (nats)", report["nll"]), ("negative ELBO (nats)", -report["elbo"]),
            ("naive -log mean_K p(x|z), z ~ p(z) (nats)", -report["naive"]),
            ("reconstruction E_q log p(x|z) (nats)", report["reconstruction"]), ("KL (nats)", report["kl"]),
            ("bits per dim (from NLL)", report["bits_per_dim"])]
    rows += [(f"KL {name.removeprefix('kl_')} (nats)", value) for name, value in report["kl_per_layer"].items()]
    rows += [(f"active units {name}", units) for name, units in report["active_units"].items()]
    if report["skipped"]:
        rows.append(("skipped samples", report["skipped"]))
    for name, value in rows:
        table.add_row(name, f"{value:.3f}" if isinstance(value, float) else str(value))
    return table


def register(app: typer.Typer) -> None:
    app.command("compress")(compress)
    app.command("decompress")(decompress)
    app.command("fit-prior")(fit_prior)
    app.add_typer(eval_app, name="eval")
