"""`open_video`: a video read box by box, decoded as it is read, gives exactly the boxes of
the whole decoded video, and the encoder reading it holds a few frames, not the video."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import av
import pytest
from helpers.media import photo_frames

import vqtok
from vqtok.models.tiling import replicate_read
from vqtok.pipelines.data.media import MediaConfig, VideoSource, open_video, prepare
from vqtok.pipelines.jobs.encode import time_limit

DATA = Path(__file__).parents[2] / "data" / "video"
BOXES = [[(0, 5), (0, 50), (3, 70)], [(4, 12), (10, 99), (0, 64)], [(12, 21), (0, 96), (0, 64)]]


@pytest.mark.parametrize("options", [{}, {"max_side": 40}, {"frame_size": (30, 20)}])
def test_boxes_equal_the_whole_decoded_video(options):
    data = (DATA / "zoom.mp4").read_bytes()  # 17 frames of 64x96
    config = MediaConfig("video", **options)
    source, meta = open_video(data, config)
    whole, whole_meta = prepare(data, config)
    assert source.shape == tuple(whole.shape) and meta == whole_meta
    size = source.shape[3:]
    for box in BOXES:  # in time order, each reaching past the end somewhere
        box = [box[0], (0, size[0] + 3), (1, size[1] + 2)] if options else box
        assert source.read(box).equal(replicate_read(whole, box))


def test_a_source_moves_forward_and_travels_without_its_decoder():
    source, _ = open_video((DATA / "pan.mp4").read_bytes(), MediaConfig("video"))
    source.read([(8, 12), (0, 64), (0, 64)])
    with pytest.raises(ValueError, match="read past already"):
        source.read([(4, 8), (0, 64), (0, 64)])
    copy = pickle.loads(pickle.dumps(source))  # as a DataLoader worker sends it
    assert copy.read([(0, 4), (0, 64), (0, 64)]).shape == (1, 3, 4, 64, 64)


def test_a_video_that_decodes_to_more_values_than_allowed_is_refused():
    config = MediaConfig("video", max_streamed_values=64 * 64 * 3 * 10)
    with pytest.raises(ValueError, match="more than"):
        open_video((DATA / "pan.mp4").read_bytes(), config)


class _Watched(VideoSource):
    """Records the most frames it held at once."""

    held = 0

    def read(self, reads):
        box = super().read(reads)
        type(self).held = max(type(self).held, len(self._buffer))
        return box


def _long_clip(frames: int, size: int) -> bytes:
    """An H.264 clip of `frames` frames panning over a real photo."""
    photo = photo_frames(1)[0].resize((size * 2, size))
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for t in range(frames):
            view = photo.crop((t % size, 0, t % size + size, size))
            container.mux(stream.encode(av.VideoFrame.from_image(view)))
        container.mux(stream.encode())
    return buffer.getvalue()


def test_the_encoder_reads_time_pieces_with_the_whole_videos_codes(checkpoints):
    """120 frames, read in pieces of at most 90 frames (the encoder's causal field reaches
    75 frames back): the codes of the whole video, with at most 90 frames held."""
    model = vqtok.load(checkpoints["video-vq-t4s8"])
    data = _long_clip(120, 32)
    whole, _ = prepare(data, MediaConfig("video"))
    source, _ = open_video(data, MediaConfig("video"))
    source.__class__ = _Watched
    limit = time_limit(model, source.shape[2:], 90)
    assert limit < model.latent_shape(source.shape[2:])[0]  # cut in time
    codes = model.encode_within(source, 1 << 40, (limit, None, None))
    assert codes.equal(model.encode(whole))
    assert 75 < _Watched.held <= 90
