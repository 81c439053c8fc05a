"""A real clip through the whole CLI: `shards make -> encode -> decode --format files`.

The clip is one second of Big Buck Bunny shipped in tests/data/real (see
tests/data/video/README.md), re-encoded here larger (640x360) and longer (3 s, played
forward, backward and forward) with PyAV, as a user's phone or camera clip would be. The
decoded MP4 must have the original frame count, size and frame rate.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vqtok.cli.app import app

BUNNY = Path(__file__).parents[2] / "data" / "real" / "bunny.mp4"
runner = CliRunner()


def _larger_and_longer(path: Path, size: tuple[int, int], fps: int) -> int:
    """Write BUNNY at `size` (W, H), played forward, backward and forward; returns frames."""
    with av.open(str(BUNNY)) as container:
        frames = [f.to_image().resize(size, Image.Resampling.BICUBIC)
                  for f in container.decode(video=0)]
    frames = frames + frames[::-1] + frames
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return len(frames)


def _run(*args: str):
    result = runner.invoke(app, [*args])
    assert result.exit_code == 0, result.output
    return result


@pytest.mark.slow  # about a minute on 2 CPU cores: 75 frames of 640x360 in tiles
def test_a_real_clip_made_larger_and_longer_decodes_to_its_frames_size_and_rate(
    checkpoints, tmp_path
):
    (tmp_path / "src").mkdir()
    count = _larger_and_longer(tmp_path / "src" / "bunny.mp4", (640, 360), 25)
    checkpoint = str(checkpoints["video-vq-t4s8"])
    _run("shards", "make", str(tmp_path / "src"), str(tmp_path / "shards"), "--modality",
         "video")
    # A budget below the whole pass: the clip is encoded in tiles (the video streamed in,
    # 1/4 GiB of frames at most) and decoded in slabs written as they come.
    _run("encode", checkpoint, str(tmp_path / "shards"), str(tmp_path / "codes"), "--workers",
         "0", "--no-progress", "--max-memory", "1GiB")
    _run("decode", checkpoint, str(tmp_path / "codes"), str(tmp_path / "media"), "--format",
         "files", "--no-progress", "--max-memory", "1GiB")
    decoded = tmp_path / "media" / "bunny.mp4"
    with av.open(str(decoded)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert (stream.width, stream.height, stream.average_rate) == (640, 360, 25)
    assert len(frames) == count == 75
    with av.open(str(tmp_path / "src" / "bunny.mp4")) as container:
        source = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    # An untrained model's pictures are not the clip, but they change with it frame by
    # frame: the decoded frames follow the source's forward-backward-forward play.
    assert not np.array_equal(frames[0], frames[12])
    config = json.loads((tmp_path / "codes" / "encode_config.json").read_text())
    assert config["runtime"]["max_memory"] == 2**30 and len(source) == count
