"""The media-fidelity matrix: every image mode, EXIF orientation, audio channel layout and
video rotation goes through `prepare` then `restore` (no model in between) and comes back as
the module docstring of `vqtok.pipelines.data.media` (and docs/media.md) says, or is refused
with a ValueError that names the problem (a counted 'decode' skip in the jobs).

Expected values are computed here from the definitions (the 16-bit range, the alpha
composite, the palette, the JFIF and ITU-R 601-2 formulas, the EXIF spec's orientations),
not by the Pillow conversions the module uses.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import av
import numpy as np
import pytest
import soundfile
from PIL import Image

from vqtok.pipelines.data.media import ALPHA_BACKGROUND, MediaConfig, prepare, restore

RNG = np.random.default_rng(22)
H, W = 5, 7
LEVEL = 1  # 8-bit levels of slack: 1/255, the rounding of one conversion


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _levels(shape: tuple[int, ...]) -> np.ndarray:
    return RNG.integers(0, 256, shape, dtype=np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of (H, W, 3) levels, float64."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _composite(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return colour.astype(np.float64) * a + ALPHA_BACKGROUND * (1.0 - a)


# Each case: mode -> (file bytes, the expected upright picture as float64 levels,
# (H, W) grey or (H, W, 3) colour). Grey reaches a 3-channel model as three equal
# channels, colour a 1-channel one as luma.
def _mode_1() -> tuple[bytes, np.ndarray]:
    bits = RNG.integers(0, 2, (H, W)).astype(bool)
    return _save(Image.fromarray(bits), "PNG"), bits * 255.0


def _mode_l() -> tuple[bytes, np.ndarray]:
    grey = _levels((H, W))
    return _save(Image.fromarray(grey), "PNG"), grey.astype(np.float64)


def _mode_la() -> tuple[bytes, np.ndarray]:
    pixels = _levels((H, W, 2))
    image = Image.fromarray(pixels, mode="LA")
    return _save(image, "PNG"), _composite(pixels[..., :1], pixels[..., 1])[..., 0]


def _mode_p() -> tuple[bytes, np.ndarray]:
    palette = _levels((16, 3))
    index = RNG.integers(0, 16, (H, W)).astype(np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    return _save(image, "PNG"), palette[index].astype(np.float64)


def _mode_p_transparent() -> tuple[bytes, np.ndarray]:
    palette = _levels((16, 3))
    index = RNG.integers(0, 16, (H, W)).astype(np.uint8)
    index[0, 0] = 3  # at least one transparent pixel
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.reshape(-1).tolist())
    expected = palette[index].astype(np.float64)
    expected[index == 3] = ALPHA_BACKGROUND
    return _save(image, "PNG", transparency=3), expected


def _mode_pa() -> tuple[bytes, np.ndarray]:
    palette = _levels((16, 3))
    index, alpha = RNG.integers(0, 16, (H, W)).astype(np.uint8), _levels((H, W))
    image = Image.fromarray(np.stack([index, alpha], axis=2), mode="LA")
    image = Image.frombytes("PA", (W, H), image.tobytes())
    image.putpalette(palette.reshape(-1).tolist())
    return _save(image, "TIFF"), _composite(palette[index], alpha)


def _mode_rgb() -> tuple[bytes, np.ndarray]:
    rgb = _levels((H, W, 3))
    return _save(Image.fromarray(rgb), "PNG"), rgb.astype(np.float64)


def _mode_rgba() -> tuple[bytes, np.ndarray]:
    pixels = _levels((H, W, 4))
    return _save(Image.fromarray(pixels), "PNG"), _composite(pixels[..., :3], pixels[..., 3])


def _mode_cmyk() -> tuple[bytes, np.ndarray]:
    cmy = _levels((H, W, 3))  # no black ink: R = 255 - C, G = 255 - M, B = 255 - Y
    cmyk = np.concatenate([cmy, np.zeros((H, W, 1), np.uint8)], axis=2)
    image = Image.frombytes("CMYK", (W, H), cmyk.tobytes())
    return _save(image, "TIFF"), 255.0 - cmy


def _mode_ycbcr() -> tuple[bytes, np.ndarray]:
    ycc = _levels((H, W, 3)).astype(np.float64)
    ycc[..., 1:] = 128 + (ycc[..., 1:] - 128) * 0.3  # keep RGB inside 0..255 (no clipping)
    ycc = np.rint(ycc).astype(np.uint8)
    y, cb, cr = (ycc[..., i].astype(np.float64) for i in range(3))
    rgb = np.stack(  # JFIF (ITU-R T.871)
        [y + 1.402 * (cr - 128), y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128),
         y + 1.772 * (cb - 128)], axis=2)
    image = Image.frombytes("YCbCr", (W, H), ycc.tobytes())
    return _save(image, "TIFF"), np.clip(rgb, 0, 255)


def _sixteen(mode: str) -> Callable[[], tuple[bytes, np.ndarray]]:
    def make() -> tuple[bytes, np.ndarray]:
        grey = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
        grey[0, 0], grey[0, 1] = 0x8080, 65535  # a mid grey (the reported case) and white
        dtype = ">u2" if mode == "I;16B" else "<u2"
        image = Image.frombytes(mode, (W, H), grey.astype(dtype).tobytes())
        return _save(image, "PNG" if mode == "I;16" else "TIFF"), grey * (255.0 / 65535.0)
    return make


def _mode_i() -> tuple[bytes, np.ndarray]:
    grey = RNG.integers(0, 65536, (H, W)).astype(np.int32)
    return _save(Image.fromarray(grey, mode="I"), "TIFF"), grey * (255.0 / 65535.0)


def _mode_f() -> tuple[bytes, np.ndarray]:
    grey = RNG.random((H, W)).astype(np.float32)
    return _save(Image.fromarray(grey, mode="F"), "TIFF"), grey.astype(np.float64) * 255.0


def _png16(values: np.ndarray, colour_type: int) -> bytes:
    """A 16-bit PNG written by hand (Pillow writes none with colour): (H, W, C) uint16."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    height, width = values.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


def _png16_case(colour_type: int, channels: int) -> Callable[[], tuple[bytes, np.ndarray]]:
    """16-bit RGB (2), grey + alpha (4) and RGBA (6) PNGs: Pillow reads their high bytes."""
    def make() -> tuple[bytes, np.ndarray]:
        values = RNG.integers(0, 65536, (H, W, channels)).astype(np.uint16)
        high = values >> 8
        if colour_type == 2:
            return _png16(values, 2), high.astype(np.float64)
        return _png16(values, colour_type), _composite(high[..., :-1], high[..., -1]).squeeze()
    return make


MODES: dict[str, Callable[[], tuple[bytes, np.ndarray]]] = {
    "RGB+16-bit": _png16_case(2, 3), "RGBA+16-bit-grey": _png16_case(4, 2),
    "RGBA+16-bit": _png16_case(6, 4),
    "1": _mode_1, "L": _mode_l, "LA": _mode_la, "P": _mode_p, "P+transparency": _mode_p_transparent,
    "PA": _mode_pa, "RGB": _mode_rgb, "RGBA": _mode_rgba, "CMYK": _mode_cmyk,
    "YCbCr": _mode_ycbcr, "I;16": _sixteen("I;16"), "I;16B": _sixteen("I;16B"), "I": _mode_i,
    "F": _mode_f,
}


def _round_trip(data: bytes, channels: int) -> np.ndarray:
    """prepare then restore: the PNG vqtok writes back, as (H, W, C) levels."""
    pieces, meta = prepare(data, MediaConfig("image", channels=channels))
    assert pieces.shape == (1, channels, meta["height"], meta["width"])
    assert pieces.abs().max() <= 1
    ext, png = restore(pieces, meta, "image")
    with Image.open(io.BytesIO(png)) as image:
        assert (ext, image.mode) == ("png", "L" if channels == 1 else "RGB")
        levels = np.asarray(image)
    return levels.reshape(*levels.shape[:2], -1)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_image_mode_round_trips_as_documented(mode, channels):
    data, truth = MODES[mode]()
    with Image.open(io.BytesIO(data)) as image:  # the file really holds that mode
        assert image.mode == mode.split("+")[0]
    if truth.ndim == 3 and channels == 1:
        truth = _luma(truth)
    if truth.ndim == 2:
        truth = np.repeat(truth[..., None], channels, axis=2)
    # Colour to a grey model rounds twice (to 8-bit RGB, then to luma): half a level more.
    slack = LEVEL + (0.5 if mode in ("YCbCr", "CMYK") and channels == 1 else 0.0)
    got = _round_trip(data, channels).astype(np.float64)
    assert got.shape == (H, W, channels)
    assert np.abs(got - truth).max() <= slack, f"{mode}: off by {np.abs(got - truth).max()}"


def test_grey_sixteen_bit_png_is_not_saturated():
    """The reported case: Pillow's I;16 -> RGB clips at 255, so mid grey came back white."""
    grey = np.full((H, W), 0x8080, np.uint16)
    got = _round_trip(_save(Image.fromarray(grey), "PNG"), 3)
    assert np.abs(got.astype(np.float64) - 0x8080 * 255 / 65535).max() <= 0.5


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Image.new("LAB", (W, H)), "image mode LAB is not read"),
        (lambda: Image.fromarray(np.full((H, W), 1.5, np.float32), mode="F"), r"\[1.5, 1.5\]"),
        (lambda: Image.fromarray(np.full((H, W), np.nan, np.float32), mode="F"), "NaN or Inf"),
        (lambda: Image.fromarray(np.full((H, W), -3, np.int32), mode="I"), "mode I as 16-bit"),
        (lambda: Image.fromarray(np.full((H, W), 1 << 20, np.int32), mode="I"), "16-bit"),
    ],
    ids=["LAB", "F-above-1", "F-NaN", "I-negative", "I-above-16-bit"],
)
def test_unreadable_modes_and_values_are_refused_with_a_reason(make, message):
    with pytest.raises(ValueError, match=message):
        prepare(_save(make(), "TIFF"), MediaConfig("image"))


def test_image_models_of_other_channel_counts_are_refused():
    with pytest.raises(ValueError, match="1 or 3 channels, not 4"):
        prepare(MODES["RGB"]()[0], MediaConfig("image", channels=4))


# EXIF orientation -> how the stored pixels are shown (TIFF/EXIF 2.3, tag 0x0112).
ORIENTATIONS: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),  # the usual portrait phone photo: turn clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(orientation):
    stored = _levels((4, 6, 3))
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = orientation
    got = _round_trip(_save(image, "PNG", exif=exif), 3)
    np.testing.assert_array_equal(got, ORIENTATIONS[orientation](stored))


def test_exif_rotated_jpeg_comes_back_upright():
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:, :16] = 255  # a white band on the stored left = the top once turned clockwise
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6
    got = _round_trip(_save(image, "JPEG", exif=exif, quality=95), 3)
    assert got.shape == (48, 32, 3)  # portrait
    assert got[:12].mean() > 240 and got[20:].mean() < 15


PCM16 = 1.0 / 32768  # restore writes 16-bit WAV: one step of it


def _wav(waves: np.ndarray, rate: int = 8000) -> bytes:
    """waves: (T, C) float -> 32-bit float WAV, so that values survive exactly."""
    buffer = io.BytesIO()
    soundfile.write(buffer, waves.astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


def _audio(frames: int, channels: int) -> np.ndarray:
    t = np.arange(frames)[:, None]
    return 0.4 * np.sin(t / (3.0 + np.arange(channels)[None, :]))


AUDIO = MediaConfig("audio", channels=1, sample_rate=8000, window_seconds=0.03)


@pytest.mark.parametrize(
    "file_channels, model_channels, mono, expect",
    [
        (1, 1, False, "keep"),
        (2, 2, False, "keep"),
        (6, 6, False, "keep"),
        (1, 2, False, "repeat"),
        (2, 1, False, "refuse"),
        (6, 1, False, "refuse"),
        (2, 1, True, "mean"),
        (6, 1, True, "mean"),
        (6, 2, False, "refuse"),
        (6, 2, True, "refuse"),
    ],
)
def test_audio_channel_layouts(file_channels, model_channels, mono, expect):
    waves = _audio(1000, file_channels)
    config = MediaConfig("audio", channels=model_channels, sample_rate=8000,
                         window_seconds=0.03, mono=mono)
    if expect == "refuse":
        with pytest.raises(ValueError, match=f"{file_channels} channels and the model takes"):
            prepare(_wav(waves), config)
        return
    pieces, meta = prepare(_wav(waves), config)
    assert pieces.shape == (meta["num_windows"], model_channels, 240)
    model_input = pieces.transpose(0, 1).reshape(model_channels, -1)[:, :1000].numpy().T
    written, rate = soundfile.read(io.BytesIO(restore(pieces, meta, "audio")[1]), always_2d=True)
    assert rate == 8000 and written.shape[0] == 1000
    if expect == "keep":
        np.testing.assert_allclose(model_input, waves, atol=1e-6)
        np.testing.assert_allclose(written, waves, atol=PCM16)
    elif expect == "repeat":
        np.testing.assert_allclose(model_input, np.repeat(waves, model_channels, 1), atol=1e-6)
        np.testing.assert_allclose(written, waves, atol=PCM16)  # written back mono
    else:
        mixed = waves.mean(axis=1, keepdims=True)
        np.testing.assert_allclose(model_input, mixed, atol=1e-6)
        np.testing.assert_allclose(written, mixed, atol=PCM16)


def test_cancelling_channels_are_refused_then_mixed_only_on_request():
    wave = _audio(800, 1)
    stereo = _wav(np.concatenate([wave, -wave], axis=1))
    with pytest.raises(ValueError, match="--mono"):
        prepare(stereo, AUDIO)
    pieces, _ = prepare(stereo, MediaConfig(**{**AUDIO.__dict__, "mono": True}))
    assert float(pieces.abs().max()) < 1e-6  # what was asked for: their mean is silence


def test_resampled_multichannel_audio_keeps_each_channel():
    waves = _audio(1600, 2)
    config = MediaConfig("audio", channels=2, sample_rate=16000, window_seconds=0.05)
    pieces, meta = prepare(_wav(waves, rate=8000), config)
    assert meta["model_length"] == 3200 and pieces.shape[1] == 2
    written, _ = soundfile.read(io.BytesIO(restore(pieces, meta, "audio")[1]), always_2d=True)
    middle = slice(100, 1500)  # resampling edges ring
    np.testing.assert_allclose(written[middle], waves[middle], atol=1e-2)
    assert np.corrcoef(written[middle, 0], written[middle, 1])[0, 1] < 0.99  # not one mix


def _mp4(frames: np.ndarray, rotation: int) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        if rotation:
            stream.set_display_rotation(rotation)
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode())
    return buffer.getvalue()


@pytest.mark.parametrize("rotation", [0, 90, -90, 180])
def test_video_display_rotation_is_applied(rotation):
    stored = np.zeros((3, 16, 32, 3), np.uint8)
    stored[:, :, :8] = 255  # a white band on the stored left
    pieces, meta = prepare(_mp4(stored, rotation), MediaConfig("video", clip_frames=3))
    shown = np.rot90(stored[0], rotation // 90)  # PyAV: counter-clockwise degrees
    assert (meta["height"], meta["width"]) == shown.shape[:2]
    first = ((pieces[0, :, 0].permute(1, 2, 0).numpy() + 1) * 127.5)
    assert np.abs(first - shown).mean() < 8  # H.264, lossless luma, rgb24 <-> yuv rounding
    with av.open(io.BytesIO(restore(pieces, meta, "video")[1])) as container:
        frame = next(container.decode(video=0))
        assert (frame.height, frame.width, frame.rotation) == (*shown.shape[:2], 0)


@pytest.mark.parametrize(
    "pix_fmt", ["yuv420p", "yuv420p10le", "yuv422p", "yuv444p16le", "gray", "gray16le"]
)
def test_video_pixel_formats_are_scaled_to_8_bits(pix_fmt):
    """8-, 10- and 16-bit, subsampled or grey: FFmpeg's conversion to rgb24 scales them, so a
    grey ramp comes back as the same ramp (FFV1 keeps each format's values losslessly)."""
    ramp = np.linspace(0, 255, 32).round().astype(np.uint8)
    stored = np.broadcast_to(ramp[None, None, :, None], (2, 16, 32, 3)).copy()
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="matroska") as container:
        stream = container.add_stream("ffv1", rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 16, pix_fmt
        for pixels in stored:
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=pix_fmt)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    pieces, _ = prepare(buffer.getvalue(), MediaConfig("video", clip_frames=2))
    got = np.rint((pieces[0].permute(1, 2, 3, 0).numpy() + 1) * 127.5)
    # YUV's limited range (16..235) rounds twice, to and from RGB: a level or two, no clipping.
    assert np.abs(got - stored).max() <= 2
