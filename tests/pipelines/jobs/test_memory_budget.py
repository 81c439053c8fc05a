"""`runtime.max_memory` (`--max-memory`): jobs under a tiny budget cut inputs into tiles and
chunks, and give the codes and media of a large budget; bad budgets are refused; the budget
bounds the peak memory of `vqtok encode`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
from helpers.media import photo_frames
from PIL import Image
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.models.memory import BudgetError, plan
from vqtok.pipelines import (
    DecodeConfig,
    EncodeConfig,
    decode_shards,
    encode_shards,
    make_shards,
    read_samples,
    unpack_codes,
)
from vqtok.pipelines.config import RuntimeOptions, parse_size

LARGE = 1 << 40  # every pass whole


def _samples(folder: Path) -> dict[str, dict[str, bytes]]:
    return {s.key: s.fields for tar in sorted(folder.glob("*.tar")) for s in read_samples(str(tar))}


def _encode(checkpoint, shards, out: Path, budget: int) -> dict[str, dict[str, bytes]]:
    runtime = RuntimeOptions(batch_size=4, max_memory=budget)
    config = EncodeConfig(workers=0, progress=False, runtime=runtime)
    summary = encode_shards(checkpoint, shards, out, config)
    assert summary.skipped == 0
    return _samples(out)


def _decode(checkpoint, codes: Path, out: Path, budget: int) -> dict[str, dict[str, bytes]]:
    runtime = RuntimeOptions(max_memory=budget)
    summary = decode_shards(checkpoint, str(codes), out, DecodeConfig(progress=False,
                                                                      runtime=runtime))
    assert summary.skipped == 0
    return _samples(out)


def _least_budget(model, shape: tuple[int, ...], part: str) -> int:
    """The smallest budget the planner accepts for one input of `shape`."""
    lo, hi = 1, plan(model, shape, LARGE, part).peak_bytes
    while lo < hi:
        mid = (lo + hi) // 2
        try:
            plan(model, shape, mid, part)
            hi = mid
        except BudgetError:
            lo = mid + 1
    return lo


def _budgets(model, codes: dict[str, dict[str, bytes]]) -> dict[str, tuple[int, bool]]:
    """Per part: a budget every piece of the job fits in but the largest not whole, and
    whether some piece is then cut into tiles (rather than sent whole)."""
    shapes = set()
    for fields in codes.values():
        _, meta = unpack_codes(fields)
        shapes.add((1, model.config.channels, *meta["media"]["input_size"]))
    out = {}
    for part in ("encode", "decode"):
        # A quarter of the largest whole pass (a few tiles, so that the test stays quick),
        # or more where a piece of one code position needs more.
        largest = max(plan(model, shape, LARGE, part).peak_bytes for shape in shapes)
        least = max(_least_budget(model, shape, part) for shape in shapes)
        budget = max(least, largest // 4)
        cut = any(not plan(model, shape, budget, part).whole for shape in shapes)
        out[part] = (budget, cut)
    return out


def _check_equal_under_tiny_budget(checkpoint, shards, tmp_path: Path, want_encode_cut: bool):
    model = vqtok.load(checkpoint)
    codes = _encode(checkpoint, shards, tmp_path / "codes-large", LARGE)
    media = _decode(checkpoint, tmp_path / "codes-large", tmp_path / "media-large", LARGE)
    budgets = _budgets(model, codes)
    assert budgets["decode"][1], "the tiny budget must cut some decode into tiles"
    assert budgets["encode"][1] or not want_encode_cut
    tiny_codes = _encode(checkpoint, shards, tmp_path / "codes-tiny", budgets["encode"][0])
    assert list(tiny_codes) == list(codes)
    for key in codes:
        assert np.array_equal(unpack_codes(tiny_codes[key])[0], unpack_codes(codes[key])[0]), key
    tiny_media = _decode(checkpoint, tmp_path / "codes-large", tmp_path / "media-tiny",
                         budgets["decode"][0])
    assert list(tiny_media) == list(media)
    for key in media:
        _assert_same_media(tiny_media[key], media[key], model.config.modality)
    saved = (tmp_path / "codes-tiny" / "encode_config.json").read_text()
    assert f'"max_memory": {budgets["encode"][0]}' in saved


def _renamed(make, root: Path, modality: str) -> Path:
    """Shards of root/src named large-*.tar, beside the fixtures' shard-*.tar in one job."""
    make(root / "src", root / "made", modality)
    (root / "shards").mkdir()
    for tar in (root / "made").glob("*.tar"):
        tar.rename(root / "shards" / tar.name.replace("shard-", "large-"))
    return root / "shards"


def _media_array(fields: dict[str, bytes]) -> np.ndarray:
    ext = next(e for e in fields if e != "cls")
    data = io.BytesIO(fields[ext])
    if ext == "png":
        return np.asarray(Image.open(data), dtype=np.int32)
    if ext == "wav":
        return soundfile.read(data, dtype="int16")[0].astype(np.int32)
    with av.open(data) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(
            np.int32
        )


def _assert_same_media(tiled: dict[str, bytes], whole: dict[str, bytes], modality: str) -> None:
    """Tiles give the whole input's samples up to float noise (oneDNN blocks other sizes
    differently), which may flip a rounding to uint8 or int16: one step at most. H.264 then
    spreads such a flip over the following frames, so video is compared on average."""
    a, b = _media_array(tiled), _media_array(whole)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    if modality == "video":
        assert diff.mean() < 0.5, diff.mean()
    else:
        assert diff.max() <= 1, diff.max()


@pytest.fixture(scope="module")
def large_image_shards(tmp_path_factory) -> Path:
    """One photo at 240x320, larger than the encoder's receptive field, so encode tiles too."""
    root = tmp_path_factory.mktemp("large-image")
    (root / "src").mkdir()
    photo_frames(1)[0].resize((320, 240)).save(root / "src" / "large.png")
    return _renamed(make_shards, root, "image")


@pytest.fixture(scope="module")
def large_video_shards(tmp_path_factory) -> Path:
    """A 17-frame 120x160 clip: room for time chunks and spatial tiles in encode."""
    root = tmp_path_factory.mktemp("large-video")
    (root / "src").mkdir()
    frames = [frame.resize((160, 120)) for frame in photo_frames(17)]
    with av.open(str(root / "src" / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())
    return _renamed(make_shards, root, "video")


def test_image_codes_and_media_equal_under_a_tiny_budget(
    image_shards, large_image_shards, checkpoints, tmp_path
):
    shards = [str(image_shards), str(large_image_shards)]
    _check_equal_under_tiny_budget(checkpoints["image-vq-f8"], shards, tmp_path, True)


def test_audio_codes_and_media_equal_under_a_tiny_budget(audio_shards, checkpoints, tmp_path):
    _check_equal_under_tiny_budget(checkpoints["audio-vq-16k"], str(audio_shards), tmp_path, True)


def test_video_codes_and_media_equal_under_a_tiny_budget(video_shards, checkpoints, tmp_path):
    # The fixture's 64x64 clips lie within the encoder's receptive field: decode tiles them,
    # encode sends them whole (the slow test below cuts a larger clip in encode too).
    _check_equal_under_tiny_budget(checkpoints["video-vq-t4s8"], str(video_shards), tmp_path,
                                   False)


@pytest.mark.slow  # about two minutes on 2 CPU cores
def test_a_larger_clip_is_chunked_and_tiled_in_encode_with_the_same_codes(
    video_shards, large_video_shards, checkpoints, tmp_path
):
    shards = [str(video_shards), str(large_video_shards)]
    _check_equal_under_tiny_budget(checkpoints["video-vq-t4s8"], shards, tmp_path, True)


def test_sizes_are_read_in_binary_and_decimal_units():
    assert parse_size("2GiB") == 2 * 2**30 == parse_size("2g")
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("1.5G") == 3 * 2**29
    assert parse_size("1MB") == 10**6 and parse_size(4096) == 4096
    assert RuntimeOptions(max_memory="1GiB").resolved().max_memory == 2**30
    assert RuntimeOptions().resolved().max_memory >= 1


@pytest.mark.parametrize("value", ["lots", "-1", "0", "nan", "inf", "1e400", "2 XB"])
@pytest.mark.parametrize("command", ["encode", "decode"])
def test_a_bad_max_memory_exits_2_with_a_message(value, command, checkpoints, tmp_path):
    result = CliRunner().invoke(app, [
        command, str(checkpoints["image-vq-f8"]), str(tmp_path / "in"), str(tmp_path / "out"),
        "--max-memory", value,
    ])
    assert result.exit_code == 2, result.output
    assert "max_memory must be" in result.output
    assert not (tmp_path / "out").exists()


def _peak_rss_of_encode(checkpoint, shards, out: Path, budget: str) -> int:
    """Peak RSS in bytes of `vqtok encode` in a child process (its own peak only: the
    RUSAGE_CHILDREN figure is the largest child's, and each call starts a new one)."""
    script = (
        "import resource, subprocess, sys\n"
        "code = subprocess.call([sys.executable, '-m', 'vqtok.cli.main', 'encode', "
        f"{str(checkpoint)!r}, {str(shards)!r}, {str(out)!r}, '--workers', '0', "
        f"'--no-progress', '--batch-size', '1', '--max-memory', {budget!r}],"
        " stdout=subprocess.DEVNULL)\n"
        "assert code == 0, code\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.strip())


@pytest.mark.slow  # two CLI processes: importing torch alone takes seconds on a small CPU
def test_a_small_budget_bounds_the_peak_memory_of_encode(checkpoints, tmp_path):
    # A 3200x2400 photo: the whole encode of the small model needs about 800 MiB of
    # activations by the planner's count; 16 MiB pieces need a few percent of that.
    src = tmp_path / "src"
    src.mkdir()
    photo_frames(1)[0].resize((3200, 2400)).save(src / "big.png")
    make_shards(src, tmp_path / "shards", "image")
    checkpoint = checkpoints["image-vq-f8"]
    model = vqtok.load(checkpoint)
    whole = plan(model, (1, 3, 2400, 3200), LARGE).peak_bytes
    assert whole > 500 * 2**20
    small = _peak_rss_of_encode(checkpoint, tmp_path / "shards", tmp_path / "small", "16MiB")
    large = _peak_rss_of_encode(checkpoint, tmp_path / "shards", tmp_path / "large", "64GiB")
    # The planner's count is an upper bound (LIVE_FACTOR's headroom, and the allocator reuses
    # freed blocks): the whole pass measures well under it, but far above the tiled one.
    assert large - small > 128 * 2**20, (small, large, whole)
