"""TrainConfig: TOML round trip, --set overrides with type checks.

Also the CLI's exit 2 on bad input.
"""

from __future__ import annotations

import pytest
from helpers.training import thumbnail_shards, tiny_config
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines import UsageError
from vqtok.pipelines.config import parse_value
from vqtok.pipelines.training import TrainConfig, recipes

runner = CliRunner()


def test_toml_round_trip(tmp_path):
    config = TrainConfig(model="audio-vq-16k", model_options={"widths": [4, 4, 8, 8, 8],
                         "quantizer_options": {"codebook_size": 32}}, train=["a/{0..3}.tar"],
                         crop=[8000], lr=1e-3, deterministic=True)
    path = config.save(tmp_path / "run.toml")
    assert TrainConfig.from_file(path) == config


def test_overrides_parse_toml_values_and_nested_model_options():
    config = TrainConfig().with_overrides(
        [
            "lr=2e-3",
            "crop=[32, 48]",
            "deterministic=true",
            "model=image-vq-f16",
            "model_options.widths=[8, 8, 8, 8, 8]",
            "model_options.quantizer_options.codebook_size=16",
        ]
    )
    assert config.lr == 2e-3 and config.crop == [32, 48] and config.deterministic is True
    assert config.model == "image-vq-f16"
    assert config.model_options == {
        "widths": [8, 8, 8, 8, 8],
        "quantizer_options": {"codebook_size": 16},
    }
    assert parse_value("hello") == "hello" and parse_value("3") == 3


@pytest.mark.parametrize("assignment, message", [
    ("learning_rate=1e-3", "unknown key"),
    ("steps=ten", "steps must be int"),
    ("steps=2.5", "steps must be int"),
    ("deterministic=1", "deterministic must be bool"),
    ("crop=[32, 'a']", "crop must be"),
    ("lr=-1", "lr must be a positive"),
    ("precision=fp16", "precision must be one of"),
    ("no_equals_sign", "key=value"),
])
def test_bad_overrides_are_refused_with_the_key_named(assignment, message):
    with pytest.raises(UsageError, match=message):
        TrainConfig().with_overrides([assignment])


def test_int_is_accepted_for_a_float_field():
    assert TrainConfig().with_overrides(["lr=1"]).lr == 1


def _run(args):
    result = runner.invoke(app, ["train", *args, "--no-progress"])
    assert "Traceback" not in result.output
    return result


def test_cli_bad_input_exits_2_before_any_work(tmp_path):
    shards = thumbnail_shards(tmp_path / "data")
    good = tiny_config(shards, tmp_path / "run").save(tmp_path / "good.toml")
    (tmp_path / "empty").mkdir()
    empty_tar = tmp_path / "empty.tar"
    empty_tar.write_bytes(b"\0" * 1024)
    (tmp_path / "typo.toml").write_text(good.read_text() + "bach_size = 3\n")
    cases = {
        "missing shard": [str(good), "--train", str(tmp_path / "missing.tar")],
        "empty dataset": [str(good), "--train", str(empty_tar)],
        "no shards in folder": [str(good), "--train", str(tmp_path / "empty")],
        "unknown key in file": [str(tmp_path / "typo.toml")],
        "unknown --set key": [str(good), "--set", "stepz=3"],
        "wrong type": [str(good), "--set", "batch_size=big"],
        "unknown model": [str(good), "--model", "image-vq-f99"],
        "bad model option": [str(good), "--set", "model_options.depth=3"],
        "wrong crop rank": [str(good), "--set", "crop=[32]"],
    }
    for name, args in cases.items():
        result = _run(args)
        assert result.exit_code == 2, (name, result.output)
        assert "error:" in result.output, name
    assert not (tmp_path / "run").exists()  # nothing was started


def test_cli_trains_and_writes_the_resolved_config(tmp_path):
    shards = thumbnail_shards(tmp_path / "data")
    config = tiny_config(shards, tmp_path / "ignored", crop=[]).save(tmp_path / "c.toml")
    out = tmp_path / "run"
    result = _run([str(config), "--out", str(out), "--steps", "2", "--set", "crop=[32, 32]",
                   "--set", "val_every=100"])
    assert result.exit_code == 0, result.output
    resolved = TrainConfig.from_file(out / "config.toml")
    assert resolved.steps == 2 and resolved.crop == [32, 32] and resolved.out == str(out)
    again = _run([str(config), "--out", str(out), "--steps", "2"])
    assert again.exit_code == 2 and "--resume" in again.output


RECIPE = {"warmup_steps": 123, "lr": 5e-4, "adversarial": "msstft+mpd"}


@pytest.fixture
def audio_recipe(monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "audio-vq-16k", RECIPE)


def test_a_presets_recipe_fills_only_what_the_user_left_alone(audio_recipe, tmp_path):
    config = TrainConfig.load(flags={"model": "audio-vq-16k", "lr": None})
    assert (config.warmup_steps, config.lr, config.adversarial) == (123, 5e-4, "msstft+mpd")
    file = tmp_path / "run.toml"
    file.write_text('model = "audio-vq-16k"\nwarmup_steps = 7\n')
    config = TrainConfig.load(file, {"lr": 1e-2}, ["adversarial="])
    assert (config.warmup_steps, config.lr, config.adversarial) == (7, 1e-2, "")
    default = TrainConfig().warmup_steps
    assert TrainConfig.load(flags={"model": "image-vq-f8"}).warmup_steps == default


def test_a_resolved_config_reloads_as_itself(audio_recipe, tmp_path):
    config = TrainConfig.load(flags={"model": "audio-vq-16k"})
    config.save(tmp_path / "config.toml")
    assert TrainConfig.load(tmp_path / "config.toml") == config
