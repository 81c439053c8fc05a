"""The one config mechanism: every job config loads from TOML/JSON, takes --set overrides,
reports every bad key and value at once, and the CLI's flags hold no defaults of their own."""

from __future__ import annotations

import json

import click
import pytest
import typer.main
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines import UsageError
from vqtok.pipelines.bench.kernels import KernelsBenchConfig
from vqtok.pipelines.bench.pipeline import PipelineBenchConfig
from vqtok.pipelines.bench.quantizer import QuantizerBenchConfig
from vqtok.pipelines.bench.train import TrainBenchConfig
from vqtok.pipelines.bench.video_pipeline import VideoPipelineBenchConfig
from vqtok.pipelines.compression.fit_prior import FitPriorConfig
from vqtok.pipelines.compression.vqt import CompressConfig
from vqtok.pipelines.config import ErrorOptions, MediaOptions, RuntimeOptions
from vqtok.pipelines.evaluation.nll import NLLConfig
from vqtok.pipelines.evaluation.rd import RDConfig
from vqtok.pipelines.jobs.decode import DecodeConfig
from vqtok.pipelines.jobs.encode import EncodeConfig
from vqtok.pipelines.jobs.ray_engine import RayConfig
from vqtok.pipelines.training import TrainConfig

runner = CliRunner()

# One override per job that reaches a nested or a top-level field, and the value it gives.
JOBS = {
    EncodeConfig: ("media.max_image_pixels", 4096),
    DecodeConfig: ("runtime.batch_size", 4),
    CompressConfig: ("coder", "ans-static"),
    FitPriorConfig: ("workers", 0),
    RDConfig: ("baselines", ["jpeg"]),
    NLLConfig: ("samples", 10),
    RayConfig: ("max_retries", 5),
    TrainConfig: ("steps", 5),
    RuntimeOptions: ("device", "cuda"),  # decompress
    KernelsBenchConfig: ("repeats", 2),
    QuantizerBenchConfig: ("k", 16),
    PipelineBenchConfig: ("size", 64),
    TrainBenchConfig: ("presets", ["image-vq-f8"]),
    VideoPipelineBenchConfig: ("height", 360),
}


def get(config, key: str):
    for part in key.split("."):
        config = config[part] if isinstance(config, dict) else getattr(config, part)
    return config


@pytest.mark.parametrize("cls", list(JOBS), ids=lambda c: c.__name__)
def test_every_job_config_round_trips_through_toml_and_json(cls, tmp_path):
    key, value = JOBS[cls]
    config = cls.load(overrides=[f"{key}={json.dumps(value)}"])
    assert get(config, key) == value
    for name in ("job.toml", "job.json"):
        assert cls.from_file(config.save(tmp_path / name)) == config


@pytest.mark.parametrize("cls", list(JOBS), ids=lambda c: c.__name__)
def test_every_job_config_refuses_unknown_keys_from_a_file(cls, tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("no_such_key = 1\n")
    with pytest.raises(UsageError, match="unknown key no_such_key"):
        cls.from_file(path)


@pytest.mark.parametrize("cls", list(JOBS), ids=lambda c: c.__name__)
def test_file_then_flags_then_set(cls, tmp_path):
    key, value = JOBS[cls]
    path = tmp_path / "job.toml"
    path.write_text(f"# {cls.__name__}\n")
    flagged = cls.load(path, flags={key: value})
    assert get(flagged, key) == value
    default = get(cls(), key)
    assert (
        get(cls.load(path, flags={key: value}, overrides=[f"{key}={json.dumps(default)}"]), key)
        == default
    )


def test_nested_tables_in_a_file_keep_the_other_defaults(tmp_path):
    path = tmp_path / "encode.toml"
    path.write_text("workers = 0\n[media]\nframe_size = [32, 48]\n[errors]\non_error = \"skip\"\n")
    config = EncodeConfig.from_file(path)
    assert config.media == MediaOptions(frame_size=(32, 48))
    assert config.errors == ErrorOptions(on_error="skip") and config.runtime == RuntimeOptions()


def test_every_problem_is_reported_at_once():
    overrides = [
        "runtime.batch_size=0",
        "errors.max_error_rate=2",
        "media.window_seconds=-1",
        "workers=-1",
    ]
    with pytest.raises(UsageError) as caught:
        EncodeConfig.load(overrides=overrides)
    message = str(caught.value)
    assert message.startswith("4 problems")
    for key in ("runtime.batch_size", "errors.max_error_rate", "media.window_seconds", "workers"):
        assert f"  - {key}" in message


@pytest.mark.parametrize(("override", "message"), [
    ("runtime.batchsize=4", "unknown key runtime.batchsize"),
    ("runtime=4", "runtime must be a table"),
    ("errors.on_error=ignore", "errors.on_error must be one of 'raise', 'skip'"),
    ("media.frame_size=[32]", "media.frame_size must be"),
    ("media.window_seconds=nan", "window_seconds must be a positive number"),
    ("resume=1", "resume must be bool"),
    ("workers.x=1", "workers is not a table"),
    ("workers", "key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(UsageError, match=message):
        EncodeConfig.load(overrides=[override])


def test_constructing_a_bad_config_in_python_fails_too():
    with pytest.raises(UsageError, match="batch_size must be at least 1"):
        DecodeConfig(runtime=RuntimeOptions(batch_size=0))
    with pytest.raises(UsageError, match="coder must be one of"):
        CompressConfig(coder="zip")


# Every job command of the CLI, with the arguments it needs before its options.
COMMANDS = {
    "encode": ["ckpt", "shards", "out"],
    "decode": ["ckpt", "codes", "out"],
    "compress": ["ckpt", "in.png", "out.vqt"],
    "decompress": ["in.vqt", "out.png"],
    "fit-prior": ["ckpt", "shards"],
    "eval rd": ["ckpt"],
    "eval nll": ["ckpt", "shards"],
    "train": [],
    "bench kernels": [],
    "bench quantizer": [],
    "bench pipeline": [],
    "bench train": [],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_job_command_takes_a_config_file_and_refuses_unknown_keys(command, tmp_path):
    config = tmp_path / "job.toml"
    config.write_text("no_such_key = 1\n")
    where = [str(config)] if command == "train" else ["--config", str(config)]
    result = runner.invoke(app, [*command.split(), *COMMANDS[command], *where])
    assert result.exit_code == 2 and "unknown key no_such_key" in result.output
    result = runner.invoke(app, [*command.split(), *COMMANDS[command], "--set", "no_such_key=1"])
    assert result.exit_code == 2 and "unknown key no_such_key" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job.toml"]


def _options(command: str) -> list[click.Option]:
    group = typer.main.get_command(app)
    for part in command.split():
        group = group.commands[part]
    return [p for p in group.params if isinstance(p, click.Option)]


# Options that are no config field: where outputs go, and the choice of engine.
NOT_CONFIG = {
    "set_",
    "config",
    "engine",
    "out",
    "json_out",
    "json_path",
    "pictures",
    "output",
    "checkpoint",
    "sweep",
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_no_cli_option_repeats_a_dataclass_default(command):
    repeated = [p.name for p in _options(command)
                if p.name not in NOT_CONFIG and p.default not in (None, False, [], ())]
    assert not repeated, f"{command}: these options hold defaults of their own: {repeated}"
