"""Compression commands: `compress`, `decompress`, `fit-prior`, `eval rd` and `eval nll`.

Thin: flags become configs and calls into `vqtok.pipelines`; library errors become a
one-line message and exit 2 (bad input, wrong model, unreadable .vqt) or 1 (failure).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from vqtok.cli.common import (
    CONFIG_HELP,
    SET_HELP,
    default_of,
    parse_size,
    print_summary,
    print_table,
    run_job,
    write_json,
)
from vqtok.cli.data import max_memory_help
from vqtok.pipelines.compression.fit_prior import FitPriorConfig, fit_prior_shards
from vqtok.pipelines.compression.vqt import CompressConfig, compress_file, decompress_file
from vqtok.pipelines.config import RuntimeOptions
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.evaluation.nll import NLLConfig, evaluate_nll
from vqtok.pipelines.evaluation.rd import RDConfig, evaluate_rd, split_paths

C = CompressConfig
P = FitPriorConfig


def compress(
    checkpoint: Path = typer.Argument(
        ..., help="Tokenizer checkpoint directory (with a fitted prior)."
    ),
    source: Path = typer.Argument(
        ..., help="Image, audio or video file, matching the model's modality."
    ),
    target: Path = typer.Argument(..., help="Output .vqt file."),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    device: str | None = typer.Option(
        None, help=f"Torch device for the encoder (default: {default_of(C, 'runtime.device')})."
    ),
    batch_size: int | None = typer.Option(
        None,
        help=f"Model inputs per encoder call (default: {default_of(C, 'runtime.batch_size')}).",
    ),
    max_memory: str | None = typer.Option(None, help=max_memory_help()),
    window_seconds: float | None = typer.Option(
        None,
        help=f"Audio window length in seconds (default: {default_of(C, 'media.window_seconds')}).",
    ),
    mono: bool | None = typer.Option(
        None, "--mono", help="Mix multichannel audio down for a 1-channel model."
    ),
    clip_stride: int | None = typer.Option(
        None, help="Video: frames between clip starts (default: the clip length)."
    ),
    frame_size: str | None = typer.Option(
        None, help="Video: resize frames to HxW before encoding (default: native size)."
    ),
    max_side: int | None = typer.Option(
        None,
        help="Images and video: shrink so the longer side is at most this many pixels, "
        "keeping the aspect ratio; decompress restores the original size (default: native).",
    ),
    levels: int | None = typer.Option(
        None, help="Residual VQ: keep only the first LEVELS levels (default: all)."
    ),
    coder: str | None = typer.Option(
        None,
        help="ans-static, ans-adaptive, auto (the shortest of these, and of the LM's with "
        "--lm), or lm (a token LM's next-code distributions; needs --lm) "
        f"(default: {default_of(C, 'coder')}).",
    ),
    lm: Path | None = typer.Option(
        None, help="Token LM directory (vqtok lm train) for --coder lm or auto."
    ),
) -> None:
    """Compress one media file to .vqt.

    Prints the rates (log2 K, empirical entropy, bytes written).
    """

    def job():
        options = CompressConfig.load(
            config,
            {
                "runtime.device": device,
                "runtime.batch_size": batch_size,
                "runtime.max_memory": max_memory,
                "media.window_seconds": window_seconds,
                "media.mono": mono,
                "media.clip_stride": clip_stride,
                "media.frame_size": parse_size(frame_size),
                "media.max_side": max_side,
                "levels": levels,
                "coder": coder,
            },
            set_,
        )
        return compress_file(checkpoint, source, target, options, lm=lm)

    print_summary(run_job(job))


def decompress(
    source: Path = typer.Argument(..., help="A .vqt file."),
    target: Path = typer.Argument(
        ..., help="Restored media (.png, .wav/.flac or .mp4 by modality)."
    ),
    checkpoint: Path | None = typer.Option(
        None, help="Checkpoint to decode with (default: the one the file records)."
    ),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    device: str | None = typer.Option(
        None,
        help=f"Torch device for the decoder (default: {default_of(RuntimeOptions, 'device')}).",
    ),
    batch_size: int | None = typer.Option(
        None,
        help=f"Code pieces per decoder call (default: {default_of(RuntimeOptions, 'batch_size')}).",
    ),
    max_memory: str | None = typer.Option(None, help=max_memory_help()),
    lm: Path | None = typer.Option(
        None, help="Token LM of an LM-coded file (default: the one the file records)."
    ),
) -> None:
    """Decompress a .vqt file back to media."""
    def job():
        runtime = RuntimeOptions.load(
            config, {"device": device, "batch_size": batch_size, "max_memory": max_memory}, set_
        )
        return decompress_file(source, target, checkpoint, runtime, lm=lm)

    run_job(job)
    typer.echo(f"wrote {target}", err=True)


def fit_prior(
    checkpoint: Path = typer.Argument(..., help="Tokenizer checkpoint directory."),
    shards: str = typer.Argument(
        ..., help="Training media shards: folder, file, brace pattern or URL."
    ),
    output: Path | None = typer.Option(
        None, help="Save the checkpoint with its prior here (default: in place)."
    ),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    batch_size: int | None = typer.Option(
        None, help=f"Model inputs per batch (default: {default_of(P, 'runtime.batch_size')})."
    ),
    workers: int | None = typer.Option(
        None, help=f"DataLoader workers reading and decoding (default: {default_of(P, 'workers')})."
    ),
    device: str | None = typer.Option(
        None, help=f"Torch device (default: {default_of(P, 'runtime.device')})."
    ),
    window_seconds: float | None = typer.Option(
        None,
        help=f"Audio window length in seconds (default: {default_of(P, 'media.window_seconds')}).",
    ),
    mono: bool | None = typer.Option(
        None, "--mono", help="Mix multichannel audio down for a 1-channel model."
    ),
    frame_size: str | None = typer.Option(
        None, help="Video: resize frames to HxW before encoding (default: native size)."
    ),
    max_memory: str | None = typer.Option(None, help=max_memory_help()),
) -> None:
    """Measure the prior (code frequencies) on training shards and store it in the checkpoint."""
    def job():
        options = FitPriorConfig.load(
            config,
            {
                "runtime.batch_size": batch_size,
                "runtime.max_memory": max_memory,
                "workers": workers,
                "runtime.device": device,
                "media.window_seconds": window_seconds,
                "media.mono": mono,
                "media.frame_size": parse_size(frame_size),
            },
            set_,
        )
        return fit_prior_shards(checkpoint, shards, output, options)

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
            raise UsageError(
                f"--sweep {item!r}: expected CODEC=N,N,... with whole numbers"
            ) from None
        if not codec.strip() or not sweeps[codec.strip()]:
            raise UsageError(f"--sweep {item!r}: expected CODEC=N,N,...")
    return sweeps


@eval_app.command("rd")
def rd(
    paths: list[Path] = typer.Argument(
        ..., help="Checkpoint directories, then media files or folders of them."
    ),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    baselines: str | None = typer.Option(
        None, help="Comma-separated codecs: jpeg,webp,avif | opus,mp3 | h264 (default: none)."
    ),
    out: Path = typer.Option(
        Path("rd"), help="Folder for the per-method JSON, rd.csv, rd-*.png and rd_config.json."
    ),
    window_seconds: float | None = typer.Option(
        None,
        help="Audio window length in seconds for the models "
        f"(default: {default_of(RDConfig, 'media.window_seconds')}).",
    ),
    mono: bool | None = typer.Option(
        None, "--mono", help="Mix multichannel audio down for a 1-channel model."
    ),
    device: str | None = typer.Option(
        None,
        help=f"Torch device for the models (default: {default_of(RDConfig, 'runtime.device')}).",
    ),
    sweep: list[str] = typer.Option(
        None,
        help="A codec's settings instead of its default sweep, e.g. "
        "--sweep jpeg=1,3,5,8 --sweep opus=6,8,12 (quality, or kbps for audio).",
    ),
    lm: list[Path] = typer.Option(
        None,
        help="A token LM (`vqtok lm train`) over one checkpoint's codes: adds that "
        "checkpoint's point with every level coded by the LM (repeatable).",
    ),
    max_memory: str | None = typer.Option(
        None, help=max_memory_help() + " Inputs whose comparison needs more are refused."
    ),
) -> None:
    """Rate-distortion curves of checkpoints (each residual level count) and classical codecs."""
    def job():
        codecs = (
            None
            if baselines is None
            else [name.strip() for name in baselines.split(",") if name.strip()]
        )
        options = RDConfig.load(
            config,
            {
                "baselines": codecs,
                "sweeps": parse_sweeps(sweep) if sweep else None,
                "lms": [str(path) for path in lm] if lm else None,
                "media.window_seconds": window_seconds,
                "media.mono": mono,
                "runtime.device": device,
                "runtime.max_memory": max_memory,
            },
            set_,
        )
        checkpoints, inputs = split_paths(paths)
        return evaluate_rd(checkpoints, inputs, out, options)

    curves = run_job(job)
    print_summary({curve["name"]: curve["results"] for curve in curves})


@eval_app.command("nll")
def nll(
    checkpoint: Path = typer.Argument(
        ...,
        help="A VAE, ladder VAE or CVAE checkpoint directory "
        "(CVAE: shards need .cls or .json conditions).",
    ),
    shards: list[str] = typer.Argument(..., help="Shards, folders of them or brace patterns."),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    samples: int | None = typer.Option(
        None,
        help="K, importance samples per input, for IWAE_K and the naive estimate "
        f"(default: {default_of(NLLConfig, 'samples')}).",
    ),
    batch_size: int | None = typer.Option(
        None, help=f"Inputs per batch (default: {default_of(NLLConfig, 'runtime.batch_size')})."
    ),
    limit: int | None = typer.Option(
        None, help="Evaluate at most this many inputs (default: 0, all)."
    ),
    json_out: Path = typer.Option(None, "--json", help="Also write the report to this JSON file."),
    pictures: Path = typer.Option(
        None, help="Also draw reconstructions, samples, traversals here (images)."
    ),
    device: str | None = typer.Option(
        None, help=f"Torch device (default: {default_of(NLLConfig, 'runtime.device')})."
    ),
) -> None:
    """Negative ELBO, IWAE bound, naive prior-sampling estimate, KL and active units, in nats."""
    def job():
        options = NLLConfig.load(
            config,
            {
                "samples": samples,
                "runtime.batch_size": batch_size,
                "limit": limit,
                "runtime.device": device,
            },
            set_,
        )
        return evaluate_nll(checkpoint, shards, options, pictures=pictures)

    report = run_job(job)
    write_json(json_out, report.to_dict())
    print_table(nll_table(report.to_dict()))


def nll_table(report: dict) -> Table:
    """The NLL report as rows of (quantity, value).

    Bounds in nats per input come first, then per-layer figures.
    """
    k = report["samples"]
    table = Table(
        "quantity", "value", title=f"{report['model']} on {report['inputs']} inputs (K = {k})"
    )
    rows = [
        ("NLL = -IWAE_K (nats)", report["nll"]),
        ("negative ELBO (nats)", -report["elbo"]),
        ("naive -log mean_K p(x|z), z ~ p(z) (nats)", -report["naive"]),
        ("reconstruction E_q log p(x|z) (nats)", report["reconstruction"]),
        ("KL (nats)", report["kl"]),
        (f"bits per dim ({report['bits_per_dim_basis']})", report["bits_per_dim"]),
    ]
    rows += [
        (f"KL {name.removeprefix('kl_')} (nats)", value)
        for name, value in report["kl_per_layer"].items()
    ]
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
