"""The continuous-latent presets: shapes over the registry, objectives, checkpoints, ladder
and CVAE."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vqtok
from vqtok.models.bounds import iwae_bound
from vqtok.models.gaussian import kl_normal
from vqtok.models.likelihoods import DATA_BIN_WIDTH
from vqtok.models.vae_presets import VAE_PRESETS

# Small networks so that every preset builds and runs in milliseconds.
TINY = {
    "mlp": {"hidden": (32, 16), "latent_dim": 4},
    "linear": {"latent_dim": 4},
    "conv": {"latent_dim": 4},
}


def tiny(name: str, **changes) -> vqtok.models.vae.LatentModel:
    config = VAE_PRESETS[name]
    options = dict(TINY[config.network])
    if config.family == "ladder" and config.network == "mlp":
        options = {"hidden": (32, 16, 8, 8, 8)[: len(config.ladder_dims)]}
    if config.family == "ladder" and config.network == "conv":
        options = {"widths": (8,) * (len(config.ladder_dims) + 1)}
    if config.network != "conv":
        options["input_size"] = (8, 8)
    return vqtok.create_model(name, **{**options, **changes})


def batch(model, n: int = 3) -> tuple[torch.Tensor, torch.Tensor | None]:
    config = model.config
    size = (
        (4, 16, 16)
        if config.modality == "video"
        else (4000,)
        if config.modality == "audio"
        else config.input_size
    )
    x = torch.round(torch.rand(n, config.channels, *size) * 255) / 127.5 - 1
    if config.likelihood == "bernoulli":
        x = x.sign()
    c = torch.arange(n) % config.num_classes if config.family == "cvae" else None
    return x, c


def run(model, x, c):
    return model(x) if c is None else model(x, c)


@pytest.mark.parametrize("preset", sorted(VAE_PRESETS))
def test_every_preset_gives_shapes_losses_samples_and_bounds(preset: str) -> None:
    model = tiny(preset)
    x, c = batch(model)
    x_hat, losses, stats = run(model, x, c)
    assert x_hat.shape == x.shape
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert all(isinstance(v, float) for v in stats.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if model.config.family == "ae":
        assert set(losses) == {"nll"}
        return
    assert set(losses) == {"nll", "kl"}
    # The loss is the (beta-weighted) negative ELBO in nats per sample: no rescaling.
    assert float(losses["kl"].detach()) == pytest.approx(stats["kl_weight"] * stats["kl"], rel=1e-5)
    assert stats["elbo"] == pytest.approx(-(float(losses["nll"].detach()) + stats["kl"]), rel=1e-5)
    # Bits per value of the data: a density's NLL moves to the scale of its quantized bins.
    dims = x[0].numel()
    per_bin = 0.0 if model.likelihood.discrete else -dims * math.log(
        DATA_BIN_WIDTH[model.config.modality]
    )
    assert stats["bits_per_dim"] == pytest.approx(
        (-stats["elbo"] + per_bin) / (dims * math.log(2)), rel=1e-5
    )
    samples = model.sample(3) if c is None else model.sample(3, c)
    assert samples.shape == (3, model.config.channels, *model.config.input_size)
    iwae, elbo = iwae_bound(model, x, 4, c=c)
    assert iwae.shape == elbo.shape == (3,) and iwae.dtype == torch.float64
    assert torch.all(iwae >= elbo)


@pytest.mark.parametrize(
    "preset", ["image-vae-mlp", "image-ladder3-vae-mlp", "image-cvae-prior-mlp", "image-vae-f4"]
)
def test_checkpoints_round_trip_continuous_models(preset: str, tmp_path) -> None:
    model = tiny(preset, beta=2.0).eval()
    directory = vqtok.save(model, tmp_path / "m")
    loaded = vqtok.load(directory)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.model_id == model.model_id
    x, c = batch(model)
    torch.manual_seed(0)
    expected = run(model, x, c)[1]
    torch.manual_seed(0)
    got = run(loaded, x, c)[1]
    assert {k: float(v.detach()) for k, v in got.items()} == {
        k: float(v.detach()) for k, v in expected.items()
    }


def test_checkpoints_from_before_a_config_field_existed_still_load(tmp_path) -> None:
    model = tiny("image-cvae-prior-mlp", prior_components=1).eval()
    directory = vqtok.save(model, tmp_path / "m")
    record = json.loads((directory / "config.json").read_text())
    del record["config"]["prior_components"]  # as written before mixture priors existed
    (directory / "config.json").write_text(json.dumps(record))
    loaded = vqtok.load(directory)
    assert loaded.config.prior_components == 1 and loaded.model_id == model.model_id
    mixture = tiny("image-cvae-prior-mlp", prior_components=2)
    assert mixture.config.identity_dict()["prior_components"] == 2  # hashed where it matters


def test_kl_weight_follows_beta_normalization_warmup_and_free_bits() -> None:
    model = tiny("image-vae-mlp", beta=0.5, beta_normalized=True, kl_warmup_steps=100)
    n, k = 64, 4
    model.set_step(25)
    assert model.kl_weight(k, n) == pytest.approx(
        0.5 * n / k * 0.25
    )  # beta = beta_norm * n / K, ramped
    model.eval()
    assert model.kl_weight(k, n) == pytest.approx(0.5 * n / k)  # evaluation: the full weight
    free = tiny("image-vae-mlp", free_bits=0.5)
    kl = torch.tensor([[0.1, 2.0], [0.3, 1.0]])
    assert float(free.penalized_kl(kl)) == pytest.approx(0.5 + 1.5)


def test_autoencoder_is_deterministic_and_vae_is_not() -> None:
    x, _ = batch(tiny("image-ae-mlp"))
    ae, vae = tiny("image-ae-mlp"), tiny("image-vae-mlp")
    assert torch.equal(ae(x)[0], ae(x)[0])
    assert not torch.equal(vae(x)[0], vae(x)[0])


def test_ladder_reports_per_layer_kl_and_active_units() -> None:
    model = tiny("image-ladder5-vae-mlp")
    x, _ = batch(model, n=8)
    _, _, stats = model(x)
    layers = [stats[f"kl_layer{i}"] for i in range(1, 6)]
    assert sum(layers) == pytest.approx(stats["kl"], rel=1e-5)
    assert all(f"active_units_layer{i}" in stats for i in range(1, 6))
    assert [m.shape[1] for m in model.encode(x)] == list(model.config.ladder_dims)
    top_only = model.sample(4, stochastic_from=5)
    assert top_only.shape == (4, 1, 8, 8)


def test_conditional_vae_needs_c_and_its_learned_prior_depends_on_c() -> None:
    model = tiny("image-cvae-prior-mlp")
    x, c = batch(model)
    with pytest.raises(ValueError, match="needs the condition"):
        model(x)
    mu_a, _, _ = model.prior_mixture(model.condition(torch.tensor([0])))
    mu_b, _, _ = model.prior_mixture(model.condition(torch.tensor([1])))
    assert not torch.allclose(mu_a, mu_b)
    single = tiny("image-cvae-prior-mlp", prior_components=1)
    mu_a, _ = single.prior(single.condition(torch.tensor([0])))
    mu_b, _ = single.prior(single.condition(torch.tensor([1])))
    assert not torch.allclose(mu_a, mu_b)
    with pytest.raises(ValueError, match="no single"):
        model.prior(model.condition(torch.tensor([0])))


def test_mixture_prior_cvae_estimates_the_kl_bounds_and_round_trips(tmp_path) -> None:
    model = tiny("image-cvae-prior-mlp", prior_components=3)
    x, c = batch(model)
    mu, logvar, logits = model.prior_mixture(c)
    assert mu.shape == logvar.shape == (3, 3, 4) and logits.shape == (3, 3)
    assert not torch.allclose(mu[0], mu[1])  # the mixture depends on c
    # With three equal components the one-sample KL estimates average to the closed form.
    last = model.prior_net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias[3:].copy_(torch.tensor([0.5, -1.0, 0.0, 2.0, -0.3, 0.2, 0.1, -0.5]).repeat(3))
    q_mu, q_logvar = torch.randn(3, 4), torch.randn(3, 4) * 0.3
    estimate = torch.stack(
        [model.kl(q_mu, q_logvar, model.condition(c)) for _ in range(20_000)]
    ).mean(0)
    exact = kl_normal(
        q_mu, q_logvar, torch.tensor([0.5, -1.0, 0.0, 2.0]), torch.tensor([-0.3, 0.2, 0.1, -0.5])
    )
    torch.testing.assert_close(estimate.squeeze(1), exact.sum(1), atol=0.03, rtol=0.01)
    iwae, elbo = iwae_bound(model, x, 8, c=c)
    assert torch.all(iwae >= elbo)
    assert model.sample(3, c).shape == x.shape
    free = tiny(
        "image-cvae-prior-mlp", prior_components=3, free_bits=0.5
    )  # floor: 4 units * 0.5 nats
    assert float(free.penalized_kl(torch.tensor([[0.5], [1.5]]))) == pytest.approx(2.0)
    assert float(free.penalized_kl(torch.tensor([[3.0], [4.0]]))) == pytest.approx(3.5)
    loaded = vqtok.load(vqtok.save(model, tmp_path / "m"))
    assert loaded.config.prior_components == 3 and loaded.model_id == model.model_id


@pytest.mark.parametrize(
    "preset, changes",
    [
        ("image-cvae-mlp", {}),
        ("image-cvae-prior-mlp", {}),
        ("image-cvae-prior-mlp", {"prior_components": 1}),
        ("image-cvae-conv", {}),
        ("image-cvae-prior-conv", {}),
    ],
)
def test_conditional_samples_follow_their_condition(preset: str, changes: dict) -> None:
    """Four classes, each a bright row of an 8x8 binary image with flipped noise pixels;
    after a short training, samples of class k must look most like template k."""
    torch.manual_seed(0)
    templates = -torch.ones(4, 1, 8, 8)
    for k in range(4):
        templates[k, 0, 2 * k : 2 * k + 2] = 1.0
    network = (
        {"hidden": (64, 32)}
        if preset.endswith("mlp")
        else {"input_size": (8, 8), "widths": (8, 16, 16)}
    )
    model = tiny(preset, num_classes=4, **network, **changes)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        labels = torch.randint(4, (64,))
        noise = torch.where(torch.rand(64, 1, 8, 8) < 0.05, -1.0, 1.0)
        _, losses, _ = model(templates[labels] * noise, labels)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    labels = torch.arange(4).repeat(25)
    samples = model.eval().sample(100, labels)
    nearest = torch.cdist(samples.flatten(1), templates.flatten(1)).argmin(dim=1)
    assert float((nearest == labels).float().mean()) >= 0.9


@pytest.mark.parametrize("preset, expected", [
    ("image-ladder3-vae-mlp", ["layers.png", "reconstructions.png"]),
    ("image-ladder3-vae-conv", ["layers.png", "reconstructions.png"]),
    ("image-cvae-mlp", ["classes.png"]),
    ("image-cvae-prior-conv", ["classes.png"]),
    ("image-ae-mlp", ["reconstructions.png", "samples.png"]),
])
def test_pictures_show_what_each_family_is_about(
    preset: str, expected: list[str], tmp_path
) -> None:
    from PIL import Image

    from vqtok.pipelines.evaluation.vae_pictures import save_vae_pictures

    model = tiny(preset)
    x, _ = batch(model, n=4)
    if model.config.network == "conv":  # conv models draw samples at the inputs' size
        x = x[..., :10, :12]
    paths = save_vae_pictures(model, x, tmp_path)
    assert sorted(p.name for p in paths) == expected
    rows = {"classes.png": model.config.num_classes, "layers.png": len(model.config.ladder_dims)}
    if expected[0] in rows:
        height, width = x.shape[2:]
        with Image.open(
            tmp_path / expected[0]
        ) as picture:  # a row of 8 per class or layer, 2-pixel gaps
            assert picture.size == (2 + 8 * (width + 2), 2 + rows[expected[0]] * (height + 2))
