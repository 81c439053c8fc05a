"""`vqtok train` under torchrun (2 CPU ranks, gloo) against one process with the doubled batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from helpers.training import thumbnails, tiny_config

from vqtok.pipelines import make_shards

# Both ranks see the same images (shard 0 and shard 1 hold copies), crops cover whole images
# and nothing is shuffled, so the two runs differ only in the order of floating-point sums.
LOSS_TOLERANCE = 1e-4  # relative, per step
STEPS = 4


def _run(args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _losses(out):
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    return [r["loss"] for r in records if r["split"] == "train"]


@pytest.mark.slow  # ~35 s on 2 cores: three Python processes start and import torch
def test_torchrun_matches_single_process_with_doubled_batch(tmp_path):
    for copy in range(2):
        for path in thumbnails(tmp_path / "photos")[:2]:
            (tmp_path / "src").mkdir(exist_ok=True)
            shutil.copy(path, tmp_path / "src" / f"copy{copy}-{path.name}")
    make_shards(tmp_path / "src", tmp_path / "shards", "image", maxcount=2)
    options = {
        "widths": [8, 8, 8, 8],
        "quantizer_options": {"codebook_size": 64, "kmeans_init": False},
    }
    common = dict(model_options=options, shuffle_buffer=1, steps=STEPS, warmup_steps=1,
                  val_every=100, checkpoint_every=100, lr=3e-3)
    single = tiny_config(tmp_path / "shards", tmp_path / "single", batch_size=4, **common)
    ddp = tiny_config(tmp_path / "shards", tmp_path / "ddp", batch_size=2, **common)
    cli = [sys.executable, "-m", "vqtok.cli.main", "train"]
    _run([*cli, str(single.save(tmp_path / "single.toml")), "--no-progress"])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
          "-m", "vqtok.cli.main", "train", str(ddp.save(tmp_path / "ddp.toml")), "--no-progress"])
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    hashes = summary["replica_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]  # parameters and codebooks agree bit for bit
    single_losses, ddp_losses = _losses(tmp_path / "single"), _losses(tmp_path / "ddp")
    assert len(single_losses) == len(ddp_losses) == STEPS
    assert single_losses[-1] < single_losses[0]
    for a, b in zip(single_losses, ddp_losses, strict=True):
        assert b == pytest.approx(a, rel=LOSS_TOLERANCE)
