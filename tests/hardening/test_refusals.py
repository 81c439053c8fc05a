"""Jobs that cannot succeed are refused before they write anything.

Each case runs the command as a user would (through the CLI), with an ordinary mistake,
and checks exit 2, a message naming the condition, and the output folder left byte for
byte as it was (hashed before and after).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers.media import save_small_model
from helpers.training import thumbnail_shards, tiny_config
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines.folder_lock import FolderLock
from vqtok.pipelines.training import train

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def folder_hash(folder: Path) -> str | None:
    """Names and bytes of every file under `folder` (None when it does not exist)."""
    if not folder.exists():
        return None
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    # Two image checkpoints that differ only in their weights: another model, same shape.
    torch.manual_seed(0)
    first = save_small_model("image-vq-f8", root / "first")
    torch.manual_seed(1)
    second = save_small_model("image-vq-f8", root / "second")
    return {"first": first, "second": second,
            "audio": save_small_model("audio-vq-16k", root / "audio")}


@pytest.fixture(scope="module")
def encoded(models, image_shards, tmp_path_factory) -> Path:
    codes = tmp_path_factory.mktemp("encoded") / "codes"
    result = invoke("encode", models["first"], image_shards, codes, "--workers", "0",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    return codes


def refused(args: list, folder: Path) -> str:
    """Run `args`, assert exit 2 with `folder` unchanged; return the message."""
    before = folder_hash(folder)
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert folder_hash(folder) == before
    return result.output.strip().splitlines()[-1]


@pytest.mark.reliability(
    input="encode --resume into a folder of another model's codes",
    fault="wrong checkpoint for the folder",
    expected="exit 2 naming both model ids, folder unchanged",
)
def test_encode_resume_into_another_models_folder(models, image_shards, encoded, observed):
    message = refused(["encode", models["second"], image_shards, encoded, "--resume",
                       "--workers", "0", "--no-progress"], encoded)
    assert "holds the output of model" in message
    observed(message)


@pytest.mark.reliability(
    input="encode --resume with other media options",
    fault="--frame-size changed between runs",
    expected="exit 2 naming the changed option, folder unchanged",
)
def test_encode_resume_with_other_options(models, image_shards, encoded, observed):
    message = refused(["encode", models["first"], image_shards, encoded, "--resume",
                       "--frame-size", "16x16", "--workers", "0", "--no-progress"], encoded)
    assert "media.frame_size" in message
    observed(message)


def test_encode_resume_may_change_speed_options(models, image_shards, encoded):
    result = invoke("encode", models["first"], image_shards, encoded, "--resume",
                    "--batch-size", "3", "--workers", "0", "--no-progress",
                    "--on-error", "skip")
    assert result.exit_code == 0, result.output


@pytest.mark.reliability(
    input="decode --resume into a folder decoded by another model",
    fault="wrong checkpoint for the folder",
    expected="exit 2, folder unchanged",
)
def test_decode_resume_into_another_models_folder(models, encoded, tmp_path, observed):
    media = tmp_path / "media"
    assert invoke("decode", models["first"], encoded, media, "--no-progress").exit_code == 0
    # The codes' own folder says which model made them: refused before the resume check.
    message = refused(["decode", models["second"], encoded, media, "--resume",
                       "--no-progress"], media)
    assert "not of this checkpoint" in message
    observed(message)


@pytest.mark.reliability(
    input="audio checkpoint on image shards, --on-error skip",
    fault="modality mismatch (shards.json says image)",
    expected="exit 2 before any work, nothing written",
)
def test_checkpoint_of_another_modality(models, image_shards, tmp_path, observed):
    codes = tmp_path / "codes"
    message = refused(["encode", models["audio"], image_shards, codes, "--on-error", "skip",
                       "--no-progress"], codes)
    assert not codes.exists()
    assert "image shards" in message and "audio" in message
    observed(message)


@pytest.mark.reliability(
    input="media shards given to decode and export-tokens",
    fault="media shard where code shards belong, with and without shards.json",
    expected="exit 2 saying the shards hold media, nothing written",
)
def test_media_shards_given_to_decode(models, image_shards, tmp_path, observed):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(next(image_shards.glob("*.tar")), bare)  # no shards.json beside it
    messages = []
    for shards in (image_shards, bare):
        out = tmp_path / f"out-{shards.name}"
        messages.append(refused(["decode", models["first"], shards, out, "--no-progress"], out))
        assert not out.exists()
        tokens = tmp_path / "tok"
        messages.append(refused(["export-tokens", shards, tokens], tmp_path / "none"))
        assert not tokens.with_suffix(".bin").exists()
    assert all("media" in m for m in messages)
    observed(" | ".join(messages[::2]))


@pytest.mark.reliability(
    input="code shards given to encode and fit-prior",
    fault="code shard where media shards belong",
    expected="exit 2, nothing written",
)
def test_code_shards_given_to_encode(models, encoded, tmp_path, observed):
    out = tmp_path / "again"
    message = refused(["encode", models["first"], encoded, out, "--no-progress"], out)
    before = folder_hash(models["first"])
    assert invoke("fit-prior", models["first"], encoded).exit_code == 2
    assert folder_hash(models["first"]) == before
    assert "code shards" in message
    observed(message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.reliability(
    input="--device cuda on a machine without a GPU",
    fault="device not present",
    expected="exit 2 naming the missing device, not 'internal error'",
)
def test_missing_gpu_is_a_usage_error(models, image_shards, tmp_path, observed):
    out = tmp_path / "codes"
    message = refused(["encode", models["first"], image_shards, out, "--device", "cuda",
                       "--no-progress"], out)
    assert "no CUDA GPU" in message and not out.exists()
    observed(message)


@pytest.mark.reliability(
    input="an output path that is an existing file",
    fault="OUT_DIR is a file (encode, decode)",
    expected="exit 2 naming the path, file unchanged",
)
def test_output_path_that_is_a_file(models, image_shards, encoded, tmp_path, observed):
    target = tmp_path / "a-file"
    target.write_text("keep me")
    messages = [
        refused(["encode", models["first"], image_shards, target, "--no-progress"], tmp_path),
        refused(["decode", models["first"], encoded, target, "--no-progress"], tmp_path),
    ]
    assert target.read_text() == "keep me"
    assert all("existing file" in m for m in messages)
    observed(messages[0])


@pytest.mark.reliability(
    input="two encode jobs started on one output folder",
    fault="second job while the first holds the folder",
    expected="second exits 2 naming the first (pid, host), first unharmed",
)
def test_second_job_on_a_busy_folder(models, image_shards, tmp_path, observed):
    out = tmp_path / "codes"
    with FolderLock(out, "encode"):  # the first job, as far as the folder can tell
        message = refused(["encode", models["first"], image_shards, out, "--no-progress"], out)
    assert "in use by another job" in message and "vqtok encode" in message
    observed(message)


@pytest.mark.reliability(
    input="--resume after a killed job left its lock file",
    fault="stale lock file, no live holder",
    expected="resume proceeds (the kernel dropped the lock with the process)",
)
def test_stale_lock_does_not_block_resume(models, image_shards, tmp_path, observed):
    out = tmp_path / "codes"
    out.mkdir()
    (out / ".vqtok.lock").write_text(json.dumps({"job": "encode", "pid": 999999}))
    result = invoke("encode", models["first"], image_shards, out, "--resume", "--workers", "0",
                    "--no-progress")
    assert result.exit_code == 0, result.output
    observed(f"exit 0, {len(list(out.glob('*.tar')))} shards written")


@pytest.mark.reliability(
    input="export-tokens to a prefix that holds an earlier export",
    fault="outputs would overwrite each other",
    expected="exit 2 unless --overwrite",
)
def test_export_tokens_does_not_overwrite(encoded, tmp_path, observed):
    prefix = tmp_path / "tok"
    assert invoke("export-tokens", encoded, prefix).exit_code == 0
    message = refused(["export-tokens", encoded, prefix, "--eos"], tmp_path)
    result = invoke("export-tokens", encoded, prefix, "--eos", "--overwrite")
    assert result.exit_code == 0, result.output
    assert json.loads(prefix.with_suffix(".json").read_text())["eos_id"] is not None
    observed(message)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("run")
    shards = thumbnail_shards(root)
    config = tiny_config(shards, root / "run")
    train(config, progress=False)
    return config.save(root / "run.toml"), root / "run"


@pytest.mark.reliability(
    input="train --resume of an image run with another model",
    fault="--model audio-vq-16k on the run folder of image-vq-f8",
    expected="exit 2 naming both models, run folder byte-identical (config.toml kept)",
)
def test_train_resume_with_another_model(trained_run, audio_shards, observed):
    config, run = trained_run
    message = refused(["train", config, "--model", "audio-vq-16k", "--train", audio_shards,
                       "--set", "model_options={}", "--set", "crop=[16000]", "--resume",
                       "--no-progress"], run)
    assert "image-vq-f8" in message and "audio-vq-16k" in message
    # The run still resumes as it was.
    result = invoke("train", config, "--resume", "--steps", "7", "--no-progress")
    assert result.exit_code == 0, result.output
    observed(message)


@pytest.mark.reliability(
    input="a second train on a run folder in use",
    fault="two trainings writing one run folder",
    expected="exit 2 naming the first job, folder unchanged",
)
def test_train_on_a_busy_run_folder(trained_run, observed):
    config, run = trained_run
    with FolderLock(run, "train"):
        message = refused(["train", config, "--resume", "--steps", "9", "--no-progress"], run)
    assert "in use by another job" in message
    observed(message)
