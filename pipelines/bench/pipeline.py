"""Benchmark: encode throughput through the whole shard pipeline vs the model alone.

`bench_pipeline()` makes JPEG shards of synthetic photos-like images, then measures in one run
(1) model-only samples/s on exactly the batches the pipeline feeds it (decoded beforehand),
(2) pipeline samples/s (tar reading, JPEG decoding in DataLoader workers, encoding, writing
code shards), and (3) the peak RSS of an encode job run in a fresh process for each shard
count, with the same samples per shard, to show memory does not grow with shard count.
"""

from __future__ import annotations

import io
import multiprocessing
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vqtok
from vqtok.pipelines.config import JobConfig, RuntimeOptions
from vqtok.pipelines.data.media import prepare
from vqtok.pipelines.data.tario import ShardWriter
from vqtok.pipelines.jobs.encode import EncodeConfig, encode_shards, media_config


def _jpeg(rng: np.random.Generator, size: int) -> bytes:
    """A smooth random image (low-frequency noise upsampled), JPEG-compressed like a photo."""
    coarse = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_bench_shards(
    folder: Path, shards: int, per_shard: int, size: int, seed: int = 0
) -> list[bytes]:
    """Write `shards` tar shards of `per_shard` JPEGs each; returns every JPEG, in order."""
    rng = np.random.default_rng(seed)
    images = []
    for shard in range(shards):
        writer = ShardWriter(folder / f"bench-{shard:04d}.tar")
        for index in range(per_shard):
            images.append(_jpeg(rng, size))
            writer.write(f"s{shard:04d}_{index:05d}", {"jpg": images[-1]})
        writer.commit()
    return images


@torch.inference_mode()
def _model_only_rate(model, images: list[bytes], batch_size: int) -> float:
    """Samples/s of `model.encode` alone on the pipeline's batches, decoded beforehand."""
    config = media_config(model, EncodeConfig().media)
    pieces = torch.cat([prepare(data, config)[0] for data in images])
    batches = pieces.split(batch_size)
    model.encode(batches[0])  # warm-up, as the pipeline's first batch also pays it
    start = time.perf_counter()
    for batch in batches:
        model.encode(batch)
    return len(images) / (time.perf_counter() - start)


def _peak_rss_job(args: tuple, results) -> None:
    """In a fresh process: encode `shards` shards.

    Puts the peak RSS (MiB) of it and of its largest worker.
    """
    preset, shards, per_shard, size, batch_size, workers = args
    with tempfile.TemporaryDirectory() as tmp:
        make_bench_shards(Path(tmp) / "in", shards, per_shard, size)
        model = vqtok.create_model(preset)
        encode_shards(
            model,
            str(Path(tmp) / "in"),
            Path(tmp) / "out",
            EncodeConfig(
                workers=workers, progress=False, runtime=RuntimeOptions(batch_size=batch_size)
            ),
        )
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    results.put({"main": round(main, 1), "largest_worker": round(worker, 1)})


def _peak_rss(args: tuple) -> dict:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_peak_rss_job, args=(args, results))
    process.start()
    peak = results.get()
    process.join()
    return peak


@dataclass
class PipelineBenchConfig(JobConfig):
    """`vqtok bench pipeline`: the preset, samples per throughput run, image side, batch
    size, DataLoader workers, and paired model-only / pipeline runs."""

    preset: str = "image-vq-f8"
    samples: int = 512
    size: int = 128
    batch_size: int = 16
    workers: int = 1
    repeats: int = 3

    def problems(self) -> list[str]:
        found = [f"{name} must be at least 1, got {getattr(self, name)}"
                 for name in ("samples", "batch_size", "repeats") if getattr(self, name) < 1]
        found += [] if self.size >= 8 else [f"size must be at least 8, got {self.size}"]
        return found + (
            [] if self.workers >= 0 else [f"workers must be 0 or more, got {self.workers}"]
        )


def bench_pipeline(
    config: PipelineBenchConfig | None = None,
    *,
    shard_counts: tuple[int, ...] = (2, 8, 32),
    per_shard: int = 16,
) -> dict:
    """Run the benchmark; returns throughput figures and peak memory per shard count.

    Model-only and pipeline runs alternate `repeats` times; the reported fraction is the
    median of the paired ratios, so that load from other processes on a shared machine
    affects both sides of each ratio alike.
    """
    config = config or PipelineBenchConfig()
    preset, samples, size, batch_size = (
        config.preset,
        config.samples,
        config.size,
        config.batch_size,
    )
    workers, repeats = config.workers, config.repeats
    model = vqtok.create_model(preset).eval()
    shard_count = max(workers, 4)
    model_rates, pipeline_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        shard_dir = Path(tmp) / "in"
        images = make_bench_shards(shard_dir, shard_count, samples // shard_count, size)
        encode = EncodeConfig(
            workers=workers, progress=False, runtime=RuntimeOptions(batch_size=batch_size)
        )
        for repeat in range(repeats):
            model_rates.append(_model_only_rate(model, images, batch_size))
            start = time.perf_counter()
            summary = encode_shards(model, str(shard_dir), Path(tmp) / f"out-{repeat}", encode)
            pipeline_rates.append(summary.samples / (time.perf_counter() - start))
    ratios = sorted(p / m for p, m in zip(pipeline_rates, model_rates, strict=True))
    peaks = [
        _peak_rss((preset, count, per_shard, size, batch_size, workers)) for count in shard_counts
    ]
    return {
        "preset": preset,
        "samples": len(images),
        "image_size": size,
        "batch_size": batch_size,
        "workers": workers,
        "torch_threads": torch.get_num_threads(),
        "model_only_samples_per_s": [round(rate, 2) for rate in model_rates],
        "pipeline_samples_per_s": [round(rate, 2) for rate in pipeline_rates],
        "pipeline_fraction_of_model": round(ratios[len(ratios) // 2], 3),
        "peak_rss_mib_by_shards": dict(zip(shard_counts, peaks, strict=True)),
        "samples_per_shard_in_memory_runs": per_shard,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_pipeline(), indent=2))
