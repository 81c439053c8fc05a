"""Fitting the prior on shards, storing it in the checkpoint, and coding with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers.media import DATA
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.entropy import (
    PRIOR_TOTAL,
    fit_prior,
    ideal_bits,
    model_prior,
    prior_id,
    quantize_counts,
    smoothed_prior,
    uniform_prior,
)
from vqtok.pipelines.compression.fit_prior import FitPriorConfig, fit_prior_shards
from vqtok.pipelines.compression.vqt import compress_bytes, decompress_bytes, read_vqt
from vqtok.pipelines.errors import UsageError

runner = CliRunner()


def test_fit_prior_counts_every_code_per_level_and_fold():
    model = vqtok.create_model("image-rvq-f8", widths=(8, 8, 8, 8)).eval()
    batches = [(0, torch.rand(2, 3, 32, 24) * 2 - 1), (2, torch.rand(1, 3, 16, 16) * 2 - 1)]
    counts = fit_prior(model, batches, folds=3)
    assert counts.shape == (3, 4, model.codebook_size)
    assert (counts[0].sum(axis=1) == 2 * 4 * 3).all() and (counts[2].sum(axis=1) == 2 * 2).all()
    assert counts[1].sum() == 0
    codes = model.encode(batches[1][1])
    assert counts[2, 2, int(codes[0, 2, 0, 0])] >= 1


def _skewed_folds(rng, codebook_size: int, folds: int, per_fold: int, exponent: float) -> tuple:
    """Fold counts of codes drawn from a Zipf-like law, and that law `(K,)`."""
    law = 1.0 / np.arange(1, codebook_size + 1) ** exponent
    law = rng.permutation(law / law.sum())
    counts = np.stack(
        [
            np.bincount(rng.choice(codebook_size, per_fold, p=law), minlength=codebook_size)
            for _ in range(folds)
        ]
    )
    return counts[:, None, :], law


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 1.3])
@pytest.mark.parametrize("per_fold", [30, 300, 3000])
def test_smoothed_prior_on_held_out_codes_is_never_much_worse_than_log2_k(exponent, per_fold):
    rng = np.random.default_rng(int(100 * exponent) + per_fold)
    fold_counts, law = _skewed_folds(rng, 1024, 5, per_fold, exponent)
    prior, weights = smoothed_prior(fold_counts)
    held_out = rng.choice(1024, 20000, p=law)
    bits_per_code = ideal_bits(held_out, prior) / held_out.size
    entropy = -(law * np.log2(law)).sum()
    assert bits_per_code <= 10 * 1.02  # few samples or a flat law: close to uniform, not worse
    if per_fold == 3000 and exponent >= 1.0:  # enough skewed data: most of the saving is found
        assert bits_per_code <= entropy + 0.6 * (10 - entropy)
    assert 0 < weights[0] <= 1


def test_smoothing_beats_the_raw_counts_when_data_is_scarce():
    rng = np.random.default_rng(7)
    fold_counts, law = _skewed_folds(
        rng, 1024, 5, 1200, 1.0
    )  # 6,000 codes for K = 1024, as in the f8 benchmark
    held_out = rng.choice(1024, 20000, p=law)
    raw = ideal_bits(held_out, quantize_counts(fold_counts.sum(axis=0))) / held_out.size
    smoothed = ideal_bits(held_out, smoothed_prior(fold_counts)[0]) / held_out.size
    assert smoothed < raw - 0.2


def test_smoothed_prior_is_exact_integer_arithmetic():
    fold_counts = np.array([[[50, 5, 1, 0]], [[40, 6, 0, 1]], [[45, 4, 1, 0]]])
    prior, (weight,) = smoothed_prior(fold_counts)
    assert prior.dtype == np.int64 and (prior.sum(axis=1) == PRIOR_TOTAL).all() and prior.min() >= 1
    assert np.array_equal(smoothed_prior(fold_counts.copy())[0], prior)
    counts = fold_counts.sum(axis=0)[0]
    expected = ((1 - weight) * counts / counts.sum() + weight / 4) * PRIOR_TOTAL
    assert (
        np.abs(prior[0] - expected).max() <= 4 and 0 < weight < 1
    )  # quantization: 1 per code + floor
    assert smoothed_prior(fold_counts[:1])[1] == [0.5]  # one fold: nothing to cross-validate
    with pytest.raises(ValueError):
        smoothed_prior(fold_counts[0])


def test_fit_prior_cli_stores_a_prior_that_survives_save_and_load(
    image_shards, checkpoints, tmp_path
):
    source, fitted = checkpoints["image-vq-f8"], tmp_path / "fitted"
    result = runner.invoke(
        app,
        ["fit-prior", str(source), str(image_shards), "--output", str(fitted), "--workers", "0"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (
        summary["samples"] == 5
        and summary["skipped"] == 0
        and 0 < summary["uniform_weight"][0] <= 1
    )
    model = vqtok.load(fitted)
    prior = model_prior(model)
    assert prior_id(prior) == summary["prior_id"] != prior_id(uniform_prior(1024, 1))
    assert (prior.sum(axis=1) == PRIOR_TOTAL).all() and prior.min() >= 1
    assert np.array_equal(model_prior(vqtok.load(vqtok.save(model, tmp_path / "again"))), prior)
    assert (
        model.model_id == vqtok.load(source).model_id
    )  # the prior does not change the weights' id


def test_a_file_coded_with_one_prior_is_refused_under_another(image_shards, checkpoints, tmp_path):
    fit_prior_shards(
        checkpoints["image-vq-f8"],
        str(image_shards),
        tmp_path / "fitted",
        FitPriorConfig(workers=0),
    )
    fitted, plain = vqtok.load(tmp_path / "fitted"), vqtok.load(checkpoints["image-vq-f8"])
    vqt, rates = compress_bytes(fitted, (DATA / "images" / "chelsea.png").read_bytes())
    assert read_vqt(vqt)[0]["prior"] == prior_id(model_prior(fitted))
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
