"""Killed jobs: an encode or a training run killed at random points, then resumed.

The job runs in a forked child (no interpreter start-up per trial) whose file-writing calls
are wrapped: the child signals itself just before or just after the n-th such call, with n
drawn at random over every call an uninterrupted run makes. A resumed job must then give
exactly the uninterrupted job's outputs.
"""

from __future__ import annotations

import multiprocessing
import os
import pathlib
import random
import signal
import tarfile
from dataclasses import replace

import pytest
import torch
import typer
from helpers.hardening import png_bytes
from helpers.media import save_small_model, write_tar
from helpers.training import thumbnail_shards, tiny_config
from safetensors.torch import load_file

from vqtok.cli.data import run_job
from vqtok.pipelines import EncodeConfig, encode_shards, read_samples
from vqtok.pipelines.config import RuntimeOptions
from vqtok.pipelines.jobs import common as jobs_module
from vqtok.pipelines.training import checkpointing, train

FORK = multiprocessing.get_context("fork")
CONFIG = EncodeConfig(workers=0, progress=False, runtime=RuntimeOptions(batch_size=2))
ENCODE_WRITES = [
    (tarfile.TarFile, "addfile"),
    (os, "replace"),
    (jobs_module.ShardOutputs, "mark_done"),
]
TRAIN_WRITES = [(checkpointing, "save_file"), (pathlib.Path, "rename")]
# Per checkpoint: 5 tensor files, then the rename into place: 6 calls, 12 events.
CHECKPOINT_EVENTS = 12


def _run_with_signal(
    job, writes, signal_at: int | None, signum: int, count_file: pathlib.Path
) -> int | None:
    """Run `job` in a forked child that sends itself `signum` at write event `signal_at`.

    Events are 'before' and 'after' each call of a wrapped function. The child writes how
    many events it saw to `count_file`; returns its exit code (-9 when SIGKILLed).
    """
    def child():
        # A harness that starts the suite in the background (nohup, `&`) leaves SIGINT ignored;
        # the job must see Ctrl-C as a terminal user's job would.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        torch.set_num_threads(1)
        seen = [0]

        def tick():
            if seen[0] == signal_at:
                os.kill(os.getpid(), signum)
            seen[0] += 1

        for owner, name in writes:
            original = getattr(owner, name)

            def hooked(*args, _original=original, **kwargs):
                tick()
                result = _original(*args, **kwargs)
                tick()
                return result

            setattr(owner, name, hooked)
        try:
            run_job(job)
            code = 0
        except typer.Exit as exit_:
            code = exit_.exit_code
        count_file.write_text(str(seen[0]))
        os._exit(code)

    process = FORK.Process(target=child)
    process.start()
    process.join(120)
    assert process.exitcode is not None, "the job hung"
    return process.exitcode


@pytest.fixture(scope="module")
def encode_setup(tmp_path_factory):
    """Five small image shards, a tiny model and the output of an uninterrupted run."""
    root = tmp_path_factory.mktemp("kill-encode")
    (root / "shards").mkdir()
    for shard in range(5):
        write_tar(root / "shards" / f"s{shard}.tar",
                  [(f"k{shard}_{i}.png", png_bytes(16, 16, 10 * shard + i)) for i in range(3)])
    checkpoint = save_small_model("image-vq-f8", root / "model")
    reference = root / "reference"
    count = root / "events"
    job = lambda: encode_shards(checkpoint, str(root / "shards"), reference, CONFIG)  # noqa: E731
    assert _run_with_signal(job, ENCODE_WRITES, None, signal.SIGKILL, count) == 0
    return root, checkpoint, _outputs(reference), int(count.read_text())


def _outputs(folder: pathlib.Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def _keys_and_codes(folder: pathlib.Path) -> list[tuple[str, bytes]]:
    return [
        (s.key, s.fields["npy"])
        for tar in sorted(folder.glob("*.tar"))
        for s in read_samples(str(tar))
    ]


def _kill_and_resume(encode_setup, tmp_path, signal_at: int, signum: int) -> int:
    root, checkpoint, reference, _ = encode_setup
    out = tmp_path / f"run-{signal_at}"
    job = lambda: encode_shards(checkpoint, str(root / "shards"), out, CONFIG)  # noqa: E731
    code = _run_with_signal(job, ENCODE_WRITES, signal_at, signum, tmp_path / "events")
    if signum == signal.SIGINT:
        assert code == 130 and not list(out.glob("*.partial")), list(out.iterdir())
    encode_shards(checkpoint, str(root / "shards"), out, replace(CONFIG, resume=True))
    assert _outputs(out) == reference  # same keys, same count, same code bytes
    assert not list(out.glob("*.partial"))
    return code


def _points(encode_setup, trials: int, seed: int) -> list[int]:
    return sorted(random.Random(seed).sample(range(encode_setup[3]), trials))


@pytest.mark.reliability(
    input="encode job: 5 shards x 3 images",
    fault="SIGKILL before/after a random one of its file writes (10 trials), then --resume",
    expected="output tars byte-identical to an "
    "uninterrupted run (same keys, count, code bytes); no .partial left",
)
def test_sigkill_at_random_points_then_resume_is_exact(encode_setup, tmp_path, observed):
    points = _points(encode_setup, 10, seed=1)
    codes = [_kill_and_resume(encode_setup, tmp_path, n, signal.SIGKILL) for n in points]
    assert codes == [-signal.SIGKILL] * len(points)
    samples = len(_keys_and_codes(tmp_path / f"run-{points[0]}"))
    observed(
        f"killed at write events {points} of {encode_setup[3]}; "
        f"every resume identical ({samples} samples)"
    )


@pytest.mark.slow
@pytest.mark.reliability(
    input="encode job: 5 shards x 3 images",
    fault="SIGKILL at every 2nd write event, then --resume",
    expected="output byte-identical to an uninterrupted run",
)
def test_sigkill_at_every_other_write_event(encode_setup, tmp_path, observed):
    points = list(range(0, encode_setup[3], 2))
    for n in points:
        _kill_and_resume(encode_setup, tmp_path, n, signal.SIGKILL)
    observed(f"{len(points)} kill points, all resumed identical")


@pytest.mark.reliability(
    input="encode job: 5 shards x 3 images",
    fault="SIGINT (Ctrl-C) at 3 random write events",
    expected="exit 130, no .partial file left; --resume then gives the uninterrupted output",
)
def test_sigint_exits_130_leaves_no_partial_and_resumes(encode_setup, tmp_path, observed):
    points = _points(encode_setup, 3, seed=2)
    codes = [_kill_and_resume(encode_setup, tmp_path, n, signal.SIGINT) for n in points]
    observed(f"interrupted at events {points}: exit codes {codes}")


def _final_weights(run: pathlib.Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    # Bit-identical weights need the same reduction order in the forked child that is killed
    # and in this process: a forked child's OpenMP pool does not match the parent's.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("kill-train")
    shards = thumbnail_shards(root)
    settings = dict(steps=6, deterministic=True, ema_decay=0.5, val_every=100, checkpoint_every=2)
    reference = train(tiny_config(shards, root / "reference", **settings), progress=False)
    yield shards, settings, _final_weights(root / "reference"), reference.loss
    torch.set_num_threads(threads)


def _train_killed_at(train_setup, tmp_path, signal_at: int) -> int:
    shards, settings, weights, loss = train_setup
    config = tiny_config(shards, tmp_path / "run", **settings)
    code = _run_with_signal(
        lambda: train(config, progress=False),
        TRAIN_WRITES,
        signal_at,
        signal.SIGKILL,
        tmp_path / "events",
    )
    assert code == -signal.SIGKILL
    resumed = train(config, resume=True, progress=False)
    final = _final_weights(tmp_path / "run")
    assert final.keys() == weights.keys() and all(
        torch.equal(final[k], weights[k]) for k in weights
    )
    assert resumed.loss == loss
    return code


@pytest.mark.reliability(
    input="vqtok train, 6 steps, checkpoint every 2",
    fault="SIGKILL in the middle of writing the step-4 checkpoint, then --resume",
    expected="resumes from step 2; final weights bit-identical to an uninterrupted run",
)
def test_train_killed_while_checkpointing_resumes_exactly(train_setup, tmp_path, observed):
    _train_killed_at(
        train_setup, tmp_path, CHECKPOINT_EVENTS + 4
    )  # before step 4's third tensor file
    observed("killed inside step-00000004.partial; resumed to identical final weights")


@pytest.mark.reliability(
    input="vqtok train, 6 steps, checkpoint every 2",
    fault="SIGKILL after a checkpoint's "
    "state.json is written but before its directory is renamed into place",
    expected="the .partial checkpoint is ignored; resume is exact",
)
def test_train_killed_before_checkpoint_rename_resumes_exactly(train_setup, tmp_path):
    _train_killed_at(
        train_setup, tmp_path, 2 * CHECKPOINT_EVENTS - 2
    )  # just before step 4's rename
