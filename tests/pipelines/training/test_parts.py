"""The trainer's parts on real computation: crops, losses, validation metrics, schedule,
pictures."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from vqtok.pipelines.training import TrainConfig
from vqtok.pipelines.training.data import crop_piece
from vqtok.pipelines.training.loop import warmup_cosine
from vqtok.pipelines.training.losses import MultiResolutionSTFTLoss, ReconstructionLoss
from vqtok.pipelines.training.metrics import ValidationMetrics
from vqtok.pipelines.training.pictures import save_reconstruction_picture


def test_crop_pads_short_axes_by_edge_replication_and_centres_without_generator():
    piece = torch.arange(12.0).reshape(1, 3, 4)
    out = crop_piece(piece, [5, 2], None)
    assert out.shape == (1, 5, 2)
    assert torch.equal(out[0, 3], out[0, 2]) and torch.equal(
        out[0, 4], out[0, 2]
    )  # replicated rows
    assert torch.equal(out[0, :3], piece[0, :, 1:3])  # centred in width
    generator = torch.Generator().manual_seed(0)
    crops = {tuple(crop_piece(piece, [1, 1], generator).flatten().tolist()) for _ in range(40)}
    assert len(crops) > 1


def test_stft_loss_is_zero_for_identical_audio_and_grows_with_noise():
    loss = MultiResolutionSTFTLoss()
    t = torch.arange(8000) / 16000
    x = torch.sin(2 * math.pi * 440 * t).reshape(1, 1, -1)
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    small, large = loss(x + 0.01 * torch.randn_like(x), x), loss(x + 0.3 * torch.randn_like(x), x)
    assert 0 < float(small) < float(large)


def test_reconstruction_terms_depend_on_modality():
    x = torch.rand(2, 1, 4000) * 2 - 1
    audio = ReconstructionLoss("audio", sample_rate=16000, l1=0.5)(x * 0.5, x)
    assert set(audio) == {"l1", "l2", "stft", "mel"}
    assert float(audio["l1"]) == pytest.approx(0.5 * float((x * 0.5 - x).abs().mean()), rel=1e-5)
    image = ReconstructionLoss("image")(torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8))
    assert set(image) == {"l2"} and float(image["l2"]) == pytest.approx(1.0)


def test_metrics_psnr_usage_and_bits_per_token():
    metrics = ValidationMetrics(codebook_size=8, num_levels=2)
    x = torch.zeros(4, 3, 8, 8)
    codes = torch.stack([torch.arange(8).repeat(8).reshape(4, 4, 4),
                         torch.zeros(4, 4, 4, dtype=torch.int64)], dim=1)  # (B, Q, 4, 4)
    metrics.update(x, x + 0.1, codes)
    out = metrics.compute()
    assert out["mse"] == pytest.approx(0.01)
    assert out["psnr"] == pytest.approx(10 * math.log10(4 / 0.01))
    assert out["bits_per_token"] == pytest.approx(3.0)  # level 0 uniform over 8, level 1 constant
    assert out["codebook_usage"] == pytest.approx(9 / 16)
    assert out["perplexity"] == pytest.approx((8 + 1) / 2)
    assert out["nominal_bits_per_token"] == pytest.approx(6.0)


def test_schedule_warms_up_then_decays_to_the_floor():
    factor = warmup_cosine(TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1))
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.55) and factor(100) == pytest.approx(0.1)
    assert all(factor(s) >= factor(s + 1) for s in range(10, 100))


@pytest.mark.parametrize(
    "modality, shape",
    [("image", (3, 3, 16, 16)), ("video", (2, 3, 5, 16, 16)), ("audio", (2, 1, 8000))],
)
def test_pictures_are_pngs_with_originals_and_reconstructions(modality, shape, tmp_path):
    x = torch.rand(shape) * 2 - 1
    path = save_reconstruction_picture(tmp_path / "p.png", x, -x, modality, sample_rate=16000)
    with Image.open(path) as picture:
        width, height = picture.size
        assert picture.mode == "RGB"
    if modality == "image":
        assert (width, height) == (
            2 + 3 * 18,
            2 + 2 * 18,
        )  # a row of originals over reconstructions
    assert width > 16 and height > 16


@pytest.mark.parametrize("train", [False, True])
def test_every_piece_reaches_a_batch_even_when_the_epoch_is_shorter_than_a_batch(tmp_path, train):
    from helpers.training import thumbnail_shards

    from vqtok.pipelines.data.media import MediaConfig
    from vqtok.pipelines.training.data import CropBatches

    shards = sorted(str(p) for p in thumbnail_shards(tmp_path, per_shard=2).glob("*.tar"))
    batches = list(
        CropBatches(shards[:1], MediaConfig("image"), [16, 16], batch_size=4, train=train)
    )
    assert [b.shape[0] for b in batches] == [2]
