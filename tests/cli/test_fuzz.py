"""A CLI fuzzer: every data command, driven with generated option values on tiny data.

Each example runs one command with valid positional arguments and one or two of its options
set to a drawn value (zero, negative, NaN, huge, the wrong type, empty, odd paths). The
command must either succeed (exit 0) or refuse (exit 2, a message, and nothing written);
never a traceback, an "internal error", exit 1 for bad input, or a run past the time bound.
The fast suite draws a few examples per command; `-m slow` runs the long mode.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
import typer.main
from helpers.hardening import time_limit
from helpers.media import save_small_model, write_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines import compress_file, encode_shards, make_shards
from vqtok.pipelines.jobs.encode import EncodeConfig

runner = CliRunner()
VALUES = [
    "0", "-1", "-3", "1", "2", "1.5", "nan", "inf", "-inf", "1e308", "-1e308",
    "99999999999999999999", "", " ", "abc", "1x0", "0x0", "16x16", "-8x8", "x",
    "/dev/null", "../escape", "a" * 300, "sub/dir", "[1, 2]", "{}", "true",
]
SECONDS = 60  # far above what any of these commands takes on the tiny data
NAMES = itertools.count()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz")
    write_images(root / "src")
    make_shards(root / "src", root / "shards", "image", maxcount=3)
    checkpoint = save_small_model("image-vq-f8", root / "model")
    encode_shards(checkpoint, str(root / "shards"), root / "codes",
                  EncodeConfig(workers=0, progress=False))
    photo = next((root / "src").glob("*.png"))
    compress_file(checkpoint, photo, root / "photo.vqt")
    return {"root": root, "src": root / "src", "shards": root / "shards",
            "checkpoint": checkpoint, "codes": root / "codes", "photo": photo,
            "vqt": root / "photo.vqt"}


# command -> (positional arguments and fixed options, given the data and a fresh output path)
BASES: dict[str, Callable[[dict[str, Path], Path], list]] = {
    "shards make": lambda d, out: [d["src"], out, "--modality", "image"],
    "encode": lambda d, out: [d["checkpoint"], d["shards"], out, "--no-progress",
                              "--workers", "0"],
    "decode": lambda d, out: [d["checkpoint"], d["codes"], out, "--no-progress"],
    "export-tokens": lambda d, out: [d["codes"], out / "tok"],
    "compress": lambda d, out: [d["checkpoint"], d["photo"], out / "x.vqt"],
    "decompress": lambda d, out: [d["vqt"], out / "x.png", "--checkpoint", d["checkpoint"]],
    "fit-prior": lambda d, out: [d["checkpoint"], d["shards"], "--output", out, "--workers",
                                 "0"],
    "eval rd": lambda d, out: [d["checkpoint"], d["photo"], "--out", out],
    "train": lambda d, out: ["--model", "image-vq-f8", "--train", d["shards"], "--out", out,
                             "--steps", "2", "--set", "model_options.widths=[8,8,8,8]",
                             "--set", "crop=[32,32]", "--set", "tensorboard=false",
                             "--no-progress"],
}
# Options whose valid values only make a tiny job long (not a fault), or a learning rate
# that diverges (a failed run, exit 1, not bad input): drawn from these instead.
SMALL = ["0", "1", "2", "-1", "-3", "abc", "nan", "inf", "", "1.5"]
BOUNDED = {"--workers": SMALL, "--steps": SMALL, "--batch-size": SMALL,
           "--lr": ["0", "-1", "nan", "inf", "abc", "", "1e-3"]}


def _options(command: str) -> list[str]:
    group = typer.main.get_command(app)
    for part in command.split():
        group = group.commands[part]
    return sorted(
        param.opts[0] for param in group.params
        if param.param_type_name == "option" and not param.is_flag and param.opts[0] != "--help"
    )


def _check(command: str, data: dict[str, Path], chosen: list[tuple[str, str]]) -> None:
    out = data["root"] / f"out-{next(NAMES)}"
    args = [*command.split(), *map(str, BASES[command](data, out))]
    for option, value in chosen:
        args += [option, value]
    # Relative paths among the drawn values (`--output nan`) land in the scratch folder.
    with time_limit(SECONDS), contextlib.chdir(data["root"]):
        result = runner.invoke(app, args)
    shown = f"vqtok {' '.join(args)}\n{result.output}"
    # Exit 1 is a failed job, not bad input: allowed only where a valid limit refused the
    # data under the default error policy, which the message must say.
    failed_sample = result.exit_code == 1 and "--on-error skip" in result.output
    assert result.exit_code in (0, 2) or failed_sample, shown
    assert "Traceback" not in result.output and "internal error" not in result.output, shown
    if result.exit_code == 2:
        assert result.output.strip(), shown
        assert not out.exists(), f"refused but wrote {sorted(out.rglob('*'))}\n{shown}"


def _draws(command: str):
    option = st.sampled_from(_options(command))
    return st.lists(
        option.flatmap(lambda o: st.tuples(st.just(o), st.sampled_from(BOUNDED.get(o, VALUES)))),
        min_size=1, max_size=2, unique_by=lambda pair: pair[0],
    )


def _fuzz(command: str, examples: int):
    @settings(max_examples=examples, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(chosen=_draws(command))
    def run(data, chosen):
        _check(command, data, chosen)

    return run


@pytest.mark.parametrize("command", sorted(BASES))
def test_fuzzed_options(command, data):
    _fuzz(command, examples=6)(data)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(BASES))
def test_fuzzed_options_long(command, data):
    _fuzz(command, examples=150)(data)
