"""The demo in tiny mode, end to end, so that it cannot rot; and its built-in data."""

from __future__ import annotations

import io
import json
import math
import re

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

import vqtok
from vqtok.pipelines.data.media import EXTENSIONS, MediaConfig, prepare
from vqtok.pipelines.data.tario import read_samples
from vqtok.pipelines.demo import DATA_DIR, DATA_FOLDERS, MARKER, main, run_demo

MODALITIES = ("image", "audio", "video")
MAX_DATA_BYTES = 15 * 2**20


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    console = Console(file=io.StringIO(), width=120)
    report = run_demo(out, tiny=True, device="cpu", console=console)
    return report, console.file.getvalue()


def test_tiny_demo_writes_report_pictures_and_prints_where_to_look(tiny_run):
    report, printed = tiny_run
    out = report.parent
    assert report == out / "report.md" and str(report) in printed.replace("\n", "")
    text = report.read_text()
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text):
        with Image.open(out / name) as picture:  # every linked picture is a real PNG
            assert picture.format == "PNG" and min(picture.size) >= 32
    linked = set(re.findall(r"\]\(([^)]+)\)", text))
    expected = {f"reconstructions-{m}.png" for m in MODALITIES} | {
        "codebook-usage.png",
        "rd/rd-psnr-rgb.png",
    }
    assert expected <= linked
    for modality in MODALITIES:
        row = next(line for line in text.splitlines() if line.startswith(f"| {modality} |"))
        numbers = [float(n) for n in re.findall(r"-?\d+\.\d+", row)]
        assert numbers and all(math.isfinite(n) for n in numbers), row
        assert modality in printed


def test_tiny_demo_models_codes_tokens_and_decoded_files_agree(tiny_run):
    out = tiny_run[0].parent
    for modality in MODALITIES:
        model = vqtok.load(out / "runs" / modality / "final")
        assert model.config.modality == modality
        samples = [
            s
            for shard in sorted((out / "codes" / modality).glob("*.tar"))
            for s in read_samples(str(shard))
        ]
        assert len(samples) == 2 and all(
            json.loads(s.fields["json"])["model_id"] == model.model_id for s in samples
        )
        manifest = json.loads((out / "tokens" / f"{modality}.json").read_text())
        tokens = np.fromfile(out / "tokens" / f"{modality}.bin", dtype=manifest["dtype"])
        assert manifest["num_samples"] == 2 and tokens.size == manifest["num_tokens"] > 0
        assert tokens.max() < manifest["vocab_size"]
        decoded = [p for p in (out / "decoded" / modality).iterdir()
                   if p.suffix[1:] in EXTENSIONS[modality]]
        assert len(decoded) == 2


def test_demo_json_records_each_modalitys_preset_quality_and_codebook_use(tiny_run):
    out = tiny_run[0].parent
    record = json.loads((out / MARKER).read_text())
    assert record["tiny"] is True and set(record["modalities"]) == set(MODALITIES)
    for modality, summary in record["modalities"].items():
        model = vqtok.load(out / "runs" / modality / "final")
        assert summary["preset"] == model.config.preset
        # The exported tokens are the codes (one level in every demo preset) plus BOS/EOS.
        tokens = np.fromfile(out / "tokens" / f"{modality}.bin", dtype=json.loads(
            (out / "tokens" / f"{modality}.json").read_text())["dtype"]).astype(np.int64)
        counts = np.bincount(tokens[tokens < model.codebook_size], minlength=model.codebook_size)
        assert summary["codebook_used"] == pytest.approx((counts > 0).mean(), abs=1e-4)
        assert 1 <= summary["perplexity"] <= (counts > 0).sum() + 1e-6
        headline = "si_snr" if modality == "audio" else "psnr"
        assert math.isfinite(summary["quality"][headline])


def test_tiny_demo_compresses_one_file_of_each_kind_and_restores_it(tiny_run):
    compressed = tiny_run[0].parent / "compressed"
    vqt_files = sorted(compressed.glob("*.vqt"))
    assert len(vqt_files) == 3
    for vqt in vqt_files:
        source = DATA_DIR / next(folder for folder in DATA_FOLDERS.values()
                                 if (DATA_DIR / folder / vqt.stem).is_file()) / vqt.stem
        assert 0 < vqt.stat().st_size < source.stat().st_size
    restored_image = next(compressed.glob("*.restored.png"))
    original = next(compressed.glob("*.png.vqt")).stem
    with Image.open(restored_image) as a, Image.open(DATA_DIR / "images" / original) as b:
        assert a.size == b.size
    restored_video = next(compressed.glob("*.restored.mp4"))
    clip, meta = prepare(restored_video.read_bytes(), MediaConfig("video"))
    assert meta["frames"] > 1 and clip.shape[-2:] == (72, 128)


def test_demo_refuses_a_folder_that_is_not_a_demo_output(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["--out", str(tmp_path), "--tiny"]) == 2
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / MARKER).exists()


def test_built_in_data_is_small_real_media_with_a_license_for_every_file():
    files = [p for p in DATA_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_DATA_BYTES
    readme = (DATA_DIR.parent / "README.md").read_text()
    for modality, folder in DATA_FOLDERS.items():
        media = [
            p for p in files if p.parent.name == folder and p.suffix[1:] in EXTENSIONS[modality]
        ]
        assert len(media) >= 2, modality
        for path in media:
            assert f"`{path.name}`" in readme, (
                f"{path.name} has no source/license line in demo/README.md"
            )
            pieces, _ = prepare(
                path.read_bytes(),
                MediaConfig(modality, channels=1 if modality == "audio" else 3, sample_rate=16000),
            )
            assert (
                pieces.numel() > 0 and pieces.std() > 0.01
            )  # decodes to real, non-constant content
