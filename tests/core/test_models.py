"""VQTokenizer: shapes over every preset and quantizer, gradients, padding, causal video,
overfitting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqtok
from vqtok.models import PRESETS, TokenizerConfig
from vqtok.registry import QUANTIZERS

IMAGES = Path(__file__).parents[1] / "data" / "images"

# Small options per quantizer so that every test model builds and runs in milliseconds.
TINY_QUANTIZER = {
    "vq": {"codebook_size": 32, "usage_window": 1024},
    "rvq": {"codebook_size": 32, "num_levels": 3, "usage_window": 1024},
    "fsq": {"levels": (4, 4, 3)},
}
# Odd spatial sizes (none a multiple of the strides) per modality.
ODD_SIZE = {"audio": (1001,), "image": (19, 27), "video": (10, 19, 13)}


def tiny_model(preset: str, quantizer: str | None = None, **overrides) -> vqtok.VQTokenizer:
    """The preset's architecture with 8-channel stages and a small codebook."""
    config = vqtok.create_model(preset).config
    quantizer = quantizer or config.quantizer
    return vqtok.create_model(
        preset,
        widths=(8,) * len(config.widths),
        latent_dim=8,
        quantizer=quantizer,
        quantizer_options=TINY_QUANTIZER.get(quantizer, {}),
        **overrides,
    )


def sample(model: vqtok.VQTokenizer, batch: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    size = ODD_SIZE[model.config.modality]
    return torch.rand(batch, model.config.channels, *size, generator=generator) * 2 - 1


def expected_codes_shape(model: vqtok.VQTokenizer, x: torch.Tensor) -> tuple[int, ...]:
    levels = (model.num_levels,) if model.num_levels > 1 else ()
    return (x.shape[0], *levels, *model.latent_shape(x.shape[2:]))


@pytest.mark.parametrize("quantizer", QUANTIZERS.names())
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_for_every_preset_and_quantizer(preset: str, quantizer: str) -> None:
    model = tiny_model(preset, quantizer)
    x = sample(model)
    x_hat, losses, stats = model(x)
    assert x_hat.shape == x.shape
    assert "reconstruction" in losses and all(v.dim() == 0 for v in losses.values())
    assert all(isinstance(v, float) for v in stats.values())
    codes = model.encode(x)
    assert codes.dtype == torch.int64
    assert codes.shape == expected_codes_shape(model, x)
    assert 0 <= int(codes.min()) and int(codes.max()) < model.codebook_size
    assert model.decode(codes, size=x.shape[2:]).shape == x.shape


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_have_documented_geometry(preset: str) -> None:
    model = vqtok.create_model(preset)
    config = model.config
    assert config.preset == preset
    assert model.codebook_size == 1024
    params = sum(p.numel() for p in model.parameters())
    assert 2e5 < params < 3e6, f"{preset} has {params} parameters; presets must train on a CPU"
    expected_strides = {
        "audio": (320,),
        "image": (int(preset[-1]) if preset.endswith("8") else 16,) * 2,
        "video": (4, 8, 8),
    }
    assert config.strides == expected_strides[config.modality]


def test_latent_shapes_follow_the_strides() -> None:
    assert tiny_model("audio-vq-16k").latent_shape((16000,)) == (50,)
    assert tiny_model("audio-vq-16k").latent_shape((16001,)) == (51,)
    assert tiny_model("image-vq-f8").latent_shape((64, 65)) == (8, 9)
    assert tiny_model("image-vq-f16").latent_shape((64, 64)) == (4, 4)
    video = tiny_model("video-vq-t4s8")
    assert video.latent_shape((1, 8, 8)) == (1, 1, 1)  # the first frame is coded alone
    assert video.latent_shape((17, 64, 64)) == (5, 8, 8)
    assert video.latent_shape((18, 64, 64)) == (6, 8, 8)


@pytest.mark.parametrize("quantizer", QUANTIZERS.names())
def test_gradient_reaches_the_encoder_through_the_quantizer(quantizer: str) -> None:
    model = tiny_model("image-vq-f8", quantizer)
    x = sample(model)
    _, losses, _ = model(x)
    # Only the reconstruction loss: it reaches the encoder through the straight-through path.
    losses["reconstruction"].backward()
    first = model.encoder.layers[0].conv.weight.grad
    assert first is not None and float(first.abs().sum()) > 0


@pytest.mark.parametrize("quantizer", QUANTIZERS.names())
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_encode_then_decode_equals_forward_in_eval_mode(preset: str, quantizer: str) -> None:
    model = tiny_model(preset, quantizer)
    x = sample(model)
    model(x)  # a training forward initializes the codebook from data
    model.eval()
    with torch.no_grad():
        x_hat, _, _ = model(x)
        decoded = model.decode(model.encode(x), size=x.shape[2:])
    torch.testing.assert_close(decoded, x_hat)


def test_padding_is_cropped_back_and_decode_without_size_keeps_it() -> None:
    model = tiny_model("image-vq-f8").eval()
    x = sample(model)  # 19 x 27 pads to 24 x 32
    codes = model.encode(x)
    assert codes.shape[1:] == (3, 4)
    assert model.decode(codes).shape[2:] == (24, 32)
    full = model.decode(codes)
    torch.testing.assert_close(model.decode(codes, size=(19, 27)), full[:, :, :19, :27])


def test_input_of_wrong_layout_gets_a_clear_error() -> None:
    model = tiny_model("image-vq-f8")
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) with C=3"):
        model.encode(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="image input"):
        model.encode(torch.zeros(3, 16, 16))
    with pytest.raises(TypeError, match="floating point"):
        model.encode(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_video_is_causal_and_codes_the_first_frame_alone() -> None:
    model = tiny_model("video-vq-t4s8").eval()
    x = sample(model, batch=1)  # 10 frames -> 1 + ceil(9 / 4) = 4 latent frames
    changed = x.clone()
    changed[:, :, 5:] = -changed[:, :, 5:]  # frames 5.. only reach latent frames 2..
    with torch.no_grad():
        latent, latent_changed = (model.encoder(model._pad(v)) for v in (x, changed))
    torch.testing.assert_close(latent_changed[:, :, :2], latent[:, :, :2])
    assert not torch.allclose(latent_changed[:, :, 2:], latent[:, :, 2:])
    first_alone = model.encode(x[:, :, :1])
    torch.testing.assert_close(first_alone, model.encode(x)[:, :1])


@pytest.mark.parametrize("quantizer", ["vq", "rvq"])
@pytest.mark.parametrize("chunk_frames", [4, 8])
def test_chunked_video_coding_equals_whole_clip_coding(chunk_frames: int, quantizer: str) -> None:
    model = tiny_model("video-vq-t4s8", quantizer, mid_blocks=0)
    clip = torch.rand(1, 3, 81, 8, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    # Late chunks must start after frame 0, or chunking would not be tested.
    assert model.encoder.time_receptive_field() + chunk_frames < clip.shape[2]
    model(clip)  # initialize the codebook from this clip's latents
    model.eval()
    # Chunks are convolved at other lengths than the whole clip, which moves fp32 sums by an
    # ulp and can flip near-ties deep in residual VQ; an fp64 encoder makes latents that
    # round to the same fp32 values (the quantizer works in fp32), so codes must match exactly.
    model.encoder.double()
    clip = clip.double()
    whole = model.encode(clip)
    assert whole.shape[-3] == 21  # 1 + 80 / 4
    chunked = model.encode_chunked(clip, chunk_frames)
    # Codes that differ must name identical code vectors (rare exact ties between duplicate
    # residual codes were seen once in a loaded run); single-level VQ must match exactly.
    torch.testing.assert_close(model.quantizer.decode(chunked), model.quantizer.decode(whole))
    if quantizer == "vq":
        assert torch.equal(chunked, whole)


def test_encode_chunked_rejects_bad_chunks_and_non_video_models() -> None:
    video = tiny_model("video-vq-t4s8")
    clip = torch.zeros(1, 3, 9, 8, 8)
    with pytest.raises(ValueError, match="multiple of the temporal stride 4"):
        video.encode_chunked(clip, 6)
    with pytest.raises(ValueError, match="causal in time"):
        tiny_model("image-vq-f8").encode_chunked(torch.zeros(1, 3, 8, 8), 4)


def test_overrides_and_config_round_trip_through_json() -> None:
    model = vqtok.create_model("image-vq-f8", widths=(8, 8, 8, 8), quantizer_options={"beta": 0.5})
    config = model.config
    assert config.widths == (8, 8, 8, 8)
    assert config.quantizer_options["beta"] == 0.5
    assert config.quantizer_options["codebook_size"] == 1024  # merged with the preset's options
    assert TokenizerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="unknown tokenizer config keys: depth"):
        vqtok.create_model("image-vq-f8", depth=3)
    with pytest.raises(KeyError, match="unknown model"):
        vqtok.create_model("image-vq-f5")
    with pytest.raises(ValueError, match="widths needs 4 entries"):
        vqtok.create_model("image-vq-f8", widths=(8, 8))


def load_images() -> torch.Tensor:
    """The four 64x64 sample photos as (4, 3, 64, 64) float in [-1, 1]."""
    arrays = [np.array(Image.open(path).convert("RGB")) for path in sorted(IMAGES.glob("*.png"))]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return pixels.float() / 127.5 - 1


def overfit(
    model: vqtok.VQTokenizer, images: torch.Tensor, steps: int, lr: float
) -> tuple[float, float]:
    """Train on ``images`` only; returns (first, last) reconstruction MSE."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    # Without warm-up, Adam's first full-size steps shift every latent alike and the codes
    # collapse onto a few entries (see BENCHMARKS.md, image preset training).
    warmup = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / (steps // 6 + 1))
    )
    history = []
    for _ in range(steps):
        _, losses, _ = model(images)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        warmup.step()
        history.append(losses["reconstruction"].item())
    return history[0], min(history[-5:])


# Overfitting tests the conv stacks, so a plain l2 lookup with one code per token to spare.
OVERFIT_QUANTIZER = {"codebook_size": 256, "codebook_dim": None, "metric": "l2"}


def test_small_image_model_starts_fitting_real_images_fast() -> None:
    # The fast suite's stand-in for the slow test below: 32x32 photos, 4x per side, 60 steps.
    torch.manual_seed(0)  # passes for seeds 0-3 with the warm-up; without it, about half failed
    images = torch.nn.functional.avg_pool2d(load_images(), 2)
    model = vqtok.create_model(
        "image-vq-f8",
        stage_strides=((2, 2), (2, 2)),
        widths=(16, 32, 64),
        quantizer_options=OVERFIT_QUANTIZER,
    )
    first, last = overfit(model, images, steps=60, lr=3e-3)
    assert last < first / 3, (first, last)


@pytest.mark.slow
def test_image_preset_overfits_real_images() -> None:
    model = vqtok.create_model("image-vq-f8", quantizer_options=OVERFIT_QUANTIZER)
    first, last = overfit(model, load_images(), steps=600, lr=2e-3)
    assert last < first / 10, (first, last)


def test_cli_lists_every_preset_with_its_geometry() -> None:
    from typer.testing import CliRunner

    from vqtok.cli.app import app

    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in vqtok.list_models():
        assert name in result.output
    assert "4x8x8" in result.output and "1024 x 4" in result.output
