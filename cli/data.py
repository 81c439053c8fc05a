"""Data commands: `shards make`, `encode`, `decode`, `export-tokens`.

Thin: each command turns flags into a config and calls `vqtok.pipelines`. Library errors
become a one-line message and an exit code: 2 for usage, 1 for failure, 130 on Ctrl-C.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TypeVar

import typer

from vqtok.cli.common import (
    CONFIG_HELP,
    SET_HELP,
    default_of,
    echo_warnings,
    parse_size,
    print_summary,
    run_job,
)
from vqtok.pipelines import (
    DecodeConfig,
    EncodeConfig,
    UsageError,
    decode_shards,
    encode_shards,
    export_tokens,
    make_shards,
)
from vqtok.pipelines.config import default_max_memory, format_size
from vqtok.pipelines.jobs.ray_engine import RayConfig, encode_shards_ray

T = TypeVar("T")


class ModalityChoice(StrEnum):
    image = "image"
    audio = "audio"
    video = "video"


class OnErrorChoice(StrEnum):
    raise_ = "raise"
    skip = "skip"


class EngineChoice(StrEnum):
    local = "local"
    ray = "ray"


class FormatChoice(StrEnum):
    shards = "shards"
    files = "files"


class OrderChoice(StrEnum):
    interleaved = "interleaved"
    level_major = "level-major"


shards_app = typer.Typer(help="Make WebDataset shards from media folders.", no_args_is_help=True)


def max_memory_help() -> str:
    """The help of --max-memory, with this machine's default budget."""
    return (
        "Memory one model call may add for its activations, e.g. 2GiB, 512MiB, 1.5G; larger "
        "inputs go through in tiles and chunks with the same result (default: a quarter of "
        f"this machine's memory, here {format_size(default_max_memory())})."
    )


@shards_app.command("make")
def shards_make(
    src: Path = typer.Argument(
        ...,
        help="Folder of media files (searched recursively), or an array file of "
        "images: IDX (MNIST family, .gz or not), .npy, .npz.",
    ),
    out_dir: Path = typer.Argument(..., help="Where to write the .tar shards and shards.json."),
    modality: ModalityChoice = typer.Option(..., help="Which files to pack."),
    maxcount: int = typer.Option(1000, help="Samples per shard at most."),
    labels: Path | None = typer.Option(
        None,
        help="Folder: JSON object or CSV (file,label). Array file: an IDX/.npy/.npz "
        "array of labels. Integers become .cls, anything else .json.",
    ),
) -> None:
    """Pack media into WebDataset tar shards.

    The source is a folder of images, audio or video, or an array file of images.
    """
    summary = run_job(
        lambda: make_shards(src, out_dir, modality.value, maxcount=maxcount, labels=labels)
    )
    print_summary(summary)


E = EncodeConfig
D = DecodeConfig


def encode(
    checkpoint: Path = typer.Argument(..., help="Tokenizer checkpoint directory."),
    shards: str = typer.Argument(
        ..., help="Shards: folder, file, brace pattern, pipe: or http(s) URL."
    ),
    out_dir: Path = typer.Argument(..., help="Where to write the code shards."),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    batch_size: int | None = typer.Option(
        None, help=f"Model inputs per batch (default: {default_of(E, 'runtime.batch_size')})."
    ),
    workers: int | None = typer.Option(
        None, help=f"DataLoader workers reading and decoding (default: {default_of(E, 'workers')})."
    ),
    device: str | None = typer.Option(
        None, help=f"Torch device (default: {default_of(E, 'runtime.device')})."
    ),
    max_memory: str | None = typer.Option(None, help=max_memory_help()),
    resume: bool | None = typer.Option(
        None, "--resume", help="Skip done shards, redo partial ones."
    ),
    on_error: OnErrorChoice | None = typer.Option(
        None,
        help="Stop on a bad sample, or skip and log it "
        f"(default: {default_of(E, 'errors.on_error')}).",
    ),
    max_error_rate: float | None = typer.Option(
        None,
        help="Fail when more than this fraction is skipped "
        f"(default: {default_of(E, 'errors.max_error_rate')}).",
    ),
    window_seconds: float | None = typer.Option(
        None,
        help="Audio: cut each file's codes into windows of this many seconds (default: one "
        "code stream for the whole file).",
    ),
    clip_frames: int | None = typer.Option(
        None,
        help="Video: cut each video's codes into clips of this many frames (default: one "
        "code stream for the whole video).",
    ),
    clip_stride: int | None = typer.Option(
        None, help="Video: frames between clip starts, with --clip-frames (default: the clip)."
    ),
    frame_size: str | None = typer.Option(
        None, help="Video: resize frames to HxW before encoding (default: native size)."
    ),
    max_side: int | None = typer.Option(
        None,
        help="Images and video: shrink so the longer side is at most this many pixels, "
        "keeping the aspect ratio; decode restores the original size (default: native).",
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Show progress (default: on)."
    ),
    compress: bool | None = typer.Option(
        None,
        "--compress",
        help="Entropy-code the codes with the checkpoint's prior (.vqc, not .npy).",
    ),
    max_image_pixels: int | None = typer.Option(
        None,
        help="Skip images or video frames larger than this many pixels "
        f"(default: {default_of(E, 'media.max_image_pixels')}).",
    ),
    mono: bool | None = typer.Option(
        None,
        "--mono",
        help="Mix multichannel audio down to one channel for a 1-channel model (refused "
        "otherwise, so that no channel is lost without a word).",
    ),
    engine: EngineChoice = typer.Option(
        EngineChoice.local, help="Run here, or on a Ray cluster (pip install 'vqtok[ray]')."
    ),
    ray_address: str | None = typer.Option(
        None, help="Ray: cluster to join, e.g. auto (default: $RAY_ADDRESS or a local Ray)."
    ),
    concurrency: int | None = typer.Option(
        None, help="Ray: workers, each loading the model once (default: as many as fit)."
    ),
    cpus_per_worker: float | None = typer.Option(
        None,
        help="Ray: CPUs each worker reserves "
        f"(default: {default_of(RayConfig, 'cpus_per_worker')}).",
    ),
    gpus_per_worker: float | None = typer.Option(
        None,
        help="Ray: GPUs each worker reserves; use with --device cuda "
        f"(default: {default_of(RayConfig, 'gpus_per_worker')}).",
    ),
    max_retries: int | None = typer.Option(
        None,
        help="Ray: further attempts at a shard whose worker died "
        f"(default: {default_of(RayConfig, 'max_retries')}).",
    ),
) -> None:
    """Encode media shards to code shards (one per input, same basename and keys)."""
    def job():
        options = EncodeConfig.load(
            config,
            {
                "runtime.batch_size": batch_size,
                "workers": workers,
                "runtime.device": device,
                "runtime.max_memory": max_memory,
                "resume": resume,
                "errors.on_error": on_error,
                "errors.max_error_rate": max_error_rate,
                "media.window_seconds": window_seconds,
                "media.clip_frames": clip_frames,
                "media.clip_stride": clip_stride,
                "media.frame_size": parse_size(frame_size),
                "media.max_side": max_side,
                "progress": progress,
                "compress": compress,
                "media.max_image_pixels": max_image_pixels,
                "media.mono": mono,
            },
            set_,
        )
        ray_flags = {
            "address": ray_address,
            "concurrency": concurrency,
            "cpus_per_worker": cpus_per_worker,
            "gpus_per_worker": gpus_per_worker,
            "max_retries": max_retries,
        }
        if engine == EngineChoice.local:
            if any(value is not None for value in ray_flags.values()):
                raise UsageError(
                    "--ray-address, --concurrency, --cpus-per-worker, --gpus-per-worker and "
                    "--max-retries only apply with --engine ray"
                )
            return encode_shards(checkpoint, shards, out_dir, options)
        return encode_shards_ray(
            checkpoint, shards, out_dir, options, RayConfig.load(None, ray_flags)
        )

    with echo_warnings():
        print_summary(run_job(job))


def decode(
    checkpoint: Path = typer.Argument(..., help="The checkpoint the codes were made with."),
    code_shards: str = typer.Argument(..., help="Code shards: folder, file, brace pattern or URL."),
    out_dir: Path = typer.Argument(..., help="Where to write the media."),
    config: Path | None = typer.Option(None, help=CONFIG_HELP),
    set_: list[str] = typer.Option([], "--set", help=SET_HELP),
    output_format: FormatChoice | None = typer.Option(
        None,
        "--format",
        help=f"Shards, or files named by key (default: {default_of(D, 'output_format')}).",
    ),
    audio_format: str | None = typer.Option(
        None, help=f"wav or flac (default: {default_of(D, 'audio_format')})."
    ),
    batch_size: int | None = typer.Option(
        None, help=f"Code pieces per model call (default: {default_of(D, 'runtime.batch_size')})."
    ),
    device: str | None = typer.Option(
        None, help=f"Torch device (default: {default_of(D, 'runtime.device')})."
    ),
    max_memory: str | None = typer.Option(None, help=max_memory_help()),
    resume: bool | None = typer.Option(
        None, "--resume", help="Skip done shards, redo partial ones."
    ),
    on_error: OnErrorChoice | None = typer.Option(
        None,
        help="Stop on a bad sample, or skip and log it "
        f"(default: {default_of(D, 'errors.on_error')}).",
    ),
    max_error_rate: float | None = typer.Option(
        None,
        help="Fail when more than this fraction is skipped "
        f"(default: {default_of(D, 'errors.max_error_rate')}).",
    ),
    progress: bool | None = typer.Option(
        None, "--progress/--no-progress", help="Show progress (default: on)."
    ),
) -> None:
    """Decode code shards back to media (PNG, WAV/FLAC, MP4) at the original size and length."""
    def job():
        options = DecodeConfig.load(
            config,
            {
                "output_format": output_format,
                "audio_format": audio_format,
                "runtime.batch_size": batch_size,
                "runtime.device": device,
                "runtime.max_memory": max_memory,
                "resume": resume,
                "errors.on_error": on_error,
                "errors.max_error_rate": max_error_rate,
                "progress": progress,
            },
            set_,
        )
        return decode_shards(checkpoint, code_shards, out_dir, options)

    print_summary(run_job(job))


def export_tokens_command(
    code_shards: str = typer.Argument(..., help="Code shards: folder, file, brace pattern or URL."),
    out_prefix: Path = typer.Argument(..., help="Writes OUT_PREFIX.bin, .idx and .json."),
    bos: bool = typer.Option(False, "--bos", help="Start each sample with a BOS token."),
    eos: bool = typer.Option(False, "--eos", help="End each sample with an EOS token."),
    order: OrderChoice = typer.Option(
        OrderChoice.interleaved, help="Residual levels per position, or level after level."
    ),
    on_error: OnErrorChoice = typer.Option(
        OnErrorChoice.raise_, help="Stop on a bad sample, or skip and log it."
    ),
    checkpoint: Path | None = typer.Option(
        None, help="The checkpoint the codes were encoded with; needed for compressed shards only."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace token files that exist at OUT_PREFIX."
    ),
) -> None:
    """Export codes as a flat token file for language-model training."""
    manifest = run_job(
        lambda: export_tokens(
            code_shards,
            out_prefix,
            bos=bos,
            eos=eos,
            order=order.value,
            on_error=on_error.value,
            checkpoint=checkpoint,
            overwrite=overwrite,
        )
    )
    summary = {k: v for k, v in vars(manifest).items() if k != "keys"}
    print_summary(summary)


def register(app: typer.Typer) -> None:
    app.add_typer(shards_app, name="shards")
    app.command("encode")(encode)
    app.command("decode")(decode)
    app.command("export-tokens")(export_tokens_command)

