"""The ladder VAE and the conditional VAE on 1D, 2D and 3D conv inputs of any size."""

from __future__ import annotations

import pytest
import torch

import vqtok
from vqtok.models.bounds import iwae_bound
from vqtok.models.conv import padded_shape
from vqtok.models.vae_config import VAEConfig
from vqtok.models.vae_nets import downsampled
from vqtok.models.vae_presets import build_latent_model

# Tiny stacks with odd input sizes (not multiples of the strides): video has a causal time axis.
GEOMETRY = {
    "audio": {
        "channels": 1,
        "input_size": (30,),
        "stage_strides": ((2,), (2,)),
        "likelihood": "gaussian",
        "sigma": 0.3,
    },
    "image": {
        "channels": 1,
        "input_size": (11, 13),
        "stage_strides": ((2, 2), (2, 2)),
        "likelihood": "bernoulli",
    },
    "video": {
        "channels": 3,
        "input_size": (5, 6, 7),
        "stage_strides": ((1, 2, 2), (2, 2, 2)),
        "causal_time": True,
        "likelihood": "logistic",
    },
}
FAMILY = {
    "ladder": {"ladder_dims": (2, 3)},
    "cvae": {"latent_dim": 2, "num_classes": 3},
}
OTHER_SIZE = {"audio": (17,), "image": (9, 20), "video": (9, 5, 12)}
CASES = [(family, modality) for family in FAMILY for modality in GEOMETRY]


def model_for(family: str, modality: str, **changes) -> vqtok.models.vae.LatentModel:
    config = VAEConfig(
        preset=f"test-{family}-{modality}",
        family=family,
        modality=modality,
        network="conv",
        widths=(8, 8, 8),
        **{**GEOMETRY[modality], **FAMILY[family], **changes},
    )
    return build_latent_model(config)


def batch(model, n: int = 4, size=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Inputs x: (n, C, *size) on the likelihood's support, and labels for a CVAE."""
    config = model.config
    g = torch.Generator().manual_seed(0)
    x = (
        torch.round(torch.rand(n, config.channels, *(size or config.input_size), generator=g) * 255)
        / 127.5
        - 1
    )
    if config.likelihood == "bernoulli":
        x = torch.where(x > 0, 1.0, -1.0)
    c = torch.arange(n) % config.num_classes if config.family == "cvae" else None
    return x, c


def run(model, x, c):
    return model(x) if c is None else model(x, c)


@pytest.mark.parametrize("family, modality", CASES)
def test_forward_gives_shapes_and_a_negative_elbo_of_nll_plus_kl(
    family: str, modality: str
) -> None:
    torch.manual_seed(0)
    model = model_for(family, modality)
    x, c = batch(model)
    x_hat, losses, stats = run(model, x, c)
    assert x_hat.shape == x.shape
    assert set(losses) == {"nll", "kl"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters()
        if p.requires_grad
    )
    assert stats["kl_weight"] == 1.0
    assert float((losses["nll"] + losses["kl"]).detach()) == pytest.approx(-stats["elbo"], rel=1e-5)
    if family == "ladder":
        layer_kls = [stats[f"kl_layer{i}"] for i in (1, 2)]
        assert sum(layer_kls) == pytest.approx(stats["kl"], rel=1e-5) and min(layer_kls) > 0
        assert {"active_units_layer1", "active_units_layer2"} <= set(stats)


@pytest.mark.parametrize("family, modality", CASES)
def test_analytic_elbo_matches_the_importance_weights_and_iwae_bounds_it(
    family: str, modality: str
) -> None:
    """The forward pass's closed-form KLs and the Monte Carlo log weights log p(x,z) - log q(z|x)
    estimate the same ELBO; the IWAE bound lies above it for every input and rises with K."""
    torch.manual_seed(0)
    model = model_for(family, modality).eval()
    x, c = batch(model, n=2)
    copies = 256
    xs, cs = x.repeat(copies, *[1] * (x.dim() - 1)), None if c is None else c.repeat(copies)
    with torch.no_grad():  # the same seed draws the same z in both, so only the KL estimates differ
        torch.manual_seed(1)
        elbo = run(model, xs, cs)[2]["elbo"]
        torch.manual_seed(1)
        weights = model.log_importance_weights(xs, 1, cs)
    assert abs(float(weights.mean()) - elbo) < 4 * float(weights.std()) / weights.numel() ** 0.5
    iwae, elbo_per_input = iwae_bound(model, x, copies, c=c)
    assert torch.all(iwae >= elbo_per_input)
    iwae_few, _ = iwae_bound(model, x, 2, c=c)
    assert float(iwae.mean()) > float(iwae_few.mean())


@pytest.mark.parametrize("family, modality", CASES)
def test_samples_and_latents_take_any_size(family: str, modality: str) -> None:
    model = model_for(family, modality).eval()
    config, size = model.config, OTHER_SIZE[modality]
    if family == "ladder":
        for layer in (1, 2):
            assert model.sample(3, stochastic_from=layer, size=size).shape == (
                3,
                config.channels,
                *size,
            )
        padded = padded_shape(size, config.strides, config.causal_time)  # every stage divides it
        grids = [
            downsampled(padded, strides, config.causal_time)
            for strides in (config.stage_strides[0], config.strides)
        ]
        assert model.generate(3, size=size).shape == (3, config.ladder_dims[0], *grids[0])
        x, _ = batch(model, n=2, size=size)
        assert [tuple(m.shape) for m in model.encode(x)] == [
            (2, d, *g) for d, g in zip(config.ladder_dims, grids, strict=True)
        ]
    else:
        samples = model.sample(3, torch.tensor([0, 1, 2]), size=size)
        assert samples.shape == (3, config.channels, *size)
        assert model.latent_shape(size) == (
            config.latent_dim,
            *downsampled(size, config.strides, config.causal_time),
        )


@pytest.mark.parametrize("family, modality", CASES)
def test_a_few_training_steps_lower_the_loss_on_a_fixed_batch(family: str, modality: str) -> None:
    torch.manual_seed(0)
    model = model_for(family, modality)
    x, c = batch(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        return sum(run(model, x, c)[1].values())

    torch.manual_seed(1)
    before = float(loss().detach())
    for _ in range(25):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    torch.manual_seed(1)
    assert float(loss().detach()) < 0.95 * before


def test_the_learned_conv_prior_depends_on_c_and_is_shared_by_positions() -> None:
    model = model_for("cvae", "image", learned_prior=True)
    mu, logvar = model.prior(model.condition(torch.tensor([0, 1])))
    assert mu.shape == logvar.shape == (2, 2, 1, 1)
    assert not torch.allclose(mu[0], mu[1])
    z = model.sample_prior(2, torch.tensor([0, 1]), size=(9, 20))
    assert z.shape == (2, *model.latent_shape((9, 20)))


@pytest.mark.parametrize(
    "family, modality", [("ladder", "video"), ("cvae", "image"), ("cvae", "audio")]
)
def test_conv_models_round_trip_through_checkpoints(family: str, modality: str, tmp_path) -> None:
    model = model_for(family, modality, learned_prior=family == "cvae").eval()
    loaded = vqtok.load(vqtok.save(model, tmp_path / "m"))
    assert (
        type(loaded) is type(model)
        and loaded.config == model.config
        and loaded.model_id == model.model_id
    )
    x, c = batch(model)
    outputs = []
    for net in (model, loaded):
        torch.manual_seed(0)
        with torch.no_grad():
            x_hat, losses, _ = run(net, x, c)
        outputs.append((x_hat, {k: float(v) for k, v in losses.items()}))
    torch.testing.assert_close(outputs[0][0], outputs[1][0], rtol=0, atol=0)
    assert outputs[0][1] == outputs[1][1]


@pytest.mark.parametrize("changes, message", [
    ({"family": "ladder", "ladder_dims": (2, 3, 4)}, "one stochastic layer per stage"),
    ({"family": "ladder", "ladder_dims": (2,)}, "at least 2 positive ladder_dims"),
    ({"family": "ladder", "network": "linear", "ladder_dims": (2, 3)}, "mlp or conv"),
    ({"family": "cvae", "num_classes": 1}, "num_classes >= 2"),
    ({"family": "cvae", "num_classes": 3, "learned_prior": True, "prior_components": 2}, "flat"),
    ({"prior_components": 0}, "prior_components must be >= 1"),
    ({"stage_strides": ((2,), (2,))}, "2-tuples"),
])
def test_bad_conv_configs_fail_with_a_clear_message(changes: dict, message: str) -> None:
    base = {
        "preset": "bad",
        "modality": "image",
        "network": "conv",
        "stage_strides": ((2, 2), (2, 2)),
        "widths": (8, 8, 8),
    }
    with pytest.raises(ValueError, match=message):
        VAEConfig(**{**base, **changes})


def test_conditions_must_fit_the_model() -> None:
    model = model_for("cvae", "image")
    x, _ = batch(model, n=2)
    with pytest.raises(ValueError, match="0..2"):
        model(x, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match=r"vectors \(B, 3\)"):
        model(x, torch.ones(2, 4))
