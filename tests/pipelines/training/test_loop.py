"""The trainer on real shards: outputs, checkpoints, exact resume, NaN and Ctrl-C handling."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
from helpers.training import DATA, thumbnail_shards, tiny_config
from safetensors.torch import load_file
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.pipelines import make_shards
from vqtok.pipelines.training import TrainingDiverged, TrainingInterrupted, train


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return thumbnail_shards(tmp_path_factory.mktemp("train-images"))


def _metrics(out, split):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["split"] == split]


def test_run_writes_models_metrics_pictures_and_prunes_checkpoints(shards, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(shards, out, val=[str(shards)], steps=8, checkpoint_every=2, keep_last=2,
                         ema_decay=0.5, lr=3e-3)
    summary = train(config, progress=False)
    assert summary.steps == 8
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000006",
        "step-00000008",
    ]
    train_log, val_log = _metrics(out, "train"), _metrics(out, "val")
    assert [r["step"] for r in train_log] == list(range(1, 9))
    assert train_log[-1]["loss"] < train_log[0]["loss"]
    assert [r["step"] for r in val_log] == [3, 6, 8]
    for key in ("mse", "psnr", "codebook_usage", "perplexity", "bits_per_token"):
        assert key in val_log[-1]
    assert summary.best == min(r["mse"] for r in val_log)
    assert len(list((out / "pictures").glob("*.png"))) == 3
    final = vqtok.load(out / "final")  # a plain model checkpoint, usable by `vqtok encode`
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert final.encode(x).shape == (1, 4, 4)
    assert vqtok.load(out / "best").config == final.config


def _interrupt_at(step):
    def callback(current, values):
        if current == step:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the trainer finishes the step
    return callback


def test_interrupted_and_resumed_run_ends_bit_identical(shards, tmp_path):
    # Random 24x24 crops of 32x32 images and a shuffle buffer: resuming must replay the data RNG
    # too.
    settings = dict(steps=7, deterministic=True, ema_decay=0.5, crop=[24, 24], val_every=100,
                    checkpoint_every=100)
    reference = train(tiny_config(shards, tmp_path / "a", **settings), progress=False)
    config = tiny_config(shards, tmp_path / "b", **settings)
    with pytest.raises(TrainingInterrupted, match="step 4.*resume"):
        train(config, progress=False, callbacks=[_interrupt_at(4)])
    assert (tmp_path / "b" / "checkpoints" / "step-00000004").is_dir()
    resumed = train(config, resume=True, progress=False)
    assert resumed.steps == reference.steps == 7
    for name in ("final/model.safetensors", "checkpoints/step-00000007/model.safetensors",
                 "checkpoints/step-00000007/optimizer.safetensors"):
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed.loss == reference.loss


def test_nan_loss_stops_with_the_step_and_last_checkpoint(shards, tmp_path):
    def poison(step, values):
        if step == 2:
            with torch.no_grad():
                next(p for p in _model_params(poison.trainer_model)).fill_(float("nan"))

    config = tiny_config(shards, tmp_path / "run", checkpoint_every=2, val_every=100)
    from vqtok.pipelines.training.loop import Trainer
    trainer = Trainer(config, progress=False)
    poison.trainer_model = trainer.model
    with pytest.raises(TrainingDiverged, match=r"step 3.*step-00000002"):
        trainer.run([poison])
    trainer.close()


def _model_params(model):
    return model.decoder.parameters()


def test_cli_nan_exits_1_and_ctrl_c_exits_130(shards, tmp_path):
    runner = CliRunner()
    config = tiny_config(shards, tmp_path / "run", val_every=100).save(tmp_path / "c.toml")
    result = runner.invoke(app, ["train", str(config), "--set", "lr=1e30", "--set", "grad_clip=0",
                                 "--set", "steps=40", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "loss is nan" in result.output or "loss is inf" in result.output
    shutil.rmtree(tmp_path / "run")
    from vqtok.pipelines.training import loop
    original = loop.Trainer._step

    def step_then_interrupt(self, x):
        values = original(self, x)
        if self.state.step == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return values

    loop.Trainer._step = step_then_interrupt
    try:
        result = runner.invoke(app, ["train", str(config), "--no-progress"])
    finally:
        loop.Trainer._step = original
    assert result.exit_code == 130, result.output
    assert (tmp_path / "run" / "checkpoints" / "step-00000002").is_dir()


@pytest.mark.parametrize("modality", ["audio", "video"])
def test_audio_and_video_train_and_validate(modality, tmp_path):
    if modality == "audio":
        src = DATA / "audio"
        make_shards(src, tmp_path / "shards", "audio", maxcount=3)
        model, options, crop = (
            "audio-vq-16k",
            {"widths": [4, 4, 8, 8, 8], "blocks_per_stage": 1},
            [3200],
        )
    else:
        make_shards(DATA / "video", tmp_path / "shards", "video", maxcount=1)
        model, options, crop = "video-vq-t4s8", {"widths": [4, 8, 8, 8]}, [5, 32, 32]
    options["quantizer_options"] = {"codebook_size": 32}
    config = tiny_config(
        tmp_path / "shards",
        tmp_path / "run",
        model=model,
        model_options=options,
        crop=crop,
        val=[str(tmp_path / "shards")],
        steps=2,
        val_every=2,
        val_batches=2,
    )
    summary = train(config, progress=False)
    assert summary.steps == 2
    terms = _metrics(tmp_path / "run", "train")[-1]
    if modality == "audio":
        assert terms["stft"] > 0 and terms["mel"] > 0
        assert summary.validation["mel_distance"] > 0
    else:
        assert "stft" not in terms
    assert (tmp_path / "run" / "pictures" / "step-00000002.png").is_file()
    assert vqtok.load(tmp_path / "run" / "final").config.modality == modality


def test_bad_sample_is_skipped_counted_and_logged(shards, tmp_path):
    from helpers.media import write_tar

    bad = write_tar(
        tmp_path / "bad.tar",
        [("broken.png", b"not a png"), ("good.png", (DATA / "images" / "camera.png").read_bytes())],
    )
    config = tiny_config(shards, tmp_path / "run", train=[str(shards), str(bad)], steps=3,
                         val_every=100)
    summary = train(config, progress=False)
    logged = [
        json.loads(line) for line in (tmp_path / "run" / "errors.jsonl").read_text().splitlines()
    ]
    assert summary.samples_skipped == len(logged) >= 1
    assert logged[0]["key"] == "broken" and logged[0]["stage"] == "decode"
