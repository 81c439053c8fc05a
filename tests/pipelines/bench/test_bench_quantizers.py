"""`bench quantizers`: matched bits, a tiny real comparison per modality, and clear refusals."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from helpers.media import DATA, SMALL, write_images
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines.bench.quantizers import (
    DEFAULT_QUANTIZERS,
    FSQ_BITS,
    VARIANTS,
    QuantizersBenchConfig,
    _matched,
    bench_quantizers,
    split_files,
    table_rows,
)
from vqtok.pipelines.errors import UsageError

runner = CliRunner()


@pytest.mark.parametrize("modality", ["image", "audio"])
@pytest.mark.parametrize("bits", FSQ_BITS)
def test_every_quantizer_gets_the_same_bits_per_position(modality, bits):
    config = QuantizersBenchConfig(modality=modality, bits=bits, quantizers=list(VARIANTS))
    for name in VARIANTS:
        matched = _matched(config, name, seed=0)
        # FSQ's paper levels are the one inexact size: 240 codes for 2^8, 1000 for 2^10...
        slack = 0.1 if matched["quantizer"] == "fsq" else 0.0
        assert abs(matched["bits"] - bits) <= slack + 1e-9, (name, matched)
    assert _matched(config, "rvq", 0)["codebook"] == f"2x{2 ** (bits // 2)}"


def _media_folder(modality: str, folder: Path) -> Path:
    if modality == "image":
        write_images(folder)
    else:
        folder.mkdir(parents=True)
        for name in ("hello.flac", "weather.flac", "weather.ogg"):
            shutil.copy(DATA / "audio" / name, folder / name)
    return folder


CASES = {  # quantizers, crop, held-out files
    "image": (["vq-ema", "rvq", "lfq"], [32, 32], 2),
    "audio": (["vq-cosine", "fsq"], [3200], 1),
}


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_tiny_comparison_reports_sensible_rows_and_writes_json(tmp_path, modality):
    quantizers, crop, holdout = CASES[modality]
    preset = "image-vq-f8" if modality == "image" else "audio-vq-16k"
    config = QuantizersBenchConfig(
        modality=modality, quantizers=quantizers, steps=3, batch_size=2, crop=crop,
        model_options={k: list(v) if isinstance(v, tuple) else v
                       for k, v in SMALL[preset].items()},
        data=[str(_media_folder(modality, tmp_path / "media"))], holdout=holdout,
        out=str(tmp_path / "out"), isolate=False,
    )
    result = bench_quantizers(config)
    metrics = ("psnr", "ms_ssim") if modality == "image" else ("si_snr", "mel_distance")
    assert [run["quantizer"] for run in result["runs"]] == quantizers
    for run in result["runs"]:
        matched = result["matching"][run["quantizer"]]
        size = 2 ** matched["bits"]  # the joint codebook: rvq's levels as one code
        assert abs(run["bits"] - 10) <= 0.05
        assert run["steps"] == 3 and run["samples_skipped"] == 0
        assert 0 < run["usage"] <= 1
        assert 1 <= run["perplexity"] <= size * (1 + 1e-9)
        assert run["perplexity"] <= run["train_positions"]
        for name in (*metrics, "coded_bits", "ideal_bits", "steps_per_s", "final_loss"):
            assert math.isfinite(run[name]), (name, run)
        assert run["heldout_samples"] == holdout
        # The prior mixes in the uniform distribution; written bits stay near log2 K at
        # most, plus the ANS stream's final words (64 bits per sample) over its positions.
        overhead = 64 * run["heldout_samples"] / run["heldout_positions"]
        assert 0 <= run["ideal_bits"] <= run["bits"] + 1.0
        assert run["ideal_bits"] - 1e-6 <= run["coded_bits"] <= run["ideal_bits"] + overhead
        assert run["steps_per_s"] > 0
    if modality == "image":
        assert all(0 <= run["ms_ssim"] <= 1 and run["psnr"] > 0 for run in result["runs"])
    else:
        assert all(run["mel_distance"] >= 0 for run in result["runs"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert saved["config"]["quantizers"] == quantizers
    assert QuantizersBenchConfig.from_file(tmp_path / "out" / "config.json") == config
    shown = table_rows(result["rows"], result["matching"])
    assert [row["quantizer"] for row in shown] == quantizers and "±" not in str(shown)


def test_split_holds_out_evenly_spaced_files_and_keeps_the_rest():
    files = [Path(f"{i}.png") for i in range(8)]
    train, heldout = split_files(files, 2)
    assert heldout == [Path("3.png"), Path("7.png")]
    assert sorted(train + heldout) == sorted(files)
    with pytest.raises(UsageError, match="cannot leave 2 held out"):
        split_files(files[:2], 2)


def test_refuses_a_folder_that_holds_something_else(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        bench_quantizers(QuantizersBenchConfig(out=str(tmp_path), quantizers=["fsq"]))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_cli_refuses_an_unknown_quantizer_with_exit_2(tmp_path):
    result = runner.invoke(app, ["bench", "quantizers", "--quantizers", "vq,vqq",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "unknown quantizer 'vqq'" in result.output
    assert all(name in result.output for name in DEFAULT_QUANTIZERS)
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_cli_refuses_seeds_that_are_not_integers(tmp_path):
    result = runner.invoke(app, ["bench", "quantizers", "--seeds", "0,one",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--seeds takes comma-separated integers" in result.output
