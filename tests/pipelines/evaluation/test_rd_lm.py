"""`eval rd --lm`: a token LM adds its checkpoint's LM-coded point, from real files."""

from __future__ import annotations

import json

from helpers.lm import photos, tiny_lm, tiny_tokenizer
from typer.testing import CliRunner

import vqtok
import vqtok.lm
from vqtok.cli.app import app
from vqtok.pipelines.compression.vqt import CompressConfig, compress_bytes

runner = CliRunner()


def test_lm_point_has_the_lm_files_rate_and_the_tokenizers_quality(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    vqtok.lm.save_lm(tiny_lm(tokenizer), tmp_path / "lm")
    images = photos(tmp_path / "photos")[:2]
    out = tmp_path / "rd"
    result = runner.invoke(app, ["eval", "rd", str(tmp_path / "tokenizer"), *map(str, images),
                                 "--lm", str(tmp_path / "lm"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    curves = {p.stem: json.loads(p.read_text()) for p in out.glob("vqtok-*.json")}
    lm_name = next(name for name in curves if "+lm-" in name)
    plain = curves[lm_name.split("+lm-")[0]]["results"]
    coded = curves[lm_name]["results"]
    assert len(coded["bpp"]) == 1 and curves[lm_name]["settings"] == ["1 level, LM coder"]
    # Same codes, so the same reconstruction; only the bytes differ.
    assert coded["psnr-rgb"] == plain["psnr-rgb"]
    lm = vqtok.lm.load_lm(tmp_path / "lm")
    sizes = [len(compress_bytes(tokenizer, path.read_bytes(), CompressConfig(coder="lm"),
                                lm=lm)[0]) for path in images]
    pixels = 32 * 32
    assert coded["bpp"][0] == sum(8 * size / pixels for size in sizes) / len(sizes)


def test_an_lm_of_another_tokenizer_is_exit_2(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    vqtok.lm.save_lm(tiny_lm(tokenizer, tokenizer_id="0" * 64), tmp_path / "lm")
    images = photos(tmp_path / "photos")[:1]
    result = runner.invoke(app, ["eval", "rd", str(tmp_path / "tokenizer"), str(images[0]),
                                 "--lm", str(tmp_path / "lm"), "--out", str(tmp_path / "rd")])
    assert result.exit_code == 2
    assert "models the codes of tokenizer 00000000" in result.output
    assert "Traceback" not in result.output
