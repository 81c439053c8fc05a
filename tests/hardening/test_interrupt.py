"""Ctrl-C at any moment of a command, start-up included: exit 130 and one line.

The command runs as a user runs it, in a new interpreter, and gets SIGINT after a delay
drawn over its whole run (imports, model loading, encoding). A run that ends before the
signal is sent is not a trial. The first tens of milliseconds belong to Python itself
(interpreter start-up, `site`), before any vqtok code can run; there Python's own
KeyboardInterrupt traceback is out of vqtok's reach, so each delay starts after twice the
time the interpreter takes, measured just before the trial, to reach vqtok's entry point.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.media import save_small_model


def _interrupt(args: list[str], delay: float, cwd: Path) -> tuple[int, str] | None:
    """Run `vqtok args`, send SIGINT after `delay` s; (exit code, stderr), or None when it
    finished first."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "vqtok.cli.main", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        # SIGINT as a terminal sends it; a background harness may have it ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(delay)
    if process.poll() is not None:
        process.communicate()
        return None
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    return process.returncode, err.decode()


def _startup_seconds() -> float:
    """How long a new interpreter takes to import vqtok's entry point, here and now."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", "import vqtok.cli.main"], check=True)
    return time.monotonic() - start


def _trials(count: int, seed: int, image_shards: Path, tmp_path: Path) -> list[str]:
    checkpoint = save_small_model("image-vq-f8", tmp_path / "model")
    rng = random.Random(seed)
    seen = []
    for trial in range(count):
        delay = 2 * _startup_seconds() + rng.uniform(0.0, 4.0)
        out = tmp_path / f"codes-{trial}"
        result = _interrupt(["encode", str(checkpoint), str(image_shards), str(out),
                             "--workers", "0", "--no-progress"], delay, tmp_path)
        if result is None:
            continue
        code, err = result
        assert code == 130, f"delay {delay:.2f} s: exit {code}\n{err}"
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        seen.append(f"{delay:.2f} s: {err.strip()}")
    return seen


@pytest.mark.reliability(
    input="Ctrl-C during `vqtok encode`, start-up included",
    fault="SIGINT at 3 random moments",
    expected="exit 130 with one line, never a traceback or exit 0",
)
def test_ctrl_c_at_random_moments(image_shards, tmp_path, observed):
    seen = _trials(3, seed=0, image_shards=image_shards, tmp_path=tmp_path)
    observed(f"{len(seen)} trials: " + "; ".join(seen))


@pytest.mark.slow
@pytest.mark.reliability(
    input="Ctrl-C during `vqtok encode`, start-up included",
    fault="SIGINT at 12 random moments",
    expected="exit 130 with one line every time",
)
def test_ctrl_c_at_many_random_moments(image_shards, tmp_path, observed):
    seen = _trials(12, seed=1, image_shards=image_shards, tmp_path=tmp_path)
    observed(f"{len(seen)} trials, all exit 130 with one line")
