"""Test set-up and the fixtures that several test folders share.

Triton reads TRITON_INTERPRET when it is first imported, so it is set here, before any test
module imports vqtok.kernels: the Triton kernels then run on the CPU.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers.media import DATA, SMALL, save_small_model, write_images  # noqa: E402

# The RELIABILITY.md report: the `reliability` marker, the `observed` fixture and
# --reliability-report.
from helpers.reliability import (  # noqa: E402, F401
    observed,
    pytest_addoption,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
)

from vqtok.pipelines import make_shards  # noqa: E402

# Module scope: each test module gets its own shards and checkpoints, so that a test that
# writes into a checkpoint (fit-prior does) cannot change what another module reads.


@pytest.fixture(scope="module")
def image_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("image")
    write_images(root / "src")
    make_shards(root / "src", root / "shards", "image", maxcount=2)
    return root / "shards"


@pytest.fixture(scope="module")
def audio_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    src = root / "src"
    src.mkdir()
    for name in ("hello.wav", "hello.flac", "weather.ogg"):
        shutil.copy(DATA / "audio" / name, src / name)
    make_shards(src, root / "shards", "audio", maxcount=2)
    return root / "shards"


@pytest.fixture(scope="module")
def video_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("video")
    make_shards(DATA / "video", root / "shards", "video", maxcount=1)
    return root / "shards"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {preset: save_small_model(preset, root / preset) for preset in SMALL}
