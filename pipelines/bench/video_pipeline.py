"""Benchmark: video encode throughput through the whole shard pipeline vs the model alone.

`bench_video_pipeline()` re-encodes real footage (a clip of the user's, or the built-in Big
Buck Bunny clips) at the asked height and length, writes one clip per shard sample, then
measures, in alternating runs:

1. the model alone: each clip decoded to frames beforehand and held in memory, encoded
   through ``encode_within`` with the pieces (time limit and memory budget) the encode job
   uses for a streamed video, so both sides run the same network work;
2. the pipeline: ``encode_shards`` on the shards (tar reading, H.264 decoding as the
   encoder reads, encoding, writing code shards), as ``vqtok encode`` runs it.

The figure is frames per second of each and the median of the paired ratios, so that load
from other processes on a shared machine weighs on both sides of each ratio alike.
"""

from __future__ import annotations

import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import vqtok
from vqtok.models.tiling import replicate_read
from vqtok.pipelines.config import JobConfig, MediaOptions, RuntimeOptions, parse_size
from vqtok.pipelines.data.builtin import builtin_files
from vqtok.pipelines.data.media import open_video
from vqtok.pipelines.data.tario import ShardWriter
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs.encode import EncodeConfig, encode_shards, media_config, time_limit


@dataclass
class VideoPipelineBenchConfig(JobConfig):
    """`vqtok bench video-pipeline`: the preset, the footage (a file, or "" for the built-in
    clips), the clips' height, length and rate, how many clips, paired runs, the memory
    budget of a model call, and DataLoader workers."""

    preset: str = "video-vq-t4s8"
    video: str = ""
    height: int = 720
    seconds: float = 2.0
    fps: int = 25
    clips: int = 2
    repeats: int = 2
    max_memory: str = "2GiB"
    workers: int = 1

    def problems(self) -> list[str]:
        found = [f"{name} must be at least 1, got {getattr(self, name)}"
                 for name in ("clips", "repeats", "fps") if getattr(self, name) < 1]
        if self.height < 16 or self.height % 2:
            found.append(f"height must be an even number of at least 16, got {self.height}")
        if not self.seconds > 0:
            found.append(f"seconds must be positive, got {self.seconds}")
        if self.workers < 0:
            found.append(f"workers must be 0 or more, got {self.workers}")
        try:
            parse_size(self.max_memory)
        except ValueError as exc:
            found.append(f"max_memory {exc}")
        if self.video and not Path(self.video).is_file():
            found.append(f"video {self.video!r} is not a file")
        return found


def footage(video: str) -> list[np.ndarray]:
    """Upright RGB frames (H, W, 3) uint8 of ``video``, or of every built-in clip in turn.

    Raises:
        UsageError: The file does not decode to any frame.
    """
    import av  # here: the other benches import without the media packages

    paths = [Path(video)] if video else builtin_files("video")
    frames = []
    for path in paths:
        try:
            with av.open(str(path)) as container:
                frames += [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        except (av.FFmpegError, OSError) as error:
            raise UsageError(f"cannot decode {path}: {error}") from None
    if not frames:
        raise UsageError(f"no video frame in {', '.join(map(str, paths))}")
    return frames


def make_clip(frames: list[np.ndarray], height: int, seconds: float, fps: int,
              offset: int = 0) -> bytes:
    """An H.264 MP4 of ``seconds`` at ``fps``: ``frames`` from ``offset`` on, looped, each
    resized to ``height`` rows (the aspect kept, sides even).

    Returns:
        The file's bytes.
    """
    import av

    source_height, source_width = frames[0].shape[:2]
    width = 2 * round(source_width * height / source_height / 2)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(max(1, round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(frames[(offset + index) % len(frames)],
                                               format="rgb24")
            container.mux(stream.encode(frame.reformat(width, height)))
        container.mux(stream.encode())
    return buffer.getvalue()


class HeldFrames:
    """A decoded clip in memory, read box by box like a streamed video (a tiling Source)."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.shape, self.dtype = x, tuple(x.shape), x.dtype

    def read(self, reads) -> torch.Tensor:
        """(1, C, *box) float: the box ``reads`` of the padded clip."""
        return replicate_read(self.x, reads)


def _decoded(model, data: bytes, media: MediaOptions) -> tuple[torch.Tensor, int]:
    """The clip as the encode job's source reads it, held whole: (1, 3, T, H, W), frame bytes."""
    source, _ = open_video(data, media_config(model, media))
    try:
        x = source.read([(0, n) for n in source.shape[2:]])
        return x.clone(), source.frame_bytes
    finally:
        source.close()


@torch.inference_mode()
def _model_only_seconds(model, clips: list[tuple[torch.Tensor, int]], max_bytes: int) -> float:
    """Seconds of ``encode_within`` over the held clips, with the encode job's time limit."""
    start = time.perf_counter()
    for x, frame_bytes in clips:
        limit = (time_limit(model, tuple(x.shape[2:]), max_bytes // 4 // frame_bytes),
                 None, None)
        model.encode_within(HeldFrames(x), max_bytes, limit)
    return time.perf_counter() - start


def bench_video_pipeline(config: VideoPipelineBenchConfig | None = None) -> dict:
    """Run the benchmark; returns frames per second of both sides and their ratio.

    Raises:
        UsageError: The footage does not decode.
    """
    config = config or VideoPipelineBenchConfig()
    config.check()
    model = vqtok.create_model(config.preset).eval()
    max_bytes = parse_size(config.max_memory)
    frames = footage(config.video)
    runtime = RuntimeOptions(max_memory=config.max_memory)
    encode = EncodeConfig(workers=config.workers, progress=False, runtime=runtime)
    model_rates, pipeline_rates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        writer = ShardWriter(Path(tmp) / "in" / "clips-0000.tar")
        clips = [make_clip(frames, config.height, config.seconds, config.fps,
                           offset=index * len(frames) // config.clips)
                 for index in range(config.clips)]
        for index, data in enumerate(clips):
            writer.write(f"clip{index:04d}", {"mp4": data})
        writer.commit()
        held = [_decoded(model, data, encode.media) for data in clips]
        count = sum(x.shape[2] for x, _ in held)
        for repeat in range(config.repeats):
            model_rates.append(count / _model_only_seconds(model, held, max_bytes))
            start = time.perf_counter()
            encode_shards(model, str(Path(tmp) / "in"), Path(tmp) / f"out-{repeat}", encode)
            pipeline_rates.append(count / (time.perf_counter() - start))
        size = list(held[0][0].shape[3:])
    ratios = sorted(p / m for p, m in zip(pipeline_rates, model_rates, strict=True))
    return {
        "preset": config.preset, "footage": config.video or "built-in Big Buck Bunny clips",
        "frame_size": size, "clips": config.clips, "frames": count, "fps": config.fps,
        "max_memory": config.max_memory, "workers": config.workers,
        "torch_threads": torch.get_num_threads(),
        "model_only_frames_per_s": [round(r, 3) for r in model_rates],
        "pipeline_frames_per_s": [round(r, 3) for r in pipeline_rates],
        "pipeline_fraction_of_model": round(ratios[len(ratios) // 2], 3),
    }

