"""The first run: built-in photos, speech and video through every stage of vqtok.

    python -m vqtok.pipelines.demo --out demo-out [--tiny]
    from vqtok.pipelines.demo import run_demo; report = run_demo("demo-out")

For each modality: the files in ``demo/data/<modality>`` become shards, a small tokenizer
trains for a bounded time, the shards are encoded to codes, decoded back to media files and
exported as LM tokens, and one file is compressed to ``.vqt`` and restored. The image model
is also measured against JPEG. ``OUT/report.md`` sums it up, with pictures of originals
beside reconstructions, the codebook usage and the rate-distortion plot; ``OUT/demo.json``
holds the same figures per modality (preset, quality, share of the codebook used). Nothing is
downloaded; a GPU is used when there is one.

Training is bounded by time, not steps: a short probe run measures seconds per step on this
machine, then the same run is resumed in chunks sized to the time left.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

import vqtok
from vqtok.pipelines.compression.vqt import CompressConfig, compress_file, decompress_file
from vqtok.pipelines.config import RuntimeOptions
from vqtok.pipelines.data.builtin import builtin_files
from vqtok.pipelines.data.shards import make_shards
from vqtok.pipelines.data.sources import expand_shards
from vqtok.pipelines.data.tario import read_samples
from vqtok.pipelines.demo.report import (
    ModalityResult,
    print_summary,
    save_comparison_picture,
    save_usage_histogram,
    write_report,
)
from vqtok.pipelines.errors import PipelineError, UsageError
from vqtok.pipelines.evaluation.rd import RDConfig, evaluate_rd
from vqtok.pipelines.jobs.codes import unpack_codes
from vqtok.pipelines.jobs.decode import DecodeConfig, decode_shards
from vqtok.pipelines.jobs.encode import EncodeConfig, encode_shards
from vqtok.pipelines.jobs.tokens import export_tokens
from vqtok.pipelines.training import TrainConfig, TrainingInterrupted, train

MARKER = "demo.json"
PROBE_STEPS = 3
MIN_CHUNK = 5
CHUNK_SHARE = 0.8  # of the steps the time left affords: room for the speed to drop
MAX_STEPS = 20000
TINY_OPTIONS = {"quantizer_options": {"codebook_size": 64}}


@dataclass(frozen=True)
class DemoModel:
    """What the demo trains for one modality: a preset, its overrides and the training crop."""

    modality: str
    preset: str
    crop: tuple[int, ...]
    batch_size: int
    model_options: dict[str, Any] = field(default_factory=dict)


FULL_MODELS = (
    DemoModel("image", "image-vq-f8", (64, 64), 8),
    DemoModel("audio", "audio-vq-16k", (8000,), 8),
    DemoModel("video", "video-vq-t4s8", (9, 64, 64), 4),
)
# Narrow layers and a 64-entry codebook: every stage runs in seconds, for the test.
TINY_MODELS = (
    DemoModel("image", "image-vq-f8", (32, 32), 2, {"widths": [8, 8, 8, 8], **TINY_OPTIONS}),
    DemoModel("audio", "audio-vq-16k", (3200,), 2, {"widths": [8, 8, 8, 8, 8], **TINY_OPTIONS}),
    DemoModel("video", "video-vq-t4s8", (5, 32, 32), 1, {"widths": [8, 8, 8, 8], **TINY_OPTIONS}),
)
TINY_STEPS = 4
DEMO_WARMUP_STEPS = 100


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when a GPU is present, else "cpu"; other names pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def run_demo(out_dir: str | Path, *, tiny: bool = False, seconds_per_model: float = 60.0,
             device: str = "auto", console: Console | None = None) -> Path:
    """Run the demo into ``out_dir`` and return the path of its ``report.md``.

    ``seconds_per_model`` bounds each tokenizer's training (three are trained); ``tiny``
    trains narrow models for a few steps on the first files only, to check every stage.
    ``out_dir`` must be empty, absent, or an earlier demo output (which is replaced).
    Raises UsageError when the built-in data is missing or ``out_dir`` holds other files.
    """
    console = console or Console()
    out = _fresh_output(Path(out_dir))
    device = resolve_device(device)
    start = time.monotonic()
    settings = {"tiny": tiny, "device": device, "seconds_per_model": seconds_per_model}
    (out / MARKER).write_text(json.dumps(settings) + "\n")
    results = []
    for spec in TINY_MODELS if tiny else FULL_MODELS:
        console.rule(f"[bold]{spec.modality}: {spec.preset}")
        results.append(_run_modality(spec, out, seconds_per_model, device, tiny, console))
    console.rule("[bold]rate-distortion against JPEG")
    rd_plot = _rate_distortion(results[0], out / "rd", device, tiny)
    save_usage_histogram(out / "codebook-usage.png", results)
    seconds = time.monotonic() - start
    report = write_report(out, results, rd_plot, device=device, seconds=seconds, tiny=tiny)
    (out / MARKER).write_text(json.dumps(
        {**settings, "seconds": round(seconds, 1),
         "modalities": {r.modality: r.summary() for r in results}}, indent=2) + "\n")
    print_summary(console, results, report)
    return report


def _fresh_output(out: Path) -> Path:
    """``out``, created empty; an earlier demo output there is removed, anything else refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise UsageError(f"{out} is not empty and is not a demo output; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def demo_files(modality: str, tiny: bool) -> list[Path]:
    """The built-in files of ``modality``, sorted (the first two in tiny mode)."""
    files = builtin_files(modality)
    return files[:2] if tiny else files


def _run_modality(spec: DemoModel, out: Path, seconds: float, device: str, tiny: bool,
                  console: Console) -> ModalityResult:
    files = demo_files(spec.modality, tiny)
    source = _stage_sources(files, out / "sources" / spec.modality)
    shards = out / "shards" / spec.modality
    make_shards(source, shards, spec.modality, maxcount=4)
    console.print(f"shards: {len(files)} files -> {shards}")
    model_dir, steps, train_seconds = _train(spec, shards, out / "runs" / spec.modality, seconds,
                                             device, tiny, console)
    model = vqtok.load(model_dir, map_location=device)
    codes_dir, decoded_dir = out / "codes" / spec.modality, out / "decoded" / spec.modality
    encode_shards(
        model,
        str(shards),
        codes_dir,
        EncodeConfig(workers=0, progress=False, runtime=RuntimeOptions(device=device)),
    )
    decode_shards(
        model,
        str(codes_dir),
        decoded_dir,
        DecodeConfig(output_format="files", progress=False, runtime=RuntimeOptions(device=device)),
    )
    tokens = export_tokens(str(codes_dir), out / "tokens" / spec.modality, bos=True, eos=True)
    console.print(f"encoded, decoded to {decoded_dir}, exported {tokens.num_tokens} tokens")
    pairs = [(f, _decoded_file(decoded_dir, f)) for f in files]
    picture = out / f"reconstructions-{spec.modality}.png"
    quality = save_comparison_picture(picture, pairs, spec.modality)
    compression = _compress_one(model_dir, files[0], out / "compressed", device)
    console.print(f"compressed {files[0].name}: {compression['source_bytes']} -> "
                  f"{compression['vqt_bytes']} bytes")
    return ModalityResult(
        modality=spec.modality, preset=spec.preset, model_dir=str(model_dir), steps=steps,
        train_seconds=round(train_seconds, 1), files=len(files), codebook_size=model.codebook_size,
        code_counts=_code_counts(codes_dir, model.codebook_size), tokens=tokens.num_tokens,
        picture=picture.name, quality=quality, compression=compression,
    )


def _stage_sources(files: list[Path], folder: Path) -> Path:
    """Copy ``files`` into ``folder`` (so that tiny mode shards only its subset)."""
    folder.mkdir(parents=True, exist_ok=True)
    for file in files:
        shutil.copy2(file, folder / file.name)
    return folder


def _decoded_file(folder: Path, original: Path) -> Path:
    """The decode job's output for ``original`` (keys are file stems; see make_shards)."""
    matches = sorted(folder.glob(f"{original.stem.replace('.', '_')}.*"))
    media = [p for p in matches if not p.name.endswith((".json", ".jsonl"))]
    if not media:
        raise PipelineError(f"the decode job wrote nothing for {original.name} in {folder}")
    return media[0]


def _train_config(spec: DemoModel, shards: Path, run: Path, steps: int, device: str) -> TrainConfig:
    # A constant rate after warm-up (min_lr_ratio=1): the schedule does not depend on the
    # total step count, so that a run resumed with more steps is the same as one run. The
    # warm-up is the image benchmark's (BENCHMARKS.md: 21.4 dB after 274 steps with 100
    # warm-up steps, 14.1 dB with none); the trainer's default of 500 suits its default
    # 10,000 steps, not a minute. The presets bring everything else, the audio codebook's
    # centring and restart window included.
    return TrainConfig(
        model=spec.preset,
        model_options=dict(spec.model_options),
        train=[str(shards)],
        out=str(run),
        crop=list(spec.crop),
        batch_size=spec.batch_size,
        shuffle_buffer=16,
        steps=steps,
        lr=1e-3,
        warmup_steps=DEMO_WARMUP_STEPS,
        min_lr_ratio=1.0,
        device=device,
        log_every=10,
        checkpoint_every=MAX_STEPS,
        keep_last=1,
        tensorboard=False,
    )


def _train(spec: DemoModel, shards: Path, run: Path, seconds: float, device: str, tiny: bool,
           console: Console) -> tuple[Path, int, float]:
    """Train within ``seconds``; returns (final model folder, steps, seconds taken).

    The run goes in chunks: each is timed, and the next one (a resume of the same run) is
    sized to most of the time left at the speed just measured, so that a machine that gets
    slower or faster mid-run still ends near the deadline.
    """
    start = time.monotonic()
    deadline = start + seconds
    steps = TINY_STEPS if tiny else PROBE_STEPS
    step_times: list[float] = []

    def clock(step: int, values: dict[str, float]) -> None:
        step_times.append(time.monotonic())

    summary = train(
        _train_config(spec, shards, run, steps, device), progress=False, callbacks=[clock]
    )
    while not tiny and steps < MAX_STEPS:
        # Between the ends of the chunk's steps: its set-up (codebook initialisation) is left out.
        per_step = (step_times[-1] - step_times[0]) / max(1, len(step_times) - 1)
        affordable = int((deadline - time.monotonic()) / per_step)
        if affordable < MIN_CHUNK:
            break
        steps = min(MAX_STEPS, steps + max(MIN_CHUNK, int(CHUNK_SHARE * affordable)))
        console.print(f"{per_step:.2f} s per step on {device}: training to step {steps}")
        step_times.clear()
        summary = train(
            _train_config(spec, shards, run, steps, device), resume=True, callbacks=[clock]
        )
    seconds_taken = time.monotonic() - start
    console.print(f"trained {summary.steps} steps in {seconds_taken:.0f} s on {device}")
    return Path(summary.final_model), summary.steps, seconds_taken


def _code_counts(codes_dir: Path, codebook_size: int) -> list[int]:
    """How often each code occurs in the encoded shards (all levels together): (K,) counts."""
    counts = np.zeros(codebook_size, dtype=np.int64)
    for url in expand_shards([str(codes_dir)]):
        for sample in read_samples(url):
            codes, _ = unpack_codes(sample.fields)
            counts += np.bincount(codes.reshape(-1).astype(np.int64), minlength=codebook_size)
    return counts.tolist()


def _compress_one(model_dir: Path, file: Path, folder: Path, device: str) -> dict[str, Any]:
    """Compress ``file`` to ``folder/<name>.vqt`` and restore it beside; sizes and rates."""
    folder.mkdir(parents=True, exist_ok=True)
    vqt = folder / f"{file.name}.vqt"
    rates = compress_file(
        model_dir, file, vqt, CompressConfig(runtime=RuntimeOptions(device=device))
    )
    suffix = ".flac" if file.suffix.lower() in (".flac", ".wav", ".ogg", ".mp3") else file.suffix
    restored = decompress_file(vqt, folder / f"{file.stem}.restored{suffix}", model_dir,
                               RuntimeOptions(device=device))
    return {"file": file.name, "source_bytes": file.stat().st_size, "vqt": str(vqt),
            "vqt_bytes": vqt.stat().st_size, "restored": str(restored), **rates.to_dict()}


def _rate_distortion(image: ModalityResult, folder: Path, device: str, tiny: bool) -> Path:
    """The image model's (bpp, PSNR) against JPEG's qualities on the built-in photos."""
    config = RDConfig(baselines=["jpeg"], runtime=RuntimeOptions(device=device))
    evaluate_rd([image.model_dir], demo_files("image", tiny), folder, config)
    return folder / "rd-psnr-rgb.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vqtok.pipelines.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny models, a few steps: checks every stage"
    )
    parser.add_argument("--seconds-per-model", type=float, default=60.0,
                        help="training time of each of the three tokenizers (default: 60)")
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when present), cpu, cuda, cuda:1..."
    )
    args = parser.parse_args(argv)
    console = Console()
    try:
        run_demo(
            args.out,
            tiny=args.tiny,
            seconds_per_model=args.seconds_per_model,
            device=args.device,
            console=console,
        )
    except TrainingInterrupted:
        console.print("[yellow]interrupted[/yellow]; run the demo again to start over")
        return 130
    except UsageError as error:
        console.print(f"[red]error:[/red] {error}")
        return 2
    except PipelineError as error:
        console.print(f"[red]failed:[/red] {error}")
        return 1
    return 0

