"""A killed encode, resumed, gives exactly the bytes of an uninterrupted one; Ctrl-C cleans up."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from helpers.media import write_images

from vqtok.pipelines import EncodeConfig, encode_shards, make_shards
from vqtok.pipelines.config import RuntimeOptions
from vqtok.pipelines.errors import UsageError


@pytest.fixture
def many_shards(tmp_path):
    for folder in ("a", "b", "c"):
        write_images(tmp_path / "src" / folder)
    make_shards(tmp_path / "src", tmp_path / "shards", "image", maxcount=2)
    return tmp_path / "shards"


def _start_encode(checkpoint, shards, out, *extra):
    command = [
        sys.executable,
        "-m",
        "vqtok.cli.main",
        "encode",
        str(checkpoint),
        str(shards),
        str(out),
        "--workers",
        "0",
        "--batch-size",
        "1",
        "--no-progress",
        *extra,
    ]
    # SIG_DFL in the child, so that Python installs its Ctrl-C handler even when this suite
    # was started in the background with SIGINT ignored (nohup, `&`).
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _signal_after_first_shard(process, out, signum):
    deadline = time.monotonic() + 120
    while not list(out.glob("*.stats.json")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signum)
    return process.wait(timeout=60)


def _tar_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_resume_after_sigkill_equals_uninterrupted_run(many_shards, checkpoints, tmp_path):
    checkpoint = checkpoints["image-vq-f8"]
    killed = tmp_path / "killed"
    process = _start_encode(checkpoint, many_shards, killed)
    assert _signal_after_first_shard(process, killed, signal.SIGKILL) == -signal.SIGKILL
    done = list(killed.glob("*.stats.json"))
    assert 1 <= len(done) < len(list(many_shards.glob("*.tar")))  # really interrupted mid-job
    config = EncodeConfig(workers=0, progress=False, runtime=RuntimeOptions(batch_size=1))
    resumed = encode_shards(checkpoint, str(many_shards), killed, replace(config, resume=True))
    assert resumed.shards_already_done == len(done)
    encode_shards(checkpoint, str(many_shards), tmp_path / "whole", config)
    assert _tar_bytes(killed) == _tar_bytes(tmp_path / "whole")
    assert not list(killed.glob("*.partial"))


def test_ctrl_c_exits_130_and_removes_partial_output(many_shards, checkpoints, tmp_path):
    out = tmp_path / "codes"
    process = _start_encode(checkpoints["image-vq-f8"], many_shards, out)
    assert _signal_after_first_shard(process, out, signal.SIGINT) == 130
    assert "interrupted" in process.stderr.read()
    assert not list(out.glob("*.partial"))


def test_resume_with_options_that_change_the_codes_is_refused(audio_shards, checkpoints, tmp_path):
    """Windows cut from the codes, and an option the earlier job's config lacks (as from an
    older vqtok: then unset), change the output: --resume refuses them before writing."""
    checkpoint, out = checkpoints["audio-vq-16k"], tmp_path / "codes"
    config = EncodeConfig(workers=0, progress=False)
    encode_shards(checkpoint, str(audio_shards), out, config)
    windows = replace(config, resume=True, media=replace(config.media, window_seconds=1.0))
    with pytest.raises(UsageError, match="window_seconds was None, now 1.0"):
        encode_shards(checkpoint, str(audio_shards), out, windows)
    saved = json.loads((out / "encode_config.json").read_text())
    del saved["media"]["max_side"]
    (out / "encode_config.json").write_text(json.dumps(saved))
    smaller = replace(config, resume=True, media=replace(config.media, max_side=64))
    with pytest.raises(UsageError, match="max_side was unset, now 64"):
        encode_shards(checkpoint, str(audio_shards), out, smaller)
    summary = encode_shards(checkpoint, str(audio_shards), out, replace(config, resume=True))
    assert summary.shards_already_done == summary.shards_total
