"""Rate-distortion evaluation: metrics against known values, and the JSON/CSV/PNG outputs."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from helpers.media import DATA
from PIL import Image
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines.evaluation import codecs as baselines
from vqtok.pipelines.evaluation.quality import (
    _gaussian_window,
    _nchw,
    _ssim_terms,
    ms_ssim,
    psnr,
    si_snr,
)
from vqtok.pipelines.evaluation.rd import RDConfig, evaluate_rd

runner = CliRunner()
IMAGE = DATA / "images" / "astronaut.png"


def _photo(size: int = 192) -> np.ndarray:
    return np.asarray(Image.open(IMAGE).convert("RGB").resize((size, size)))


def test_psnr_of_a_unit_error_is_48_dB():
    a = _photo(32)
    b = np.where(a < 255, a + 1, a - 1).astype(np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2))
    assert psnr(a, a) == math.inf


def test_single_scale_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    a = _photo()
    b = np.clip(a + np.random.default_rng(0).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    ours = float(_ssim_terms(_nchw(a), _nchw(b), _gaussian_window(11, 3))[0].mean())
    theirs = metrics.structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False, data_range=255)
    assert ours == pytest.approx(theirs, abs=1e-6)


def test_ms_ssim_is_one_for_equal_images_and_falls_with_noise():
    a = _photo()
    rng = np.random.default_rng(0)
    noisy = [np.clip(a + rng.normal(0, s, a.shape), 0, 255).astype(np.uint8) for s in (5, 20, 60)]
    scores = [ms_ssim(a, b) for b in noisy]
    assert ms_ssim(a, a) == pytest.approx(1.0)
    assert 1 > scores[0] > scores[1] > scores[2] > 0


def test_si_snr_ignores_scale_and_measures_noise():
    rng = np.random.default_rng(0)
    s = rng.normal(size=16000)
    noise = rng.normal(size=16000) * 0.1
    assert si_snr(s, 3 * (s + noise)) == pytest.approx(si_snr(s, s + noise))
    assert si_snr(s, s + noise) == pytest.approx(20.0, abs=0.3)


def test_rd_cli_writes_compressai_json_csv_and_png(checkpoints, tmp_path):
    out = tmp_path / "rd"
    result = runner.invoke(app, ["eval", "rd", str(checkpoints["image-rvq-f8"]), str(IMAGE),
                                 "--baselines", "jpeg,webp", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {p.stem for p in out.glob("*.json")}
    assert {"jpeg", "webp"} < names and any(n.startswith("vqtok-image-rvq-f8") for n in names)
    model_curve = json.loads(next(out.glob("vqtok-*.json")).read_text())
    results = model_curve["results"]
    assert {"bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time"} <= set(results)
    assert len(results["bpp"]) == 4 and results["bpp"] == sorted(
        results["bpp"]
    )  # one point per level count
    with open(out / "rd.csv") as handle:
        rows = list(csv.DictReader(handle))
    jpeg_rows = [r for r in rows if r["method"] == "jpeg"]
    assert len(jpeg_rows) == len(baselines.SWEEPS["jpeg"])
    pixels = baselines.decode_image(IMAGE.read_bytes())
    expected_bytes = len(baselines.encode_image(pixels, "jpeg", int(jpeg_rows[0]["setting"])))
    assert float(jpeg_rows[0]["bpp"]) == pytest.approx(
        8 * expected_bytes / (pixels.shape[0] * pixels.shape[1])
    )
    with Image.open(out / "rd-psnr-rgb.png") as plot:
        assert plot.size[0] > 100 and len(plot.getcolors(1 << 16)) > 3


def test_rd_audio_against_opus(checkpoints, tmp_path):
    curves = evaluate_rd([checkpoints["audio-vq-16k"]], [DATA / "audio" / "weather.flac"], tmp_path,
                         RDConfig(["opus"], {"opus": [12, 24]}))
    opus = next(c for c in curves if c["name"] == "opus")["results"]
    assert opus["kbps"][0] < opus["kbps"][1] and opus["si-snr"][0] < opus["si-snr"][1]
    assert (tmp_path / "rd-si-snr.png").is_file()


def test_mixed_modalities_exit_2(checkpoints, tmp_path):
    result = runner.invoke(app, ["eval", "rd", str(checkpoints["image-vq-f8"]), str(IMAGE),
                                 "--baselines", "opus", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "one modality" in result.output


def test_rd_cli_sweep_sets_the_codec_settings(checkpoints, tmp_path):
    args = ["eval", "rd", str(checkpoints["image-vq-f8"]), str(IMAGE), "--baselines", "jpeg"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "rd"), "--sweep", "jpeg=1,5"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "rd" / "rd.csv") as handle:
        settings = [r["setting"] for r in csv.DictReader(handle) if r["method"] == "jpeg"]
    assert settings == ["1", "5"]
    for bad in ("jpeg=low", "jpeg=", "webp=10"):
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--sweep", bad])
        assert result.exit_code == 2 and "--sweep" in result.output, (bad, result.output)
