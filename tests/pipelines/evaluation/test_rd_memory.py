"""`eval rd` within a memory budget: the models decode video in slabs compared as they
come (the same PSNR as the whole decode's), the metrics walk signals in blocks, and an
input whose comparison would not fit the budget is refused before it is decoded."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from helpers.media import DATA
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.pipelines.compression.vqt import CompressConfig, compress_bytes
from vqtok.pipelines.config import RuntimeOptions
from vqtok.pipelines.data.media import MediaConfig, prepare, to_uint8
from vqtok.pipelines.evaluation import codecs as baselines
from vqtok.pipelines.evaluation import quality, rd
from vqtok.pipelines.evaluation.quality import SquaredError, psnr, si_snr
from vqtok.pipelines.evaluation.rd import RDConfig, evaluate_rd

runner = CliRunner()
VIDEO = DATA / "video" / "zoom.mp4"


def test_psnr_and_si_snr_in_blocks_equal_the_whole_signal_formulas(monkeypatch):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, size=(9, 7, 5, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-3, 4, size=a.shape), 0, 255).astype(np.uint8)
    s = rng.normal(size=5003).astype(np.float32)
    e = (0.7 * s + 0.05 * rng.normal(size=5003)).astype(np.float32)
    whole_psnr, whole_snr = psnr(a, b), si_snr(s, e)
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert whole_psnr == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-12)
    s64, e64 = s - s.mean(dtype=np.float64), e - e.mean(dtype=np.float64)
    target = (e64 @ s64) / (s64 @ s64) * s64
    direct = 10 * math.log10((target @ target) / ((e64 - target) @ (e64 - target)))
    assert whole_snr == pytest.approx(direct, rel=1e-9)
    monkeypatch.setattr(quality, "BLOCK_VALUES", 64)  # many blocks, and a short last one
    assert psnr(a, b) == pytest.approx(whole_psnr, rel=1e-12)
    assert si_snr(s, e) == pytest.approx(whole_snr, rel=1e-9)
    error = SquaredError()
    for t in range(0, 9, 4):  # frames as a decoder gives them
        error.add(a[t : t + 4], b[t : t + 4])
    assert error.psnr() == pytest.approx(whole_psnr, rel=1e-12)


@torch.inference_mode()
def test_video_psnr_from_slabs_equals_the_whole_decodes(checkpoints, tmp_path):
    """Decoded in time slabs (2 under a 4 MiB budget) and compared as they come, the PSNR
    is the whole decode's (up to a pixel moved by one level by float reassociation)."""
    model = vqtok.load(checkpoints["video-vq-t4s8"])
    data = VIDEO.read_bytes()
    frames, _ = baselines.decode_video(data)
    whole = model.decode(model.encode(prepare(data, MediaConfig("video"))[0]), frames.shape[:3])
    expected = psnr(frames, to_uint8(whole[0]).permute(1, 2, 3, 0).numpy())
    curves = evaluate_rd([checkpoints["video-vq-t4s8"]], [VIDEO], tmp_path, RDConfig())
    assert curves[0]["results"]["psnr-rgb"][0] == pytest.approx(expected, abs=0.01)
    # The encoder needs more than 4 MiB for this clip: decode alone under the small budget.
    vqt, _ = compress_bytes(model, data, CompressConfig())
    slabs = rd._model_decode(model, vqt, RuntimeOptions(max_memory="4MiB"))
    measured = rd._quality("video", rd.Reference("zoom.mp4", data, frames, 8.0), slabs)
    assert measured["psnr-rgb"] == pytest.approx(expected, abs=0.01)


def test_an_input_too_large_to_compare_is_exit_2_naming_the_size(checkpoints, tmp_path):
    # zoom.mp4: 17 frames of 64x96, 313344 values, 2 bytes each: 612 KiB to compare.
    result = runner.invoke(app, ["eval", "rd", str(checkpoints["video-vq-t4s8"]), str(VIDEO),
                                 "--max-memory", "512KiB", "--out", str(tmp_path / "rd")])
    assert result.exit_code == 2, result.output
    assert "zoom.mp4: eval rd compares whole signals and would hold about 612" in result.output
    assert "more than --max-memory 512" in result.output
    assert not (tmp_path / "rd").exists()
