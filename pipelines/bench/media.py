"""Benchmark: peak memory and throughput of `vqtok encode` and `vqtok decode` against input size.

`bench_media()` makes synthetic media (video with PyAV at 240p, 480p, 720p... of a few
seconds; audio of minutes), shards it, and runs `vqtok encode` then `vqtok decode` on it in a
child process per run, reading each child's peak RSS with `os.wait4`. Each input runs twice:
under the chunked budget (`--max-memory`, the planner cuts inputs into tiles and chunks) and
whole (an unbounded budget: every batch goes through the model as it is), the latter only
where the planner's estimate of its peak fits `whole_limit`. Each file is one code stream,
as `vqtok encode` codes it by default (video streamed in, decoded media streamed out).

Throughput is media seconds per second of the job's own time (the JSON summary's `seconds`,
which leaves out interpreter start and imports); `wall_s` is the whole child process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vqtok.pipelines.config import JobConfig, available_memory, format_size, parse_size

MODES = ("chunked", "whole")


@dataclass
class MediaBenchConfig(JobConfig):
    """`vqtok bench media`: which media sizes, which presets, and the budgets.

    video_heights: frame heights (16:9 frames, even widths) of the synthetic clips.
    video_seconds: clip lengths. audio_minutes: audio lengths (16 kHz mono).
    max_memory: the chunked runs' `--max-memory`. whole_limit: run the whole-input path only
    where the planner's estimate of its peak is below this (None: half of this machine's
    memory). batch_size: `--batch-size` of both jobs. modes: "chunked", "whole" or both.
    Presets are random-initialized: the figures depend on the architecture, not the weights.
    """

    video_preset: str = "video-vq-t4s8"
    audio_preset: str = "audio-vq-16k"
    video_heights: list[int] = field(default_factory=lambda: [240, 480, 720])
    video_seconds: list[float] = field(default_factory=lambda: [2.0, 10.0])
    audio_minutes: list[float] = field(default_factory=lambda: [1.0, 10.0])
    fps: int = 24
    max_memory: str = "512MiB"
    whole_limit: str | None = None
    batch_size: int = 16
    threads: int = 2
    modes: list[str] = field(default_factory=lambda: list(MODES))

    def problems(self) -> list[str]:
        found = [f"modes must be among {', '.join(MODES)}, got {m!r}"
                 for m in self.modes if m not in MODES]
        if any(h < 16 or h % 2 for h in self.video_heights):
            found.append(f"video_heights must be even and at least 16, got {self.video_heights}")
        for name in ("video_seconds", "audio_minutes"):
            if any(not (math.isfinite(v) and v > 0) for v in getattr(self, name)):
                found.append(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("fps", "batch_size", "threads"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_memory", "whole_limit"):
            if getattr(self, name) is not None:
                try:
                    parse_size(getattr(self, name))
                except ValueError as exc:
                    found.append(f"{name} {exc}")
        return found


def write_video(path: Path, height: int, seconds: float, fps: int) -> int:
    """A synthetic H.264 clip of moving smooth patterns (16:9, even sides); returns frames."""
    import av  # here: the kernel and model benches import without the media packages

    width = 2 * round(height * 16 / 9 / 2)
    frames = max(1, round(seconds * fps))
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            phase = 2 * np.pi * t / fps
            planes = [np.sin(x / (17 + 9 * c) + phase * (c + 1)) * np.cos(y / (23 + 5 * c) - phase)
                      for c in range(3)]
            rgb = ((np.stack(planes, -1) + 1) * 127.5).astype(np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return frames


def write_audio(path: Path, minutes: float, rate: int = 16000) -> None:
    """A synthetic WAV: a slow chirp with noise, mono at `rate`."""
    import soundfile

    samples = round(minutes * 60 * rate)
    t = np.arange(samples, dtype=np.float64) / rate
    wave = 0.3 * np.sin(2 * np.pi * (200 + 50 * np.sin(t / 3)) * t)
    wave += 0.02 * np.random.default_rng(0).standard_normal(samples)
    soundfile.write(str(path), wave.astype(np.float32), rate, subtype="PCM_16")


def run_measured(command: list[str], threads: int) -> tuple[int, float, int, str, str]:
    """Run `command`; returns (exit status, wall seconds, peak RSS bytes, stdout, stderr's
    last line).

    `os.wait4` gives the child's own resource use (its peak RSS, or that of its largest
    descendant), where RUSAGE_CHILDREN would give the largest of every child so far.
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        text, lines = stdout.read(), stderr.read().strip().splitlines()
    wall = time.perf_counter() - start
    return process.returncode, wall, usage.ru_maxrss * 1024, text, (lines or [""])[-1]


def _summary_seconds(text: str) -> float | None:
    try:
        return float(json.loads(text[text.index("{"):])["seconds"])
    except (ValueError, KeyError):
        return None


def _whole_estimate(model, piece_shape: tuple[int, ...], pieces: int, batch: int) -> int:
    """The planner's peak for the whole path: `min(batch, pieces)` whole pieces per encoder
    pass, or one piece per decoder pass (decode goes sample by sample), whichever is larger."""
    from vqtok.models.memory import plan

    shape = (1, model.config.channels, *piece_shape)
    encode = plan(model, shape, 1 << 62, "encode").peak_bytes * min(batch, pieces)
    return max(encode, plan(model, shape, 1 << 62, "decode").peak_bytes)


def _cases(config: MediaBenchConfig) -> list[tuple[str, str, float, dict]]:
    """(modality, label, media seconds, how to make it)."""
    cases = []
    for height in config.video_heights:
        for seconds in config.video_seconds:
            cases.append(("video", f"{height}p {seconds:g} s", seconds,
                          {"height": height, "seconds": seconds}))
    for minutes in config.audio_minutes:
        cases.append(("audio", f"{minutes:g} min", 60 * minutes, {"minutes": minutes}))
    return cases


def bench_media(config: MediaBenchConfig | None = None, log=None) -> list[dict]:
    """Peak RSS and throughput of `vqtok encode` and `vqtok decode`, chunked and whole.

    Args:
        config: Sizes, presets and budgets.
        log: Called with each row as it is measured (e.g. to print progress), or None.

    Returns:
        One row per (input, mode): modality, input, mode, budget, peak RSS and throughput
        of encode and decode, and whether the decoded media equal across modes is left to
        the tests (`tests/pipelines/jobs/test_memory_budget.py`).
    """
    import vqtok
    from vqtok.pipelines.data.shards import make_shards

    config = config or MediaBenchConfig()
    config.check()
    whole_limit = (available_memory() // 2 if config.whole_limit is None
                   else parse_size(config.whole_limit))
    cli = [sys.executable, "-m", "vqtok.cli.main"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="vqtok-bench-media-") as tmp:
        root = Path(tmp)
        checkpoints = {}
        for modality, preset in (("video", config.video_preset), ("audio", config.audio_preset)):
            model = vqtok.create_model(preset)
            checkpoints[modality] = (vqtok.save(model, root / preset), model)
        for index, (modality, label, seconds, spec) in enumerate(_cases(config)):
            case = root / f"case{index}"
            (case / "src").mkdir(parents=True)
            checkpoint, model = checkpoints[modality]
            extra = ["--batch-size", str(config.batch_size)]
            if modality == "video":
                frames = write_video(case / "src" / "clip.mp4", spec["height"], seconds,
                                     config.fps)
                width = 2 * round(spec["height"] * 16 / 9 / 2)
                piece, pieces = (frames, spec["height"], width), 1
            else:
                write_audio(case / "src" / "speech.wav", spec["minutes"])
                piece, pieces = (round(seconds * 16000),), 1
            make_shards(case / "src", case / "shards", modality)
            estimate = _whole_estimate(model, piece, pieces, config.batch_size)
            for mode in config.modes:
                budget = config.max_memory if mode == "chunked" else "1TiB"
                row = {"modality": modality, "input": label, "mode": mode,
                       "max_memory": budget if mode == "chunked" else "none",
                       "whole_estimate": format_size(estimate)}
                if mode == "whole" and estimate > whole_limit:
                    row["note"] = f"skipped: estimate above {format_size(whole_limit)}"
                    rows.append(row)
                    continue
                codes, media = case / f"codes-{mode}", case / f"media-{mode}"
                common = ["--max-memory", budget, "--no-progress"]
                for job, args in (
                    ("encode", [*cli, "encode", str(checkpoint), str(case / "shards"), str(codes),
                                "--workers", "0", *common, *extra]),
                    ("decode", [*cli, "decode", str(checkpoint), str(codes), str(media),
                                "--batch-size", str(config.batch_size), *common]),
                ):
                    status, wall, rss, text, last = run_measured(args, config.threads)
                    job_seconds = _summary_seconds(text)
                    row[f"{job}_peak_rss"] = format_size(rss)
                    row[f"{job}_peak_rss_bytes"] = rss
                    row[f"{job}_wall_s"] = round(wall, 1)
                    row[f"{job}_x_realtime"] = (
                        round(seconds / job_seconds, 3) if status == 0 and job_seconds else None
                    )
                    if status != 0:
                        row["note"] = f"{job} exited {status}: {last[:160]}"
                        break
                rows.append(row)
                if log is not None:
                    log(row)
    return rows
