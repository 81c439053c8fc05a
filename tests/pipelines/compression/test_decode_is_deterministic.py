"""The same .vqt gives the same media bytes however its codes are batched for decoding.

A decoded value a last bit away from a uint8 rounding boundary flips a pixel by one level,
and H.264 spreads that over the following frames (by tens of levels), so the MP4 of a video
must not depend on `batch_size`, nor differ from restoring a direct `model.decode`.
"""

from __future__ import annotations

import pytest
import torch
from helpers.media import DATA

import vqtok
from vqtok.pipelines.compression.vqt import (
    CompressConfig,
    compress_bytes,
    decompress_bytes,
    encode_media,
)
from vqtok.pipelines.data.media import assemble_clips, restore

PAN = DATA / "video" / "pan.mp4"  # 24 frames: two clips of 17


def video_model() -> vqtok.VQTokenizer:
    """The small test video model.

    Its output is scaled to span the pixel range as a trained one's does.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = vqtok.create_model("video-vq-t4s8", widths=(4, 8, 8, 8)).eval()
    with torch.no_grad():
        model.decoder.layers[-1].conv.weight.mul_(10.0)
    return model


def test_video_decompresses_to_the_same_bytes_for_every_batch_size():
    model = video_model()
    vqt, _ = compress_bytes(model, PAN.read_bytes())
    by_batch = {size: decompress_bytes(model, vqt, batch_size=size) for size in (1, 2, 16)}
    assert by_batch[1] == by_batch[2] == by_batch[16]
    codes, meta = encode_media(model, PAN.read_bytes(), CompressConfig())
    with torch.inference_mode():
        x_hat = model.decode(torch.from_numpy(codes), size=meta["input_size"])
    assert by_batch[16] == restore(x_hat, meta, "video")


@pytest.mark.parametrize(("starts", "frames"), [([0, 40], 57), ([0, 17], 10), ([5], 17)])
def test_clips_that_leave_frames_uncovered_are_refused(starts, frames):
    clips = torch.zeros(len(starts), 3, 17, 8, 8)
    with pytest.raises(ValueError, match="clip"):
        assemble_clips(clips, starts, frames)
    meta = {"frames": frames, "height": 8, "width": 8, "fps": 8.0, "clip_starts": starts}
    with pytest.raises(ValueError, match="clip"):
        restore(clips, meta, "video")


def test_clips_that_cover_every_frame_assemble_with_the_later_clip_winning():
    clips = torch.stack([torch.full((1, 4, 1, 1), float(i)) for i in range(3)])
    video = assemble_clips(clips, [0, 3, 6], 9)
    assert video.flatten().tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
