"""Fitting the prior on shards, storing it in the checkpoint, and coding with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pipeline_helpers import DATA, checkpoints, image_shards  # noqa: F401
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.compress import PRIOR_TOTAL, fit_prior, model_prior, prior_id, uniform_prior
from vqtok.pipelines.compress import compress_bytes, decompress_bytes, read_vqt
from vqtok.pipelines.encode import EncodeConfig
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.prior import fit_prior_shards

runner = CliRunner()


def test_fit_prior_counts_every_code_per_level():
    model = vqtok.create_model("image-rvq-f8", widths=(8, 8, 8, 8)).eval()
    batches = [torch.rand(2, 3, 32, 24) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1]
    counts = fit_prior(model, batches)
    assert counts.shape == (4, model.codebook_size)
    assert (counts.sum(axis=1) == 2 * 4 * 3 + 1 * 2 * 2).all()
    codes = model.encode(batches[1])
    assert counts[2, int(codes[0, 2, 0, 0])] >= 1


def test_fit_prior_cli_stores_a_prior_that_survives_save_and_load(image_shards, checkpoints, tmp_path):  # noqa: F811
    source, fitted = checkpoints["image-vq-f8"], tmp_path / "fitted"
    result = runner.invoke(app, ["fit-prior", str(source), str(image_shards), "--output", str(fitted),
                                 "--workers", "0"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["samples"] == 5 and summary["skipped"] == 0
    model = vqtok.load(fitted)
    prior = model_prior(model)
    assert prior_id(prior) == summary["prior_id"] != prior_id(uniform_prior(1024, 1))
    assert (prior.sum(axis=1) == PRIOR_TOTAL).all() and prior.min() >= 1
    assert np.array_equal(model_prior(vqtok.load(vqtok.save(model, tmp_path / "again"))), prior)
    assert model.model_id == vqtok.load(source).model_id  # the prior does not change the weights' id


def test_a_file_coded_with_one_prior_is_refused_under_another(image_shards, checkpoints, tmp_path):  # noqa: F811
    fit_prior_shards(checkpoints["image-vq-f8"], str(image_shards), tmp_path / "fitted", EncodeConfig(workers=0))
    fitted, plain = vqtok.load(tmp_path / "fitted"), vqtok.load(checkpoints["image-vq-f8"])
    vqt, rates = compress_bytes(fitted, (DATA / "images" / "chelsea.png").read_bytes())
    assert read_vqt(vqt)[0]["prior_id"] == prior_id(model_prior(fitted))
    assert rates.prior_bits < rates.uniform_bits
    assert decompress_bytes(fitted, vqt)[0] == "png"
    with pytest.raises(UsageError, match="prior"):
        decompress_bytes(plain, vqt)


def test_a_prior_that_does_not_fit_the_model_is_refused_on_load(tmp_path):
    model = vqtok.create_model("image-vq-f8", widths=(8, 8, 8, 8))
    model.code_prior = torch.ones(2, model.codebook_size, dtype=torch.int64)
    vqtok.save(model, tmp_path / "bad")
    with pytest.raises(vqtok.CheckpointError, match="code prior"):
        vqtok.load(tmp_path / "bad")
