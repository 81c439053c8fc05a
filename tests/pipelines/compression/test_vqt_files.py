"""compress -> .vqt -> decompress for every modality, through the library and the CLI."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
from helpers.media import DATA
from PIL import Image
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.entropy import CODERS, pack
from vqtok.entropy.container import MAGIC
from vqtok.pipelines.compression.vqt import (
    CompressConfig,
    compress_bytes,
    decode_codes,
    decompress_bytes,
    encode_media,
    read_vqt,
)
from vqtok.pipelines.config import MediaOptions
from vqtok.pipelines.data.media import restore
from vqtok.pipelines.errors import UsageError

runner = CliRunner()
INPUTS = {
    "image-vq-f8": DATA / "images" / "coffee.png",
    "image-rvq-f8": DATA / "images" / "camera.png",
    "audio-vq-16k": DATA / "audio" / "hello.flac",
    "video-vq-t4s8": DATA / "video" / "pan.mp4",
}


@pytest.mark.parametrize("coder", CODERS)
@pytest.mark.parametrize("preset", sorted(INPUTS))
def test_round_trip_equals_model_decode_of_the_codes(preset, coder, checkpoints):
    model = vqtok.load(checkpoints[preset])
    data = INPUTS[preset].read_bytes()
    vqt, rates = compress_bytes(
        model, data, CompressConfig(coder=coder, media=MediaOptions(window_seconds=1.0))
    )
    codes, meta = encode_media(model, data, CompressConfig(media=MediaOptions(window_seconds=1.0)))
    header, payload = read_vqt(vqt)
    assert np.array_equal(decode_codes(model, header, payload), codes)
    with torch.inference_mode():
        x_hat = model.decode(torch.from_numpy(codes), size=meta["input_size"])
    assert decompress_bytes(model, vqt) == restore(x_hat, meta, model.config.modality)
    assert rates.written_bytes == len(vqt) and rates.codes == codes.size
    assert rates.uniform_bits == pytest.approx(codes.size * np.log2(model.codebook_size))


def test_auto_coder_keeps_the_shorter_payload_and_names_it(checkpoints):
    model = vqtok.load(checkpoints["audio-vq-16k"])
    data = INPUTS["audio-vq-16k"].read_bytes()
    payloads = {}
    for coder in CODERS:
        header, payloads[coder] = read_vqt(
            compress_bytes(model, data, CompressConfig(coder=coder))[0]
        )
    vqt, rates = compress_bytes(model, data)  # "auto" by default
    header, payload = read_vqt(vqt)
    shortest = min(CODERS, key=lambda c: len(payloads[c]))
    assert header["coder"] == shortest and payload == payloads[shortest]
    assert rates.payload_bytes == min(len(p) for p in payloads.values())


def test_residual_levels_can_be_dropped_for_a_lower_rate(checkpoints):
    model = vqtok.load(checkpoints["image-rvq-f8"])
    data = INPUTS["image-rvq-f8"].read_bytes()
    full, _ = compress_bytes(model, data)
    two, rates = compress_bytes(model, data, CompressConfig(levels=2))
    codes, _ = encode_media(model, data, CompressConfig())
    header, payload = read_vqt(two)
    assert np.array_equal(decode_codes(model, header, payload), codes[:, :2])
    assert len(two) < len(full) and rates.codes == codes[:, :2].size
    with pytest.raises(UsageError, match="levels"):
        compress_bytes(model, data, CompressConfig(levels=5))


def test_cli_round_trip_prints_the_three_rates(checkpoints, tmp_path):
    checkpoint, vqt, restored = checkpoints["image-vq-f8"], tmp_path / "a.vqt", tmp_path / "a.png"
    result = runner.invoke(app, ["compress", str(checkpoint), str(INPUTS["image-vq-f8"]), str(vqt)])
    assert result.exit_code == 0, result.output
    rates = json.loads(result.stdout)
    assert rates["written_bytes"] == vqt.stat().st_size
    assert {"uniform_bits_per_code", "entropy_bits_per_code", "written_bits_per_code"} <= set(rates)
    result = runner.invoke(
        app, ["decompress", str(vqt), str(restored)]
    )  # checkpoint from the header
    assert result.exit_code == 0, result.output
    assert restored.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _damaged(vqt: bytes) -> dict[str, tuple[bytes, str]]:
    newer = bytearray(vqt)
    struct.pack_into("<H", newer, len(MAGIC), 99)
    flipped = bytearray(vqt)
    flipped[-6] ^= 0xFF
    return {
        "truncated": (vqt[: len(vqt) // 2], "truncated"),
        "corrupted": (bytes(flipped), "corrupted"),
        "newer": (bytes(newer), "upgrade"),
        "not vqt": (b"GIF89a" + vqt, "magic"),
    }


def test_damaged_files_exit_2_with_a_clear_message(checkpoints, tmp_path):
    model = vqtok.load(checkpoints["image-vq-f8"])
    vqt, _ = compress_bytes(model, INPUTS["image-vq-f8"].read_bytes())
    for name, (data, message) in _damaged(vqt).items():
        path, restored = tmp_path / f"{name}.vqt", tmp_path / f"{name}.png"
        path.write_bytes(data)
        result = runner.invoke(app, ["decompress", str(path), str(restored),
                                     "--checkpoint", str(checkpoints["image-vq-f8"])])
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output and "Traceback" not in result.output
        assert not restored.exists()


def test_wrong_model_is_refused(checkpoints, tmp_path):
    vqt = tmp_path / "a.vqt"
    runner.invoke(
        app, ["compress", str(checkpoints["image-vq-f8"]), str(INPUTS["image-vq-f8"]), str(vqt)]
    )
    result = runner.invoke(app, ["decompress", str(vqt), str(tmp_path / "a.png"),
                                 "--checkpoint", str(checkpoints["image-rvq-f8"])])
    assert result.exit_code == 2
    assert "made with model" in result.output and not (tmp_path / "a.png").exists()


def test_input_of_another_modality_exits_2(checkpoints, tmp_path):
    result = runner.invoke(
        app,
        [
            "compress",
            str(checkpoints["image-vq-f8"]),
            str(INPUTS["audio-vq-16k"]),
            str(tmp_path / "a.vqt"),
        ],
    )
    assert result.exit_code == 2 and "cannot read the input as image" in result.output
    assert not (tmp_path / "a.vqt").exists()


def test_header_with_a_malformed_field_is_refused(checkpoints):
    model = vqtok.load(checkpoints["image-vq-f8"])
    header, payload = read_vqt(compress_bytes(model, INPUTS["image-vq-f8"].read_bytes())[0])
    for field, value in [("codes", [1, -8, 8]), ("media", "x"), ("model", None), ("coder", "zip")]:
        with pytest.raises(UsageError, match=field):
            decompress_bytes(model, pack({**header, field: value}, payload))


def test_header_holds_only_what_decoding_needs(checkpoints):
    model = vqtok.load(checkpoints["image-vq-f8"])
    vqt, rates = compress_bytes(model, INPUTS["image-vq-f8"].read_bytes())
    header, payload = read_vqt(vqt)
    assert set(header) == {"model", "prior", "modality", "coder", "levels", "codes", "media"}
    assert set(header["media"]) == {"height", "width"}
    assert rates.header_bytes == len(vqt) - len(payload) < 200


def test_an_older_format_version_is_refused_clearly(checkpoints):
    model = vqtok.load(checkpoints["image-vq-f8"])
    old = bytearray(compress_bytes(model, INPUTS["image-vq-f8"].read_bytes())[0])
    struct.pack_into("<H", old, len(MAGIC), 1)
    with pytest.raises(UsageError, match="older"):
        decompress_bytes(model, bytes(old))


def test_decompress_without_a_known_checkpoint_asks_for_one(checkpoints, tmp_path):
    model = vqtok.load(checkpoints["image-vq-f8"])
    vqt = tmp_path / "a.vqt"
    vqt.write_bytes(compress_bytes(model, INPUTS["image-vq-f8"].read_bytes())[0])
    result = runner.invoke(app, ["decompress", str(vqt), str(tmp_path / "a.png")])
    assert result.exit_code == 2 and "--checkpoint" in result.output


def test_cli_max_side_codes_a_smaller_image_and_restores_its_size(checkpoints, tmp_path):
    source = INPUTS["image-vq-f8"]
    args = ["compress", str(checkpoints["image-vq-f8"]), str(source)]
    small, full = tmp_path / "small.vqt", tmp_path / "full.vqt"
    assert runner.invoke(app, [*args, str(small), "--max-side", "32"]).exit_code == 0
    assert runner.invoke(app, [*args, str(full)]).exit_code == 0
    small_codes = read_vqt(small.read_bytes())[0]["codes"]
    full_codes = read_vqt(full.read_bytes())[0]["codes"]
    assert max(small_codes[-2:]) == 32 // 8 and max(full_codes[-2:]) > 32 // 8
    restored = tmp_path / "restored.png"
    result = runner.invoke(app, ["decompress", str(small), str(restored),
                                 "--checkpoint", str(checkpoints["image-vq-f8"])])
    assert result.exit_code == 0, result.output
    with Image.open(source) as original, Image.open(restored) as back:
        assert back.size == original.size
