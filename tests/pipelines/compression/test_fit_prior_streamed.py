"""`fit-prior` on video reads each whole video as the encoder reads it (never decoded whole)
and counts the codes of the whole clips, within `--max-memory`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.entropy import code_counts
from vqtok.pipelines.data.media import MediaConfig, prepare

runner = CliRunner()
VIDEO = Path(__file__).parents[2] / "data" / "video"


def test_fit_prior_counts_the_codes_of_the_whole_videos(video_shards, checkpoints, tmp_path):
    source = checkpoints["video-vq-t4s8"]
    model = vqtok.load(source)
    counts = sum(
        code_counts(model.encode(prepare((VIDEO / name).read_bytes(), MediaConfig("video"))[0]),
                    model.codebook_size, model.num_levels)
        for name in ("pan.mp4", "zoom.mp4")
    )
    result = runner.invoke(app, ["fit-prior", str(source), str(video_shards), "--output",
                                 str(tmp_path / "fitted"), "--workers", "0",
                                 "--max-memory", "64MiB"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["samples"] == 2 and summary["skipped"] == 0
    assert summary["codes"] == int(counts.sum())
    entropy = -(counts / counts.sum()) * np.log2(np.where(counts, counts / counts.sum(), 1))
    assert summary["entropy_bits_per_code"][0] == round(float(entropy.sum()), 4)


def test_a_budget_too_small_for_one_piece_is_exit_2(video_shards, checkpoints, tmp_path):
    result = runner.invoke(app, ["fit-prior", str(checkpoints["video-vq-t4s8"]),
                                 str(video_shards), "--output", str(tmp_path / "fitted"),
                                 "--workers", "0", "--max-memory", "1KiB"])
    assert result.exit_code == 2, result.output
    assert "raise --max-memory" in result.output
    assert not (tmp_path / "fitted").exists()
