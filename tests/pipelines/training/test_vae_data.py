"""What the VAE family asks of its batches: dynamic binarization and conditions from .cls or
.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import vqtok
from vqtok.pipelines import make_shards
from vqtok.pipelines.training import TrainConfig, train
from vqtok.pipelines.training.data import (
    CropBatches,
    binarize,
    condition_vector,
    epoch_loader,
    input_options,
    media_for,
)


def test_binarize_draws_ones_with_the_grey_level_as_probability() -> None:
    x = torch.linspace(-1, 1, 5).repeat(20000, 1)  # probabilities 0, .25, .5, .75, 1
    bits = binarize(x, torch.Generator().manual_seed(0))
    assert set(bits.unique().tolist()) == {-1.0, 1.0}
    frequency = ((bits + 1) / 2).mean(dim=0)
    torch.testing.assert_close(
        frequency, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]), atol=0.015, rtol=0
    )


def test_conditions_come_from_cls_or_json_attributes() -> None:
    assert condition_vector({"cls": b"2"}, 4).tolist() == [0, 0, 1, 0]
    assert condition_vector({"json": b"[0.5, -1, 2]"}, 3).tolist() == [0.5, -1.0, 2.0]
    assert condition_vector({"json": b'{"smiling": 1, "age": 0.25}'}, 2).tolist() == [
        0.25,
        1.0,
    ]  # sorted keys
    bad = [
        ({"cls": b"7"}, "outside the model's 4 classes"),
        ({"cls": b"two"}, "not an integer"),
        ({"json": b"[1, 2]"}, "4 finite numbers"),
        ({"json": b'["a", 1, 2, 3]'}, "4 finite numbers"),
        ({"json": b"[1, 2, NaN, 3]"}, "4 finite numbers"),
        ({"json": b"{"}, "not valid JSON"),
        ({"png": b""}, "no .cls label or .json attributes"),
    ]
    for fields, message in bad:
        with pytest.raises(ValueError, match=message):
            condition_vector(fields, 4)


def grey_bar_shards(root, labels: dict[str, object]):
    """Images 8x8 with a grey bar whose row encodes the sample's index mod 3.

    Labelled by ``labels``.
    """
    from PIL import Image

    src = root / "src"
    src.mkdir()
    for i in range(len(labels)):
        pixels = np.full((8, 8), 40, dtype=np.uint8)
        pixels[2 * (i % 3) : 2 * (i % 3) + 2] = 200
        Image.fromarray(pixels, mode="L").save(src / f"{i:02d}.png")
    (root / "labels.json").write_text(json.dumps(labels))
    return make_shards(src, root / "shards", "image", maxcount=6, labels=root / "labels.json")


def test_evaluation_batches_are_binarized_the_same_way_every_run(tmp_path) -> None:
    grey_bar_shards(tmp_path, {f"{i:02d}": i % 3 for i in range(6)})
    model = vqtok.create_model(
        "image-cvae-mlp", input_size=(8, 8), hidden=(16,), latent_dim=2, num_classes=3
    )
    options = input_options(model.config)
    assert options == {"condition_size": 3, "binarize": True}

    def batches(train: bool, epoch: int) -> list:
        data = CropBatches(
            [str(p) for p in sorted((tmp_path / "shards").glob("*.tar"))],
            media_for(model.config, [8, 8]),
            [8, 8],
            6,
            train=train,
            epoch=epoch,
            **options,
        )
        return list(epoch_loader(data, 0))

    (x, c), = batches(train=False, epoch=0)
    assert set(x.unique().tolist()) == {-1.0, 1.0} and c.argmax(dim=1).tolist() == [
        0,
        1,
        2,
        0,
        1,
        2,
    ]
    assert torch.equal(x, batches(train=False, epoch=0)[0][0])  # a fixed binarized test set
    grey = (x == 1).float().mean()  # 40/255 and 200/255 levels: mostly but not always one way
    assert 0.2 < float(grey) < 0.5
    first, second = batches(train=True, epoch=0)[0][0], batches(train=True, epoch=1)[0][0]
    assert not torch.equal(first, second)  # a new draw each epoch


def test_conditional_vae_trains_on_json_attribute_vectors(tmp_path) -> None:
    attributes = {f"{i:02d}": [float(i % 3 == 0), float(i % 3 == 1)] for i in range(12)}
    grey_bar_shards(tmp_path, attributes)
    config = TrainConfig(
        model="image-cvae-prior-mlp",
        out=str(tmp_path / "run"),
        train=[str(tmp_path / "shards")],
        model_options={"input_size": [8, 8], "hidden": [16], "latent_dim": 2, "num_classes": 2},
        batch_size=4,
        steps=6,
        warmup_steps=1,
        log_every=1,
        checkpoint_every=6,
        tensorboard=False,
    )
    summary = train(config, progress=False)
    assert summary.samples_skipped == 0 and math.isfinite(summary.loss)
    model = vqtok.load(summary.final_model)
    assert model.sample(2, torch.tensor([[1.0, 0.0], [0.0, 0.0]])).shape == (2, 1, 8, 8)
    from vqtok.pipelines.evaluation.nll import NLLConfig, evaluate_nll

    report = evaluate_nll(
        summary.final_model, [str(tmp_path / "shards")], NLLConfig(samples=8, seed=3)
    )
    again = evaluate_nll(
        summary.final_model, [str(tmp_path / "shards")], NLLConfig(samples=8, seed=3)
    )
    assert (
        report.inputs == 12 and report.elbo <= report.iwae and report.to_dict() == again.to_dict()
    )
