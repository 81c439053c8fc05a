"""Continuous models through the shared trainer, checkpoints and `vqtok eval nll`, and the
linear-Gaussian VAE against the exact PPCA log-likelihood."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import vqtok
from vqtok.models.bounds import iwae_bound, naive_bound
from vqtok.models.ppca import PPCA
from vqtok.pipelines import PipelineError, make_shards
from vqtok.pipelines.training import TrainConfig, train
from vqtok.pipelines.training.data import CropBatches, media_for

LATENTS = 4


def ppca_images(n: int, seed: int = 0) -> torch.Tensor:
    """n grayscale 8x8 images drawn from a known 4-factor PPCA, rounded to 8 bits: (n, 1, 8, 8)."""
    g = torch.Generator().manual_seed(seed)
    truth = PPCA(
        W=torch.randn(64, LATENTS, dtype=torch.float64, generator=g) * 0.25,
        b=torch.zeros(64, dtype=torch.float64),
        sigma2=torch.tensor(0.05**2, dtype=torch.float64),
    )
    x = truth.sample(n, g).clamp(-1, 1).float().view(n, 1, 8, 8)
    return torch.round((x + 1) * 127.5) / 127.5 - 1


def ppca_shards(root: Path, n: int) -> Path:
    src = root / "src"
    src.mkdir(parents=True)
    for i, image in enumerate(ppca_images(n)):
        pixels = np.round((image[0].numpy() + 1) * 127.5).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(src / f"{i:04d}.png")
    make_shards(src, root / "shards", "image", maxcount=64)
    return root / "shards"


def read_back(shards: Path, model) -> torch.Tensor:
    """Every input exactly as the trainer reads it: (N, 1, 8, 8)."""
    urls = [str(p) for p in sorted(shards.glob("*.tar"))]
    return torch.cat(
        list(CropBatches(urls, media_for(model.config, [8, 8]), [8, 8], 256, train=False))
    )


def gap_to_ppca(model, x: torch.Tensor) -> tuple[float, float, float]:
    """(exact PPCA log-likelihood, the model's ELBO, relative gap), dataset means in nats."""
    oracle = float(PPCA.fit(x.flatten(1), LATENTS).log_prob(x.flatten(1)).mean())
    torch.manual_seed(0)
    _, elbo = iwae_bound(model.eval(), x, 64)
    return oracle, float(elbo.mean()), (oracle - float(elbo.mean())) / abs(oracle)


def test_linear_gaussian_vae_approaches_the_ppca_likelihood() -> None:
    """The fast variant: full-batch Adam, no shards; within 2% in 1500 steps (see the slow test)."""
    torch.manual_seed(0)
    x = ppca_images(256)
    model = vqtok.create_model("image-linear-vae", input_size=(8, 8), latent_dim=LATENTS)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 1500, eta_min=1e-3)
    for _ in range(1500):
        _, losses, _ = model(x)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        schedule.step()
    oracle, elbo, gap = gap_to_ppca(model, x)
    assert elbo <= oracle + 0.05  # the ELBO of a linear-Gaussian model never beats the ML PPCA
    assert gap < 0.02, (oracle, elbo)


@pytest.mark.slow
def test_linear_vae_trained_by_the_trainer_reaches_the_ppca_oracle(tmp_path) -> None:
    shards = ppca_shards(tmp_path, 128)
    config = TrainConfig(
        model="image-linear-vae",
        model_options={"input_size": [8, 8], "latent_dim": LATENTS},
        train=[str(shards)],
        out=str(tmp_path / "run"),
        batch_size=128,
        shuffle_buffer=1,
        steps=2500,
        lr=0.1,
        weight_decay=0.0,
        warmup_steps=10,
        min_lr_ratio=0.01,
        grad_clip=0.0,
        log_every=500,
        checkpoint_every=10000,
        tensorboard=False,
    )
    train(config, progress=False)
    model = vqtok.load(tmp_path / "run" / "final")
    oracle, elbo, gap = gap_to_ppca(model, read_back(shards, model))
    assert 0 <= gap < 0.005, (oracle, elbo)


def test_vaes_train_through_the_shared_trainer_with_their_own_likelihood(tmp_path) -> None:
    shards = ppca_shards(tmp_path, 16)
    config = TrainConfig(
        model="image-vae-mlp",
        out=str(tmp_path / "run"),
        train=[str(shards)],
        val=[str(shards)],
        model_options={
            "input_size": [8, 8],
            "hidden": [32],
            "latent_dim": 3,
            "likelihood": "logistic",
            "kl_warmup_steps": 4,
        },
        batch_size=8,
        steps=6,
        warmup_steps=1,
        log_every=1,
        val_every=6,
        checkpoint_every=6,
        tensorboard=False,
        best_metric="loss",
    )
    summary = train(config, progress=False)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    first = next(r for r in rows if r["split"] == "train")
    assert "l2" not in first and {"nll", "kl", "elbo", "bits_per_dim"} <= set(first)
    assert first["kl_weight"] == 0.0  # warm-up starts at 0 and the trainer advances it
    assert first["loss"] == pytest.approx(first["nll"] + first["kl_weight"] * first["kl"], rel=1e-4)
    assert summary.best_model is not None
    model = vqtok.load(summary.final_model)
    assert model.config.likelihood == "logistic" and model.config.input_size == (8, 8)

    from vqtok.cli.app import app

    report_path = tmp_path / "nll.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "nll",
            summary.final_model,
            str(shards),
            "--samples",
            "20",
            "--json",
            str(report_path),
            "--pictures",
            str(tmp_path / "pictures"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["inputs"] == 16 and report["samples"] == 20
    assert report["elbo"] <= report["iwae"]
    assert report["nll"] == pytest.approx(-report["iwae"])
    drawn = sorted(p.name for p in (tmp_path / "pictures").glob("*.png"))
    assert drawn == ["reconstructions.png", "samples.png", "traversals.png"]
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (64 * math.log(2)))
    refused = CliRunner().invoke(app, ["eval", "nll", str(tmp_path / "missing"), str(shards)])
    assert refused.exit_code == 2 and "Traceback" not in refused.output


def test_naive_prior_estimate_falls_below_the_iwae_bound_on_a_fitted_model() -> None:
    torch.manual_seed(0)
    x = ppca_images(64)
    fit = PPCA.fit(x.flatten(1), LATENTS)
    model = vqtok.create_model("image-linear-vae", input_size=(8, 8), latent_dim=LATENTS).eval()
    means, cov = fit.posterior(x.flatten(1))
    with torch.no_grad():  # set the linear VAE to the exact PPCA solution and posterior
        model.decoder.net[0].weight.copy_(fit.W.float())
        model.decoder.net[0].bias.copy_(fit.b.float())
        model.likelihood.log_sigma.fill_(0.5 * math.log(float(fit.sigma2)))
        encoder = model.encoder.net[0]
        m_inverse = cov / fit.sigma2
        encoder.weight.zero_()
        encoder.bias.zero_()
        encoder.weight[:LATENTS] = (m_inverse @ fit.W.T).float()
        encoder.bias[:LATENTS] = -(m_inverse @ fit.W.T @ fit.b).float()
        encoder.bias[LATENTS:] = cov.diagonal().log().float()
    iwae, elbo = iwae_bound(model, x, 100)
    exact = fit.log_prob(x.flatten(1))
    torch.testing.assert_close(
        elbo, exact, atol=1e-2, rtol=1e-4
    )  # exact posterior: the ELBO is tight
    assert float(naive_bound(model, x, 100).mean()) < float(iwae.mean()) - 10


def test_conv_ladder_vae_trains_and_reports_each_layer(tmp_path) -> None:
    shards = ppca_shards(tmp_path, 16)
    options = {
        "input_size": [8, 8],
        "stage_strides": [[2, 2], [2, 2]],
        "widths": [8, 8, 8],
        "ladder_dims": [2, 3],
        "likelihood": "logistic",
        "kl_warmup_steps": 4,
    }
    config = TrainConfig(
        model="image-ladder3-vae-conv",
        model_options=options,
        out=str(tmp_path / "run"),
        train=[str(shards)],
        batch_size=8,
        steps=6,
        warmup_steps=1,
        log_every=1,
        checkpoint_every=6,
        tensorboard=False,
    )
    summary = train(config, progress=False)
    rows = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    assert {"kl_layer1", "kl_layer2", "active_units_layer2"} <= set(rows[-1])
    from vqtok.models.conv_ladder import ConvLadderVAE
    from vqtok.pipelines.evaluation.nll import NLLConfig, evaluate_nll

    assert isinstance(vqtok.load(summary.final_model), ConvLadderVAE)
    report = evaluate_nll(
        summary.final_model, [str(shards)], NLLConfig(samples=10), pictures=tmp_path / "pictures"
    )
    assert report.inputs == 16 and report.elbo <= report.iwae
    assert set(report.kl_per_layer) == {"kl_layer1", "kl_layer2"} and set(report.active_units) == {
        "layer1",
        "layer2",
    }
    assert sorted(p.name for p in (tmp_path / "pictures").glob("*.png")) == [
        "layers.png",
        "reconstructions.png",
    ]


@pytest.mark.parametrize("preset, options", [
    ("image-cvae-prior-mlp", {"hidden": [16], "latent_dim": 2}),
    ("image-cvae-conv", {"widths": [8, 8, 8], "latent_dim": 2, "learned_prior": True}),
])
def test_conditional_vae_trains_on_the_shards_class_labels(
    preset: str, options: dict, tmp_path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    labels = {}
    for i in range(12):
        pixels = np.zeros((8, 8), dtype=np.uint8)
        pixels[2 * (i % 3) : 2 * (i % 3) + 2] = 255
        Image.fromarray(pixels, mode="L").save(src / f"{i:02d}.png")
        labels[f"{i:02d}"] = i % 3
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    make_shards(src, tmp_path / "shards", "image", maxcount=6, labels=tmp_path / "labels.json")
    config = TrainConfig(
        model=preset,
        out=str(tmp_path / "run"),
        train=[str(tmp_path / "shards")],
        val=[str(tmp_path / "shards")],
        model_options={**options, "input_size": [8, 8], "num_classes": 3},
        batch_size=4,
        steps=4,
        warmup_steps=1,
        log_every=1,
        val_every=4,
        checkpoint_every=4,
        tensorboard=False,
        best_metric="loss",
    )
    summary = train(config, progress=False)
    assert summary.samples_skipped == 0 and math.isfinite(summary.validation["loss"])
    model = vqtok.load(summary.final_model)
    assert model.sample(3, torch.tensor([0, 1, 2])).shape == (3, 1, 8, 8)
    from vqtok.pipelines.evaluation.nll import NLLConfig, evaluate_nll

    report = evaluate_nll(summary.final_model, [str(tmp_path / "shards")], NLLConfig(samples=10))
    assert report.inputs == 12 and report.elbo <= report.iwae
    unlabeled = TrainConfig(
        **{
            **config.__dict__,
            "out": str(tmp_path / "run2"),
            "train": [str(shards_without_labels(tmp_path))],
            "val": [],
        }
    )
    with pytest.raises(
        PipelineError, match="every sample failed"
    ):  # each logged: "has no .cls label"
        train(unlabeled, progress=False)


def shards_without_labels(root: Path) -> Path:
    make_shards(root / "src", root / "plain", "image", maxcount=6)
    return root / "plain"
