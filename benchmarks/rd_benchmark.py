"""Rate-distortion benchmark (issue 7): vqtok against JPEG/WebP and Opus/MP3 on held-out media.

    OMP_NUM_THREADS=1 python benchmarks/rd_benchmark.py --out /tmp/rd-bench

(One thread: on a shared 2-core machine, two-thread torch next to another busy process
slowed training some 20-fold.)

Everything goes through the user-facing commands (`vqtok shards make`, `vqtok train`,
`vqtok fit-prior`, `vqtok compress`) except the RD sweep itself, which calls
`vqtok.pipelines.evaluation.rd.evaluate_rd` so that JPEG, WebP, Opus and MP3 can be swept down to
the low rates the tokenizers reach (`vqtok eval rd` uses each codec's default sweep).

Held out, never trained on: the photos chelsea and rocket, and the sentences harbour and
rainbow of demo/data. Training: the other six demo photos; the other six demo sentences
plus tests/data/audio/hello.flac. Writes under --out: per-model run directories, the RD
folders (CompressAI-style JSON, rd.csv, rd-*.png) and summary.json; copies the RD plots
to --results.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from vqtok.pipelines.evaluation.rd import RDConfig, evaluate_rd

ROOT = Path(__file__).resolve().parents[1]
VQTOK = str(Path(sys.executable).with_name("vqtok"))
HELD_OUT_PHOTOS = ("chelsea.png", "rocket.png")
HELD_OUT_SPEECH = ("harbour.flac", "rainbow.flac")
EXTRA_TRAIN_SPEECH = (ROOT / "tests" / "data" / "audio" / "hello.flac",)
IMAGE_SWEEPS = {"jpeg": [1, 3, 5, 8, 12, 20, 40], "webp": [0, 2, 5, 10, 20, 40]}
AUDIO_SWEEPS = {"opus": [6, 8, 12, 24], "mp3": [8, 16, 32]}
COMMON_TRAIN = [
    "--lr",
    "2e-3",
    "--no-progress",
    "--set",
    "warmup_steps=100",
    "--set",
    "precision=fp32",
    "--set",
    "tensorboard=false",
    "--set",
    "log_every=50",
    "--set",
    "shuffle_buffer=8",
]
RVQ_OPTIONS = [
    "--set",
    "model_options.quantizer=rvq",
    "--set",
    "model_options.quantizer_options.num_levels=4",
    "--set",
    "model_options.quantizer_options.codebook_size=1024",
    "--set",
    "model_options.quantizer_options.codebook_dim=8",
    "--set",
    "model_options.quantizer_options.usage_window=16384",
]


def vqtok(*args: str) -> str:
    """Run a vqtok command, echo it, and return its stdout."""
    print("$ vqtok " + " ".join(args), file=sys.stderr, flush=True)
    return subprocess.run([VQTOK, *args], check=True, stdout=subprocess.PIPE, text=True).stdout


def split_media(
    source: Path, held_out: tuple[str, ...], extra: tuple[Path, ...], out: Path
) -> tuple[Path, Path]:
    """Copy `source`'s files into out/train and out/held-out; returns both folders."""
    train, test = out / "train", out / "held-out"
    for folder in (train, test):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for path in sorted(source.iterdir()):
        shutil.copy(path, (test if path.name in held_out else train) / path.name)
    for path in extra:
        shutil.copy(path, train / f"extra-{path.name}")
    return train, test


def train_model(name: str, model: str, shards: Path, out: Path, steps: int, batch: int, crop: str,
                options: list[str]) -> Path:
    """Train, fit the code prior on the training shards; returns the final checkpoint."""
    run = out / name
    shutil.rmtree(run, ignore_errors=True)
    summary = json.loads(
        vqtok(
            "train",
            "--model",
            model,
            "--train",
            str(shards),
            "--out",
            str(run),
            "--steps",
            str(steps),
            "--batch-size",
            str(batch),
            "--set",
            f"crop={crop}",
            "--set",
            f"checkpoint_every={steps}",
            *COMMON_TRAIN,
            *options,
        )
    )
    (out / f"{name}-train.json").write_text(json.dumps(summary, indent=2) + "\n")
    final = Path(summary["final_model"])
    vqtok("fit-prior", str(final), str(shards), "--workers", "0")
    return final


def entropy_savings(checkpoint: Path, inputs: list[Path], out: Path) -> dict:
    """Bits of the held-out inputs' codes: fixed log2 K, empirical entropy, static prior
    cross-entropy, the chosen coder's payload and the whole .vqt file, summed over inputs;
    savings are relative to log2 K."""
    totals = {
        "codes": 0,
        "uniform_bits": 0.0,
        "entropy_bits": 0.0,
        "prior_bits": 0.0,
        "coded_bits": 0.0,
        "payload_bytes": 0,
        "header_bytes": 0,
        "written_bytes": 0,
    }
    for path in inputs:
        rates = json.loads(
            vqtok("compress", str(checkpoint), str(path), str(out / f"{path.stem}.vqt"))
        )
        for key in totals:
            totals[key] += rates[key]
    uniform = totals["uniform_bits"]
    return {**totals,
            "prior_saving_percent": round(100 * (1 - totals["prior_bits"] / uniform), 1),
            "entropy_saving_percent": round(100 * (1 - totals["entropy_bits"] / uniform), 1),
            "payload_saving_percent": round(100 * (1 - 8 * totals["payload_bytes"] / uniform), 1),
            "written_saving_percent": round(100 * (1 - 8 * totals["written_bytes"] / uniform), 1)}


def benchmark_images(out: Path, steps: int,
                     presets: tuple[str, ...] = ("image-vq-f8", "image-vq-f16")) -> dict:
    train, test = split_media(
        ROOT / "demo" / "data" / "images", HELD_OUT_PHOTOS, (), out / "images"
    )
    shards = out / "images" / "shards"
    vqtok("shards", "make", str(train), str(shards), "--modality", "image", "--maxcount", "2")
    # (steps, batch, crop): f16 trains half the steps on larger crops.
    settings = {"image-vq-f8": (steps, 8, "[64, 64]"),
                "image-vq-f16": (steps // 2, 4, "[128, 128]")}
    checkpoints = {name: train_model(name, name, shards, out, *settings[name], [])
                   for name in presets}
    inputs = sorted(test.iterdir())
    savings = {}
    for name, checkpoint in checkpoints.items():
        (out / f"{name}-vqt").mkdir(exist_ok=True)
        savings[name] = entropy_savings(checkpoint, inputs, out / f"{name}-vqt")
    curves = evaluate_rd(list(checkpoints.values()), inputs, out / "rd-image",
                         RDConfig(baselines=list(IMAGE_SWEEPS), sweeps=IMAGE_SWEEPS))
    return {"entropy": savings, "curves": curves}


def benchmark_audio(out: Path, steps: int) -> dict:
    train, test = split_media(ROOT / "demo" / "data" / "audio", HELD_OUT_SPEECH, EXTRA_TRAIN_SPEECH,
                              out / "audio")
    shards = out / "audio" / "shards"
    vqtok("shards", "make", str(train), str(shards), "--modality", "audio", "--maxcount", "2")
    checkpoint = train_model(
        "audio-rvq-16k", "audio-vq-16k", shards, out, steps, 4, "[16000]", RVQ_OPTIONS
    )
    inputs = sorted(test.iterdir())
    (out / "audio-vqt").mkdir(exist_ok=True)
    savings = {"audio-rvq-16k": entropy_savings(checkpoint, inputs, out / "audio-vqt")}
    curves = evaluate_rd([checkpoint], inputs, out / "rd-audio",
                         RDConfig(baselines=list(AUDIO_SWEEPS), sweeps=AUDIO_SWEEPS))
    return {"entropy": savings, "curves": curves}


def copy_plots(out: Path, results: Path) -> list[str]:
    results.mkdir(parents=True, exist_ok=True)
    copied = []
    for plot in sorted(out.glob("rd-*/rd-*.png")):
        target = results / f"{plot.parent.name}-{plot.name.removeprefix('rd-')}"
        shutil.copy(plot, target)
        copied.append(str(target.relative_to(ROOT)) if target.is_relative_to(ROOT) else str(target))
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/rd-bench"))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--image-steps", type=int, default=400, help="steps of image-vq-f8 (f16: half as many)"
    )
    parser.add_argument("--image-presets", nargs="+", default=["image-vq-f8", "image-vq-f16"],
                        choices=("image-vq-f8", "image-vq-f16"))
    parser.add_argument("--audio-steps", type=int, default=200)
    parser.add_argument("--only", choices=("image", "audio"), help="run one half only")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    if args.only != "audio":
        summary["image"] = benchmark_images(args.out, args.image_steps,
                                            tuple(args.image_presets))
    if args.only != "image":
        summary["audio"] = benchmark_audio(args.out, args.audio_steps)
    summary["plots"] = copy_plots(args.out, args.results)
    (args.out / f"summary-{args.only or 'all'}.json").write_text(
        json.dumps(summary, indent=2) + "\n"
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
