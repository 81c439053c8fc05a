"""The memory planner: whole inputs when they fit, pieces under the budget when not, and a
measured peak (in a fresh process, with the project's memory helpers) under the budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import vqtok
from vqtok.models import PRESETS
from vqtok.models.memory import BudgetError, pass_bytes, plan

MIB = 2**20


def seeded(preset: str) -> vqtok.VQTokenizer:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return vqtok.create_model(preset).eval()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_small_inputs_go_whole_in_one_batch(preset: str) -> None:
    model = seeded(preset)
    size = {"audio": (16000,), "image": (64, 48), "video": (9, 32, 32)}[model.config.modality]
    chosen = plan(model, (8, model.config.channels, *size), 1024 * MIB)
    assert chosen.whole and chosen.samples == 8
    assert chosen.peak_bytes <= 1024 * MIB
    x = torch.rand(2, model.config.channels, *size) * 2 - 1
    assert torch.equal(model.encode_within(x, 1024 * MIB), model.encode(x))


def test_a_tight_budget_first_splits_the_batch_then_cuts_pieces() -> None:
    model = seeded("image-vq-f8")
    one = pass_bytes(model, "encode", (512, 512), 1, torch.float32)
    halves = plan(model, (4, 3, 512, 512), 2 * one)
    assert halves.whole and halves.samples == 2
    cut = plan(model, (4, 3, 512, 512), one // 3)
    assert not cut.whole and cut.samples == 1 and cut.peak_bytes <= one // 3
    assert max(p or 0 for p in cut.piece) < 64  # some axis is cut below its 64 codes


@pytest.mark.parametrize("part", ["encode", "decode"])
def test_a_budget_below_one_piece_is_a_clear_error(part: str) -> None:
    model = seeded("video-vq-t4s8")
    with pytest.raises(BudgetError, match=r"needs at least \d+ MiB .*budget 0 MiB"):
        plan(model, (1, 3, 64, 720, 1280), 1000, part)


def test_decode_within_matches_decode() -> None:
    model = seeded("audio-vq-16k")
    x = torch.rand(1, 1, 48000) * 2 - 1
    codes = model.encode(x)
    with torch.no_grad():
        whole = model.decode(codes, x.shape[2:])
    small = model.decode_within(codes, 4 * MIB, x.shape[2:])
    assert small.shape == whole.shape
    assert float((small - whole).abs().max()) < 1e-5
    assert torch.equal(model.decode_within(codes, 1024 * MIB, x.shape[2:]), whole)


# Run in a fresh process so that the peak is this call's alone; the input and the model are
# made (and warmed up) before the measurement starts.
CHILD = """
import json, sys, torch
import vqtok
from vqtok.pipelines.bench.memory import measure_peak
torch.set_num_threads(1)
# measure_peak makes glibc serve large blocks by mmap (freed ones go back to the OS); set it
# before any work, or blocks freed by the warm-up raise glibc's adaptive mmap threshold and
# the measured call's allocations come from a fragmented heap instead (measured: 250 MiB
# instead of 55 MiB for the video decode below). Jobs should do the same at start-up.
with measure_peak(torch.device("cpu")):
    pass
preset, part, size, budget = sys.argv[1], sys.argv[2], eval(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(0)
model = vqtok.create_model(preset).eval()
x = torch.rand(1, model.config.channels, *size) * 2 - 1
small = x[(Ellipsis, *(slice(0, min(n, 9)) for n in size))]
model.encode_within(small, budget)  # warm up: load oneDNN kernels outside the measurement
with torch.no_grad():
    codes = model.encode_tiled(x, [4] * len(size)) if part == "decode" else None
    model.decode(model.encode(small), small.shape[2:])
    with measure_peak(torch.device("cpu")) as peak:
        if part == "encode":
            out = model.encode_within(x, budget)
        else:
            out = model.decode_within(codes, budget, size)
result = out.numel() * out.element_size()
print(json.dumps({"peak": peak.extra_bytes, "result": result}))
"""


@pytest.mark.parametrize(
    ("preset", "part", "size", "budget_mib"),
    [
        ("image-vq-f8", "encode", (512, 448), 16),  # whole: ~40 MiB
        # Minutes on 2 busy cores: one minute of audio (whole: ~370 MiB), a larger image, video.
        pytest.param("audio-vq-16k", "encode", (16000 * 60,), 48, marks=pytest.mark.slow),
        pytest.param("audio-vq-16k", "decode", (16000 * 60,), 48, marks=pytest.mark.slow),
        pytest.param("image-vq-f8", "encode", (1024, 768), 32, marks=pytest.mark.slow),
        pytest.param("video-vq-t4s8", "decode", (33, 128, 160), 48, marks=pytest.mark.slow),
    ],
)
def test_planned_peak_memory_stays_under_the_budget(preset, part, size, budget_mib) -> None:
    model = seeded(preset)
    budget = budget_mib * MIB
    shape = (1, model.config.channels, *size)
    assert not plan(model, shape, budget, part).whole  # the budget must force pieces
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", CHILD, preset, part, repr(size), str(budget)]
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    if measured["peak"] is None:
        pytest.skip("this platform cannot measure peak RSS")
    # The budget bounds what the call adds besides its result (codes, or decoded media).
    assert measured["peak"] - measured["result"] <= budget, measured
