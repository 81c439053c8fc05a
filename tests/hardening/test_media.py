"""Media decoding: degenerate, hostile and random inputs behind media extensions."""

from __future__ import annotations

import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers.hardening import DATA, declare_png_size, png_bytes, time_limit, wav_bytes
from helpers.media import save_small_model, write_tar
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vqtok.pipelines import DecodeConfig, EncodeConfig, decode_shards, encode_shards
from vqtok.pipelines.config import ErrorOptions
from vqtok.pipelines.data.media import EXTENSIONS, MediaConfig, prepare, restore

CONFIGS = {
    "image": MediaConfig("image"),
    "audio": MediaConfig("audio", channels=1, sample_rate=16000),
    "video": MediaConfig("video", clip_frames=5),
}
SEEDS = {"image": png_bytes(12, 9), "audio": wav_bytes(np.sin(np.arange(800) / 7.0) * 0.5),
         "video": (DATA / "video" / "pan.mp4").read_bytes()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {name: save_small_model(preset, root / name)
            for name, preset in (("image", "image-vq-f8"), ("audio", "audio-vq-16k"))}


def _encode(checkpoint, members, tmp_path, modality):
    folder = tmp_path / f"in-{modality}"
    folder.mkdir()
    write_tar(folder / f"{modality}.tar", members)
    out = tmp_path / f"codes-{modality}"
    summary = encode_shards(
        checkpoint,
        str(folder),
        out,
        EncodeConfig(workers=0, progress=False, errors=ErrorOptions(on_error="skip")),
    )
    logged = {
        e["key"]: e
        for log in summary.error_logs
        for e in map(json.loads, Path(log).read_text().splitlines())
    }
    return summary, logged, out


@pytest.mark.reliability(
    input="text, random bytes, and another modality's file behind every media extension",
    fault="non-media bytes",
    expected="ValueError-like exception from prepare (a 'decode' skip), within 10 s",
)
@pytest.mark.parametrize("modality", sorted(EXTENSIONS))
def test_non_media_bytes_raise_clean_errors(modality, observed):
    payloads = {
        "text": b"hello, not media at all\n" * 10,
        "random": np.random.default_rng(0).bytes(4096),
        "empty": b"",
    }
    foreign = [m for m in SEEDS if m != modality]
    messages = []
    for name, data in [*payloads.items(), *((m, SEEDS[m]) for m in foreign)]:
        with time_limit(10):
            try:
                pieces, _ = prepare(data, CONFIGS[modality])
            except Exception as error:  # noqa: BLE001 - any Exception is a counted skip in the jobs
                messages.append(f"{name}: {type(error).__name__}")
                continue
        assert (
            name in foreign and pieces.isfinite().all() and pieces.abs().max() <= 1
        )  # really media
        messages.append(f"{name}: decoded (it is media)")
    observed(", ".join(messages))


@pytest.mark.reliability(
    input="image shard: 1x1 PNG, text behind .png, PNG declaring 9000x9000 (81 Mpixel)",
    fault="degenerate size / non-media / decompression bomb",
    expected="1x1 round-trips to a 1x1 PNG; the others are counted 'decode' skips",
)
def test_image_shard_with_degenerate_and_hostile_images(models, tmp_path, observed):
    bomb = declare_png_size(png_bytes(4, 4), 9000, 9000)
    members = [("tiny.png", png_bytes(1, 1, 3)), ("text.png", b"not an image"), ("bomb.png", bomb)]
    start = time.monotonic()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no Pillow bomb warning either: ours refuses first
        summary, logged, codes = _encode(models["image"], members, tmp_path, "image")
    assert time.monotonic() - start < 30
    assert (summary.samples, summary.skipped) == (1, 2)
    assert {k: e["stage"] for k, e in logged.items()} == {"text": "decode", "bomb": "decode"}
    assert "exceeds the limit" in logged["bomb"]["message"]
    decode_shards(
        models["image"],
        str(codes),
        tmp_path / "media",
        DecodeConfig(output_format="files", progress=False),
    )
    with Image.open(tmp_path / "media" / "tiny.png") as image:
        assert image.size == (1, 1)
    observed(f"1 written, 2 skipped; bomb: {logged['bomb']['message'].split(': ', 1)[1]}")


@pytest.mark.reliability(
    input="image or video frame larger than MediaConfig.max_image_pixels",
    fault="configurable decompression-bomb limit",
    expected="refused before decoding; None lifts it",
)
def test_pixel_limit_is_configurable():
    small = MediaConfig("image", max_image_pixels=100)
    with pytest.raises(ValueError, match="16x16 pixels exceeds the limit of 100"):
        prepare(png_bytes(16, 16), small)
    assert prepare(png_bytes(16, 16), MediaConfig("image", max_image_pixels=None))[0].shape == (
        1,
        3,
        16,
        16,
    )
    with pytest.raises(ValueError, match="video frame of .* exceeds"):
        prepare(SEEDS["video"], MediaConfig("video", clip_frames=5, max_image_pixels=100))


def soundfile_bytes(samples: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


@pytest.mark.reliability(
    input="an 89 kB FLAC of one hour of silence; 5 min at 8 kHz read for 48 kHz; "
    "an MP4 longer than the limit or resized past it",
    fault="a small file that decodes to far more samples or frames than memory holds",
    expected="ValueError naming the limit, raised while decoding, before memory fills",
)
def test_decoded_length_is_bounded_before_memory_fills():
    hour_of_silence = soundfile_bytes(np.zeros(8000 * 3600, dtype=np.int16), 8000)
    assert len(hour_of_silence) < 100_000  # tiny on disk
    audio = MediaConfig("audio", channels=1, sample_rate=8000, max_decoded_values=8000 * 600)
    with pytest.raises(ValueError, match="audio decodes to more than 4800000 values"):
        prepare(hour_of_silence, audio)
    pieces, meta = prepare(wav_bytes(np.zeros(4000)), audio)
    assert meta["length"] == 4000
    upsampled = MediaConfig("audio", channels=1, sample_rate=48000, max_decoded_values=8000 * 600)
    with pytest.raises(
        ValueError, match="audio decodes to more than"
    ):  # 10 min at 8 kHz is 6x that at 48 kHz
        prepare(soundfile_bytes(np.zeros(8000 * 300, dtype=np.int16), 8000), upsampled)
    with pytest.raises(ValueError, match="video decodes to more than 100000 values"):
        prepare(SEEDS["video"], MediaConfig("video", clip_frames=5, max_decoded_values=100_000))
    with pytest.raises(ValueError, match="video resized to"):
        prepare(SEEDS["video"], MediaConfig("video", clip_frames=5, frame_size=(4096, 4096)))


@pytest.mark.reliability(
    input="audio shard: empty WAV, 1-sample WAV, WAV with a NaN, WAV with +Inf",
    fault="zero-length, one-sample and non-finite audio",
    expected="1-sample audio round-trips to 1 sample; empty and NaN/Inf are counted 'decode' skips",
)
def test_audio_shard_with_degenerate_and_non_finite_audio(models, tmp_path, observed):
    wave = np.sin(np.arange(400) / 5.0) * 0.3
    members = [
        ("empty.wav", wav_bytes(np.zeros(0))),
        ("one.wav", wav_bytes(np.array([0.25]), rate=8000)),
        ("nan.wav", wav_bytes(np.where(np.arange(400) == 7, np.nan, wave))),
        ("inf.wav", wav_bytes(np.where(np.arange(400) == 9, np.inf, wave))),
    ]
    summary, logged, codes = _encode(models["audio"], members, tmp_path, "audio")
    assert (summary.samples, summary.skipped) == (1, 3)
    assert {k: e["stage"] for k, e in logged.items()} == {
        "empty": "decode",
        "nan": "decode",
        "inf": "decode",
    }
    assert "NaN or Inf" in logged["nan"]["message"] and "NaN or Inf" in logged["inf"]["message"]
    decode_shards(
        models["audio"],
        str(codes),
        tmp_path / "media",
        DecodeConfig(output_format="files", progress=False),
    )
    restored, rate = soundfile.read(tmp_path / "media" / "one.wav")
    assert (restored.shape, rate) == ((1,), 8000)
    observed("; ".join(f"{k}: {e['message'].split(': ', 1)[1]}" for k, e in sorted(logged.items())))


def _mutated(seed: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buffer = bytearray(seed)
    for position, value in edits:
        buffer[position % len(buffer)] = value
    return bytes(buffer[:cut] if cut is not None else buffer)


@pytest.mark.reliability(
    input="valid PNG, WAV and MP4",
    fault="hypothesis: random byte edits and truncation",
    expected="finite pieces in [-1, 1] or an Exception (counted skip), within 10 s; never a crash",
)
@pytest.mark.parametrize("modality", sorted(SEEDS))
def test_fuzzed_media_decode_or_fail_cleanly(modality):
    @given(edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
           cut=st.none() | st.integers(0, len(SEEDS[modality])))
    @settings(max_examples=40 if modality != "video" else 25, deadline=None)
    def decode_or_fail(edits, cut):
        data = _mutated(SEEDS[modality], edits, cut)
        with time_limit(10):
            try:
                pieces, meta = prepare(data, CONFIGS[modality])
            except Exception:  # noqa: BLE001 - the jobs turn any Exception into a counted skip
                return
        assert pieces.isfinite().all() and pieces.abs().max() <= 1
        json.dumps(meta)  # meta goes into the code sample's JSON

    decode_or_fail()



def _sixteen_bit_grey_png(level: int, width: int = 16, height: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width), level, np.uint16)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.reliability(
    input="grey 16-bit PNG (every pixel 0x8080, mid grey)",
    fault="Pillow's I;16 -> RGB conversion saturates at 255 (user report: 92% white)",
    expected="mid grey in the model input and in the restored PNG, within 1/255; no white",
)
def test_sixteen_bit_png_keeps_its_grey_level(models, tmp_path, observed):
    level = 0x8080
    want = level * 255 / 65535  # the 16-bit range mapped onto 8 bits
    pieces, meta = prepare(_sixteen_bit_grey_png(level), CONFIGS["image"])
    model_levels = (pieces + 1) * 127.5
    assert float((model_levels - want).abs().max()) <= 1.0
    _, png = restore(pieces, meta, "image")
    restored = np.asarray(Image.open(io.BytesIO(png))).astype(np.float64)
    assert np.abs(restored - want).max() <= 1.0
    # Through the jobs, too: encoded, not skipped, and decoded to an image of the same size.
    summary, logged, codes = _encode(
        models["image"], [("grey16.png", _sixteen_bit_grey_png(level, 32, 24))], tmp_path, "image"
    )
    assert (summary.samples, summary.skipped, logged) == (1, 0, {})
    white = float((restored == 255).mean())
    observed(f"model input and restored PNG at level {restored.mean():.1f} "
             f"(expected {want:.1f}); {white:.0%} white")


@pytest.mark.reliability(
    input="portrait phone photo: a 48x32 JPEG stored landscape with EXIF orientation 6",
    fault="EXIF orientation ignored: tokenized and decoded sideways",
    expected="model input and decoded PNG are upright (32 wide, 48 high), top band on top",
)
def test_exif_orientation_is_applied_through_encode_and_decode(models, tmp_path, observed):
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:, :16] = 255  # stored left = the top of the picture once turned clockwise
    image = Image.fromarray(stored)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif, quality=95)
    pieces, meta = prepare(buffer.getvalue(), CONFIGS["image"])
    assert (meta["height"], meta["width"]) == (48, 32)
    top, bottom = float(pieces[0, :, :12].mean()), float(pieces[0, :, 20:].mean())
    assert top > 0.9 and bottom < -0.9
    summary, _, codes = _encode(
        models["image"], [("portrait.jpg", buffer.getvalue())], tmp_path, "image"
    )
    assert summary.samples == 1
    decode_shards(models["image"], str(codes), tmp_path / "media",
                  DecodeConfig(output_format="files", progress=False))
    with Image.open(tmp_path / "media" / "portrait.png") as decoded:
        assert decoded.size == (32, 48)  # (width, height): upright
    observed(f"model input {meta['width']}x{meta['height']} (W x H), top band mean "
             f"{top:+.2f}, bottom {bottom:+.2f}; decoded PNG 32x48")


@pytest.mark.reliability(
    input="stereo WAV whose right channel is the left one negated",
    fault="multichannel audio averaged to mono without a word: encodes to silence",
    expected="a counted 'decode' skip naming --mono; with MediaConfig.mono the mean "
    "(silence) as asked",
)
def test_cancelling_channels_are_refused_unless_mono_is_asked(models, tmp_path, observed):
    wave = np.sin(np.arange(1600) / 7.0) * 0.5
    buffer = io.BytesIO()
    soundfile.write(buffer, np.stack([wave, -wave], axis=1), 16000, format="WAV")
    summary, logged, _ = _encode(models["audio"], [("cancel.wav", buffer.getvalue())], tmp_path,
                                 "audio")
    assert (summary.samples, summary.skipped) == (0, 1)
    assert logged["cancel"]["stage"] == "decode" and "--mono" in logged["cancel"]["message"]
    mono = MediaConfig("audio", channels=1, sample_rate=16000, mono=True)
    pieces, meta = prepare(buffer.getvalue(), mono)
    assert meta["channels"] == 2 and float(pieces.abs().max()) <= 1 / 32768
    observed(f"skipped: {logged['cancel']['message'].split(': ', 1)[1]}; with mono: "
             f"max |x| = {float(pieces.abs().max()):.1g}")
