"""Benchmark: the Ray engine's overhead over the local engine, on the same shards and model.

`bench_ray()` writes JPEG shards and a checkpoint, encodes them once with the local engine,
then once on Ray (started beforehand and timed apart: a cluster usually runs already), and
checks that both wrote the same bytes. The Ray time includes starting the actors and
loading the model in each, which is what a job pays on a running cluster.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import vqtok
from vqtok.pipelines.bench.pipeline import make_bench_shards
from vqtok.pipelines.config import RuntimeOptions
from vqtok.pipelines.jobs.encode import EncodeConfig, EncodeSummary, encode_shards
from vqtok.pipelines.jobs.ray_engine import RayConfig, encode_shards_ray, import_ray


def _timed(job: Callable[[], EncodeSummary]) -> tuple[float, EncodeSummary]:
    start = time.perf_counter()
    summary = job()
    return time.perf_counter() - start, summary


def _shard_seconds(folder: Path) -> float:
    """Time spent inside shards (from their stats files): the job less start-up and scheduling."""
    return sum(json.loads(path.read_text())["seconds"] for path in folder.glob("*.stats.json"))


def _same_tars(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.tar"))
    return names == sorted(p.name for p in b.glob("*.tar")) and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in names)


def bench_ray(
    preset: str = "image-vq-f8",
    *,
    samples: int = 256,
    shards: int = 8,
    size: int = 128,
    batch_size: int = 16,
    workers: int = 1,
    concurrency: int = 1,
    cpus_per_worker: float = 2.0,
    address: str | None = None,
) -> dict:
    """One local and one Ray encode of the same `shards` JPEG shards; returns times and overhead.

    Defaults compare like with like on a small machine: one model copy on each side, with
    decoding in `workers` DataLoader workers locally and in an actor thread on Ray.
    """
    ray = import_ray()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_bench_shards(root / "in", shards, samples // shards, size)
        checkpoint = vqtok.save(vqtok.create_model(preset), root / "model")
        config = EncodeConfig(
            workers=workers, progress=False, runtime=RuntimeOptions(batch_size=batch_size)
        )
        local_seconds, local = _timed(
            lambda: encode_shards(checkpoint, str(root / "in"), root / "local", config)
        )
        start = time.perf_counter()
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        ray_start_seconds = time.perf_counter() - start
        try:
            ray_config = RayConfig(concurrency=concurrency, cpus_per_worker=cpus_per_worker)
            ray_seconds, _ = _timed(
                lambda: encode_shards_ray(
                    checkpoint, str(root / "in"), root / "ray", config, ray_config
                )
            )
        finally:
            ray.shutdown()
        identical = _same_tars(root / "local", root / "ray")
        ray_shard_seconds = _shard_seconds(root / "ray")
    return {
        "preset": preset,
        "samples": local.samples,
        "shards": shards,
        "image_size": size,
        "batch_size": batch_size,
        "local_workers": workers,
        "ray_concurrency": concurrency,
        "ray_cpus_per_worker": cpus_per_worker,
        "torch_threads_driver": torch.get_num_threads(),
        "local_seconds": round(local_seconds, 2),
        "ray_seconds": round(ray_seconds, 2),
        "ray_overhead": round(ray_seconds / local_seconds - 1, 3),
        "ray_seconds_in_shards": round(ray_shard_seconds, 2),
        "ray_start_seconds": round(ray_start_seconds, 2),
        "identical_output": identical,
    }


if __name__ == "__main__":
    print(json.dumps(bench_ray(), indent=2))
