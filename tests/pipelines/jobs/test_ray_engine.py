"""The Ray engine keeps the local engine's contract: same bytes, retries after a dead worker,
resume."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from helpers.media import photo_frames, write_tar
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines import EncodeConfig, PipelineError, encode_shards
from vqtok.pipelines.config import ErrorOptions, RuntimeOptions
from vqtok.pipelines.jobs.ray_engine import RayConfig, RayEngine, ShardWorker, encode_shards_ray

runner = CliRunner()
# Ray workers import this module by name, and it imports the shared helpers under tests/.
HERE_AND_HELPERS = (Path(__file__).parent, Path(__file__).parents[2])
CONFIG = EncodeConfig(
    workers=0,
    progress=False,
    runtime=RuntimeOptions(batch_size=1),
    errors=ErrorOptions(on_error="skip"),
)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module; its workers can import this module (for the workers below)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(map(str, HERE_AND_HELPERS))}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(image_shards, tmp_path_factory):
    """The image shards (2, 2 and 1 photos) and one with a corrupt and a good image."""
    folder = tmp_path_factory.mktemp("ray-in")
    for tar in image_shards.glob("*.tar"):
        shutil.copy(tar, folder / tar.name)
    good = folder / "good.png"
    photo_frames(1)[0].save(good)
    write_tar(
        folder / "mixed.tar",
        [("broken.png", b"\x89PNG not really"), ("fine.png", good.read_bytes())],
    )
    good.unlink()
    return folder


@pytest.fixture(scope="module")
def local_output(shards, checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "codes"
    summary = encode_shards(checkpoints["image-vq-f8"], str(shards), out, CONFIG)
    return out, summary


def _outputs(folder: Path) -> dict[str, bytes | str | dict]:
    """Every output file by name; stats without timing, error logs without object addresses."""
    files: dict[str, bytes | str | dict] = {p.name: p.read_bytes() for p in folder.glob("*.tar")}
    files.update({p.name: _without_addresses(p.read_text()) for p in folder.glob("*.errors.jsonl")})
    for path in folder.glob("*.stats.json"):
        files[path.name] = {k: v for k, v in json.loads(path.read_text()).items() if k != "seconds"}
    return files


def _without_addresses(text: str) -> str:
    """Decoder messages may name Python objects by address, which differs between processes."""
    return re.sub("0x[0-9a-f]+", "0x", text)


def _counts(summary) -> tuple:
    return summary.shards_encoded, summary.samples, summary.skipped, summary.model_id


class CrashOnce(ShardWorker):
    """The first of these workers in a job dies mid-shard (after one batch), like a killed
    process."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        marker = self.outputs.root.parent / "crashed"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
        encode, calls = self.model.encode, []

        def encode_then_die(x):
            calls.append(x)
            if len(calls) == 2:
                os._exit(1)
            return encode(x)

        self.model.encode = encode_then_die


class FailOnMixed(ShardWorker):
    """Fails every attempt at shard `mixed`, as a job interrupted before it would end."""

    def encode(self, url: str, name: str) -> dict:
        if name == "mixed":
            raise RuntimeError("worker lost its disk")
        return super().encode(url, name)


def test_cli_ray_output_equals_local_engine_byte_for_byte(
    ray_cluster, shards, local_output, checkpoints, tmp_path
):
    local, local_summary = local_output
    out = tmp_path / "codes"
    result = runner.invoke(
        app,
        [
            "encode",
            str(checkpoints["image-vq-f8"]),
            str(shards),
            str(out),
            "--engine",
            "ray",
            "--concurrency",
            "2",
            "--batch-size",
            "1",
            "--workers",
            "0",
            "--on-error",
            "skip",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "encode-summary.json").read_text())
    assert json.loads(result.stdout[result.stdout.index("{"):]) == summary
    assert (
        summary["shards_encoded"],
        summary["samples"],
        summary["skipped"],
        summary["model_id"],
    ) == _counts(local_summary)
    assert summary["error_logs"] == [str(out / "mixed.errors.jsonl")]
    assert _outputs(out) == _outputs(local)
    assert json.loads((out / "encode_config.json").read_text()) == json.loads(
        (local / "encode_config.json").read_text()
    )
    assert json.loads((out / "ray_config.json").read_text())["concurrency"] == 2


def test_dead_worker_is_replaced_and_its_shard_redone(
    ray_cluster, shards, local_output, checkpoints, tmp_path
):
    local, local_summary = local_output
    engine = RayEngine(RayConfig(concurrency=2, max_retries=1), worker=CrashOnce)
    summary = encode_shards(
        checkpoints["image-vq-f8"], str(shards), tmp_path / "codes", CONFIG, engine=engine
    )
    assert (tmp_path / "crashed").exists()
    assert _counts(summary) == _counts(local_summary)
    assert _outputs(tmp_path / "codes") == _outputs(local)  # no sample missing or written twice
    assert not list((tmp_path / "codes").glob("*.partial"))


def test_resume_after_interrupted_ray_job_skips_done_shards(
    ray_cluster, shards, local_output, checkpoints, tmp_path
):
    local, _ = local_output
    out, checkpoint = tmp_path / "codes", checkpoints["image-vq-f8"]
    failing = RayEngine(RayConfig(concurrency=1, max_retries=1), worker=FailOnMixed)
    with pytest.raises(
        PipelineError,
        match=r"1 shard\(s\) failed after 2 attempt\(s\): mixed: RuntimeError: worker lost",
    ):
        encode_shards(checkpoint, str(shards), out, CONFIG, engine=failing)
    expected_done = sorted(
        p.name for p in local.glob("*.stats.json") if p.name != "mixed.stats.json"
    )
    assert sorted(p.name for p in out.glob("*.stats.json")) == expected_done
    assert not list(out.glob("mixed*"))
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    resumed = encode_shards_ray(
        checkpoint, str(shards), out, replace(CONFIG, resume=True), RayConfig(concurrency=1)
    )
    assert (resumed.shards_already_done, resumed.shards_encoded) == (3, 1)
    assert {name: (out / name).stat().st_mtime_ns for name in done} == done  # not rewritten
    assert _outputs(out) == _outputs(local)


def test_ray_job_stops_on_a_bad_sample_like_the_local_one(
    ray_cluster, shards, checkpoints, tmp_path
):
    config = replace(CONFIG, errors=ErrorOptions(on_error="raise"))
    with pytest.raises(PipelineError) as local:
        encode_shards(checkpoints["image-vq-f8"], str(shards), tmp_path / "local", config)
    with pytest.raises(PipelineError) as on_ray:
        encode_shards_ray(
            checkpoints["image-vq-f8"],
            str(shards),
            tmp_path / "ray",
            config,
            RayConfig(concurrency=1),
        )
    assert _without_addresses(str(on_ray.value)) == _without_addresses(str(local.value))
    assert not list((tmp_path / "ray").glob("*.partial"))


def test_engine_ray_without_ray_says_what_to_install(shards, checkpoints, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    result = runner.invoke(
        app,
        [
            "encode",
            str(checkpoints["image-vq-f8"]),
            str(shards),
            str(tmp_path / "out"),
            "--engine",
            "ray",
        ],
    )
    assert result.exit_code == 2
    assert "pip install 'vqtok[ray]'" in result.output
    assert not (tmp_path / "out").exists()


def test_ray_flags_need_the_ray_engine(shards, checkpoints, tmp_path):
    result = runner.invoke(
        app,
        [
            "encode",
            str(checkpoints["image-vq-f8"]),
            str(shards),
            str(tmp_path / "out"),
            "--concurrency",
            "4",
        ],
    )
    assert result.exit_code == 2
    assert "only apply with --engine ray" in result.output
