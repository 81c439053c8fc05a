"""What the demo shows: reconstruction pictures and quality, codebook usage, report.md.

Pictures are drawn with Pillow and torchvision's grid (no plotting library): originals
beside reconstructions reuse the trainer's validation pictures; the codebook usage is a
rank-frequency bar chart per modality.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from PIL import Image, ImageDraw, ImageFont
from rich.console import Console
from rich.table import Table

from vqtok.pipelines.data.media import MediaConfig, prepare
from vqtok.pipelines.evaluation.quality import log_mel_distance, psnr, si_snr
from vqtok.pipelines.training.pictures import save_reconstruction_picture

AUDIO_RATE = 16000
PANEL = (900, 190)
BAR_COLOR = "#1f77b4"


@dataclass
class ModalityResult:
    """One modality's demo outcome. ``code_counts``: (K,) occurrences of each code over the
    encoded built-in files; ``quality``: mean metrics of the decoded files; ``compression``:
    the sizes and rates of the one compressed file."""

    modality: str
    preset: str
    model_dir: str
    steps: int
    train_seconds: float
    files: int
    codebook_size: int
    code_counts: list[int]
    tokens: int
    picture: str
    quality: dict[str, float] = field(default_factory=dict)
    compression: dict[str, Any] = field(default_factory=dict)

    @property
    def used_fraction(self) -> float:
        """Share of the codebook that occurs at least once."""
        return sum(1 for c in self.code_counts if c) / self.codebook_size

    @property
    def perplexity(self) -> float:
        """exp of the entropy of code frequencies: the number of equally used codes it equals."""
        counts = np.asarray(self.code_counts, dtype=np.float64)
        p = counts[counts > 0] / counts.sum()
        return float(np.exp(-(p * np.log(p)).sum()))

    def summary(self) -> dict[str, Any]:
        """What ``demo.json`` records for this modality: the report table's figures."""
        return {"preset": self.preset, "steps": self.steps, "train_seconds": self.train_seconds,
                "files": self.files, "quality": self.quality,
                "codebook_size": self.codebook_size,
                "codebook_used": round(self.used_fraction, 4),
                "perplexity": round(self.perplexity, 2),
                "compression": {key: self.compression[key]
                                for key in ("file", "source_bytes", "vqt_bytes")
                                if key in self.compression}}

    @property
    def headline(self) -> str:
        """The key quality number: PSNR for pixels, SI-SNR for speech."""
        if self.modality == "audio":
            return f"SI-SNR {self.quality['si_snr']:.1f} dB"
        return f"PSNR {self.quality['psnr']:.2f} dB"


def _load(path: Path, modality: str) -> torch.Tensor:
    """A media file as (C, *spatial) float in [-1, 1]; audio as mono at AUDIO_RATE."""
    if modality == "audio":
        samples, _ = soundfile.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(samples.mean(axis=1)).unsqueeze(0)
    pieces, _ = prepare(path.read_bytes(), MediaConfig(modality))
    return pieces[0]


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def _metrics(original: torch.Tensor, decoded: torch.Tensor, modality: str) -> dict[str, float]:
    if modality == "audio":
        a, b = original[0].numpy(), decoded[0].numpy()
        return {"si_snr": si_snr(a, b), "mel_distance": log_mel_distance(a, b, AUDIO_RATE)}
    return {"psnr": psnr(_to_uint8(original), _to_uint8(decoded))}


def _crop_common(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack (C, *spatial) tensors, each cropped to the smallest size along every axis."""
    shape = [min(sizes) for sizes in zip(*(t.shape for t in tensors), strict=True)]
    return torch.stack([t[tuple(slice(0, n) for n in shape)] for t in tensors])


def save_comparison_picture(
    path: Path, pairs: list[tuple[Path, Path]], modality: str
) -> dict[str, float]:
    """Draw originals beside their reconstructions (``pairs`` of files) into ``path``;
    returns the metrics averaged over the pairs (PSNR in dB, or SI-SNR and mel distance)."""
    originals = [_load(original, modality) for original, _ in pairs]
    decoded = [_load(restored, modality) for _, restored in pairs]
    per_file = [_metrics(a, b, modality) for a, b in zip(originals, decoded, strict=True)]
    save_reconstruction_picture(path, _crop_common(originals), _crop_common(decoded), modality,
                                AUDIO_RATE if modality == "audio" else None)
    return {key: float(np.mean([m[key] for m in per_file])) for key in per_file[0]}


def save_usage_histogram(path: Path, results: list[ModalityResult]) -> Path:
    """One panel per modality: code counts sorted from most to least used (log height)."""
    width, height = PANEL
    image = Image.new("RGB", (width, height * len(results)), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for index, result in enumerate(results):
        top = index * height
        counts = sorted(result.code_counts, reverse=True)
        peak = math.log1p(max(counts[0], 1))
        left, right, bottom, plot_top = 50, width - 20, top + height - 25, top + 30
        bar = (right - left) / len(counts)
        for rank, count in enumerate(counts):
            if count:
                x0 = left + rank * bar
                y0 = bottom - (bottom - plot_top) * math.log1p(count) / peak
                draw.rectangle((x0, y0, x0 + max(bar, 1), bottom), fill=BAR_COLOR)
        draw.line((left, bottom, right, bottom), fill="black")
        title = (f"{result.modality} ({result.preset}): {result.used_fraction:.0%} of "
                 f"{result.codebook_size} codes used, perplexity {result.perplexity:.0f}")
        draw.text((left, top + 8), title, fill="black", font=font)
        draw.text(
            (left, bottom + 6),
            "codes, most used first (bar height: log count)",
            fill="gray",
            font=font,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def _quality_text(result: ModalityResult) -> str:
    return ", ".join(f"{name} {value:.3g}" for name, value in result.quality.items())


def write_report(out: Path, results: list[ModalityResult], rd_plot: Path, *, device: str,
                 seconds: float, tiny: bool) -> Path:
    """Write ``out/report.md`` (links relative to ``out``) and return its path."""
    lines = [
        "# vqtok demo",
        "",
        f"{'Tiny mode (a stage check, not a result). ' if tiny else ''}Device: {device}. "
        f"Wall time: {seconds:.0f} s. "
        "Data: the built-in files of `demo/data` (see its README).",
        "",
        "| modality | preset | train steps (s) | files | quality of decoded files | "
        "codebook used | perplexity | LM tokens |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.modality} | {r.preset} | {r.steps} ({r.train_seconds:.0f} s) | {r.files} | "
            f"{_quality_text(r)} | {r.used_fraction:.1%} of {r.codebook_size} | "
            f"{r.perplexity:.1f} | {r.tokens} |"
        )
    lines += ["", "## Originals beside reconstructions", ""]
    for r in results:
        layout = ("spectrograms, original left" if r.modality == "audio"
                  else "originals above reconstructions")
        model = Path(r.model_dir).resolve().relative_to(out.resolve())
        lines += [
            f"{r.modality} ({layout}), model `{model}`:",
            "",
            f"![{r.modality}]({r.picture})",
            "",
        ]
    lines += [
        "## Codebook usage",
        "",
        "![codebook usage](codebook-usage.png)",
        "",
        "## Rate-distortion: image tokenizer against JPEG",
        "",
        f"![rate-distortion]({rd_plot.relative_to(out)})",
        "",
        "Rate: bytes of the whole `.vqt` file (or JPEG file) per pixel; PSNR on 8-bit RGB. "
        f"All numbers in `{rd_plot.parent.relative_to(out)}/rd.csv`.",
        "",
        "## One file of each kind, compressed",
        "",
        "| file | original bytes | .vqt bytes | bits per code (written) | entropy bits per code |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        c = r.compression
        lines.append(f"| {c['file']} | {c['source_bytes']} | {c['vqt_bytes']} | "
                     f"{c['written_bits_per_code']:.2f} | {c['entropy_bits_per_code']:.2f} |")
    lines += [
        "",
        "## Where things are",
        "",
        "`shards/` input shards, `runs/` training runs (config, metrics, `final` model), "
        "`codes/` code shards, `decoded/` decoded media, `tokens/` LM tokens (.bin/.idx/.json), "
        "`compressed/` .vqt files and their restored media, `rd/` rate-distortion data.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def print_summary(console: Console, results: list[ModalityResult], report: Path) -> None:
    """A short table of the key numbers, then where to look."""
    table = Table(title="vqtok demo")
    for column in ("modality", "preset", "steps", "quality", "codebook used", ".vqt bytes"):
        table.add_column(column)
    for r in results:
        table.add_row(r.modality, r.preset, str(r.steps), r.headline,
                      f"{r.used_fraction:.0%} of {r.codebook_size}",
                      f"{r.compression['vqt_bytes']} (from {r.compression['source_bytes']})")
    console.print(table)
    console.print(f"Report: [bold]{report}[/bold] (pictures beside it)")
