"""The data commands through the CLI: outputs, JSON summaries and exit codes."""

from __future__ import annotations

import json

from helpers.media import write_images
from typer.testing import CliRunner

from vqtok.cli.app import app

runner = CliRunner()


def _json_tail(output: str) -> dict:
    return json.loads(output[output.index("{"):])


def test_full_cli_chain(audio_shards, checkpoints, tmp_path):
    checkpoint = str(checkpoints["audio-vq-16k"])
    codes, media = tmp_path / "codes", tmp_path / "media"
    result = runner.invoke(
        app,
        [
            "encode",
            checkpoint,
            str(audio_shards),
            str(codes),
            "--workers",
            "0",
            "--window-seconds",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert _json_tail(result.stdout)["samples"] == 3
    result = runner.invoke(app, ["decode", checkpoint, str(codes), str(media), "--format", "files",
                                 "--audio-format", "flac", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert len(list(media.glob("*.flac"))) == 3
    result = runner.invoke(app, ["export-tokens", str(codes), str(tmp_path / "tok"), "--eos"])
    assert result.exit_code == 0, result.output
    assert _json_tail(result.stdout)["eos_id"] == 1024


def test_shards_make_prints_summary(tmp_path):
    write_images(tmp_path / "src")
    result = runner.invoke(app, ["shards", "make", str(tmp_path / "src"), str(tmp_path / "out"),
                                 "--modality", "image", "--maxcount", "3"])
    assert result.exit_code == 0, result.output
    assert _json_tail(result.stdout)["counts"] == [3, 2]


def test_usage_errors_exit_2_without_traceback(audio_shards, checkpoints, tmp_path):
    cases = [
        ["shards", "make", str(tmp_path / "nowhere"), str(tmp_path / "out"), "--modality", "image"],
        ["encode", str(tmp_path / "no-checkpoint"), str(audio_shards), str(tmp_path / "codes")],
        [
            "encode",
            str(checkpoints["image-vq-f8"]),
            str(tmp_path / "missing.tar"),
            str(tmp_path / "codes"),
        ],
        ["export-tokens", str(tmp_path / "missing-{0..1}.tar"), str(tmp_path / "tok")],
        ["shards", "make", str(tmp_path), str(tmp_path / "out"), "--modality", "smell"],
    ]
    for args in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
    result = runner.invoke(app, cases[1])
    assert "error:" in result.output and "checkpoint" in result.output


def test_failure_exits_1(checkpoints, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.tar").write_bytes(b"\0" * 10)  # not a tar at all
    result = runner.invoke(app, ["encode", str(checkpoints["image-vq-f8"]), str(tmp_path / "bad"),
                                 str(tmp_path / "codes"), "--workers", "0", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "unreadable tar" in result.output and "Traceback" not in result.output


def test_config_file_with_flag_overrides_is_saved(audio_shards, checkpoints, tmp_path):
    config = tmp_path / "encode.toml"
    config.write_text(
        '[media]\nwindow_seconds = 1.5\n[runtime]\nbatch_size = 3\n[errors]\non_error = "skip"\n'
    )
    result = runner.invoke(
        app,
        [
            "encode",
            str(checkpoints["audio-vq-16k"]),
            str(audio_shards),
            str(tmp_path / "codes"),
            "--config",
            str(config),
            "--batch-size",
            "5",
            "--workers",
            "0",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "codes" / "encode_config.json").read_text())
    assert (saved["media"]["window_seconds"], saved["runtime"]["batch_size"]) == (1.5, 5)
    assert saved["errors"]["on_error"] == "skip"
    config.write_text("batch_sise = 3\n")
    result = runner.invoke(
        app,
        [
            "encode",
            str(checkpoints["audio-vq-16k"]),
            str(audio_shards),
            str(tmp_path / "c2"),
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 2 and "batch_sise" in result.output


def test_image_pixel_limit_flag_skips_larger_images(checkpoints, tmp_path):
    write_images(tmp_path / "src")
    runner.invoke(
        app,
        ["shards", "make", str(tmp_path / "src"), str(tmp_path / "shards"), "--modality", "image"],
    )
    result = runner.invoke(
        app,
        [
            "encode",
            str(checkpoints["image-vq-f8"]),
            str(tmp_path / "shards"),
            str(tmp_path / "codes"),
            "--workers",
            "0",
            "--on-error",
            "skip",
            "--max-image-pixels",
            str(40 * 56),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = _json_tail(result.stdout)
    assert summary["samples"] == 2 and summary["skipped"] == 3  # only the two 40 x 56 crops fit


def test_a_vae_checkpoint_is_refused_by_the_code_jobs(tmp_path):
    import vqtok

    checkpoint = vqtok.save(vqtok.create_model("image-vae-mlp"), tmp_path / "vae")
    write_images(tmp_path / "src")
    runner.invoke(
        app,
        ["shards", "make", str(tmp_path / "src"), str(tmp_path / "shards"), "--modality", "image"],
    )
    result = runner.invoke(
        app, ["encode", str(checkpoint), str(tmp_path / "shards"), str(tmp_path / "codes")]
    )
    assert result.exit_code == 2
    assert "needs a tokenizer checkpoint" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "codes").exists()
