"""`vqtok bench video-pipeline`: clips re-encoded from real footage, both sides measured."""

from __future__ import annotations

import io

import pytest

from vqtok.pipelines.bench.video_pipeline import (
    VideoPipelineBenchConfig,
    bench_video_pipeline,
    footage,
    make_clip,
)
from vqtok.pipelines.errors import UsageError

av = pytest.importorskip("av")


def test_clips_are_the_asked_height_length_and_rate():
    frames = footage("")  # the built-in Big Buck Bunny clips, 128x72
    data = make_clip(frames, 36, 0.6, 10, offset=5)
    with av.open(io.BytesIO(data)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        rate = container.streams.video[0].average_rate
    assert len(decoded) == 6 and decoded[0].shape == (36, 64, 3) and rate == 10


def test_both_sides_encode_every_frame():
    result = bench_video_pipeline(VideoPipelineBenchConfig(
        height=32, seconds=0.4, fps=10, clips=2, repeats=1, workers=0))
    assert result["frames"] == 8 and result["frame_size"] == [32, 56]
    assert result["model_only_frames_per_s"][0] > 0 and result["pipeline_frames_per_s"][0] > 0
    assert result["pipeline_fraction_of_model"] > 0


@pytest.mark.parametrize("changes,message", [
    ({"height": 33}, "even number"),
    ({"video": "/nonexistent.mp4"}, "is not a file"),
    ({"max_memory": "lots"}, "max_memory"),
])
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(UsageError, match=message):
        VideoPipelineBenchConfig(**changes).check()


def test_footage_that_does_not_decode_is_a_usage_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(UsageError, match="cannot decode"):
        footage(str(broken))
