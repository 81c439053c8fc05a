"""Paths: what one command writes another reads back; names say what files hold; no
output overwrites another."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.hardening import png_bytes
from helpers.media import save_small_model, write_tar
from PIL import Image
from typer.testing import CliRunner

from vqtok.cli.app import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return save_small_model("image-vq-f8", tmp_path_factory.mktemp("model") / "f8")


@pytest.mark.reliability(
    input="folders named with pattern characters: shards{1}[2]:x",
    fault="braces, brackets and a colon in paths one command writes and the next reads",
    expected="read back literally through shards make, encode, decode",
)
def test_paths_with_pattern_characters_read_back(model, image_shards, tmp_path, observed):
    shards = tmp_path / "shards{1}[2]:x"
    shutil.copytree(image_shards, shards)
    codes, media = tmp_path / "codes{a,b}[1]", tmp_path / "media[1]"
    result = invoke("encode", model, shards, codes, "--workers", "0", "--no-progress")
    assert result.exit_code == 0, result.output
    result = invoke("decode", model, codes, media, "--format", "files", "--no-progress")
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in media.glob("*.png"))
    assert len(written) == json.loads((image_shards / "shards.json").read_text())["samples"]
    observed(f"{len(written)} PNGs decoded from {codes.name}")


@pytest.mark.reliability(
    input="compress and decompress to names of another format",
    fault="photo.png as the .vqt target; photo.jpg, photo.wav or no extension as the image",
    expected="exit 2 naming the right suffix; nothing written",
)
def test_output_names_say_what_the_bytes_are(model, tmp_path, observed):
    photo = tmp_path / "photo.png"
    photo.write_bytes(png_bytes(40, 24))
    wrong = invoke("compress", model, photo, tmp_path / "out.png")
    assert wrong.exit_code == 2 and not (tmp_path / "out.png").exists(), wrong.output
    assert invoke("compress", model, photo, tmp_path / "photo.vqt").exit_code == 0
    messages = [wrong.output.strip()]
    for name in ("back.jpg", "back.wav", "back"):
        result = invoke("decompress", tmp_path / "photo.vqt", tmp_path / name, "--checkpoint",
                        model)
        assert result.exit_code == 2 and ".png" in result.output, result.output
        assert not (tmp_path / name).exists()
        messages.append(result.output.strip())
    result = invoke("decompress", tmp_path / "photo.vqt", tmp_path / "back.png", "--checkpoint",
                    model)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "back.png").format == "PNG"
    observed(" | ".join(messages[:2]))


@pytest.mark.reliability(
    input="decode --format files of two shards that share a sample key",
    fault="two samples would write one file",
    expected="the second is a counted, logged skip; the first file is kept",
)
def test_decoded_files_never_overwrite_each_other(model, tmp_path, observed):
    src = tmp_path / "shards"
    src.mkdir()
    for name, seed in (("first", 1), ("second", 2)):
        write_tar(src / f"{name}.tar", [("same.png", png_bytes(32, 32, seed=seed))])
    codes, media = tmp_path / "codes", tmp_path / "media"
    assert invoke("encode", model, src, codes, "--workers", "0",
                  "--no-progress").exit_code == 0
    strict = invoke("decode", model, codes, tmp_path / "strict", "--format", "files",
                    "--no-progress")
    assert strict.exit_code == 1 and "already written" in strict.output, strict.output
    result = invoke("decode", model, codes, media, "--format", "files", "--on-error", "skip",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["samples"] == 1 and summary["skipped"] == 1
    logged = json.loads((media / "second.errors.jsonl").read_text())
    assert logged["key"] == "same" and "already written" in logged["message"]
    first = json.loads((media / "first.stats.json").read_text())
    assert first["files"] == ["same.png"]
    # A resume knows the files of done shards: the collision is found again, not missed.
    (media / "second.stats.json").unlink()
    again = invoke("decode", model, codes, media, "--format", "files", "--on-error", "skip",
                   "--resume", "--no-progress")
    assert again.exit_code == 0 and json.loads(again.stdout[again.stdout.index("{"):])[
        "skipped"] == 1, again.output
    observed(logged["message"])
