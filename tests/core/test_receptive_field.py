"""Receptive fields computed from the layers match what the networks actually read.

One output's gradient with respect to the input is nonzero exactly where a change of one
input element would change that output, so its support is the true field; the computed
field must contain it and be reached by it (the bound is tight, not just safe).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import vqtok
from vqtok.models import PRESETS
from vqtok.models.receptive import axis_field

# A tiny architecture per preset: the layer geometry (kernels, strides, dilations, causality)
# is the preset's, only the widths shrink.


def tiny(preset: str, **overrides) -> vqtok.VQTokenizer:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = PRESETS[preset]
        options = {"codebook_size": 16} if config.quantizer != "fsq" else {}
        return vqtok.create_model(
            preset,
            widths=(4,) * len(config.widths),
            latent_dim=4,
            quantizer_options=options,
            **overrides,
        ).eval()


def support(stack: nn.Module, shape: tuple[int, ...], channels: int, at: tuple[int, ...]):
    """Per axis, the (min, max) input index with a nonzero gradient of output ``at``."""
    x = torch.randn(1, channels, *shape, dtype=torch.float64, requires_grad=True)
    stack = stack.double()
    out = stack(x)
    weights = torch.randn(out.shape[1], dtype=torch.float64)  # no cancelling channel sum
    (out[(0, slice(None), *at)] * weights).sum().backward()
    reached = x.grad[0].abs().sum(dim=0) != 0
    spans = []
    for axis in range(len(shape)):
        others = tuple(a for a in range(len(shape)) if a != axis)
        hit = reached.any(dim=others) if others else reached
        index = hit.nonzero().flatten()
        spans.append((int(index.min()), int(index.max())))
    return spans


def interior_shape(model: vqtok.VQTokenizer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An encoder input shape and a latent position whose field lies inside it."""
    shape, at = [], []
    for axis, s in enumerate(model.config.strides):
        field = axis_field(model.encoder, axis)
        left = math.ceil(field.left / s) + 1
        right = math.ceil(field.right / s) + 1
        causal = axis == 0 and model.config.causal_time
        shape.append((left + right + 1) * s + (1 if causal else 0))
        at.append(left)
    return tuple(shape), tuple(at)


@pytest.mark.parametrize("preset", ["audio-vq-16k", "image-vq-f16", "video-vq-t4s8"])
def test_encoder_field_is_exactly_the_inputs_an_output_reads(preset: str) -> None:
    model = tiny(preset)
    shape, at = interior_shape(model)
    if model.config.dims == 3:
        shape = (shape[0], 17, 17)  # time only here: the spatial axes are image-vq-f8's
        at = (at[0], 1, 1)
    spans = support(model.encoder, shape, model.config.channels, at)
    for axis, (lo, hi) in enumerate(spans[: 1 if model.config.dims == 3 else None]):
        want = axis_field(model.encoder, axis).inputs(at[axis], at[axis])
        assert (lo, hi + 1) == want, axis
        assert 0 < want[0] and want[1] < shape[axis]  # the field is inside: no border


def test_encoder_spatial_fields_of_video_match_the_image_stack() -> None:
    video, image = tiny("video-vq-t4s8"), tiny("image-vq-f8")
    assert axis_field(video.encoder, 1) == axis_field(image.encoder, 0)
    assert axis_field(video.encoder, 2) == axis_field(image.encoder, 1)
    # The causal time axis reads nothing to the right.
    assert axis_field(video.encoder, 0).right == 0
    assert axis_field(video.encoder, 0).size == video.encoder.time_receptive_field()


@pytest.mark.parametrize("preset", ["audio-vq-16k", "image-vq-f8", "video-vq-t4s8"])
def test_decoder_field_contains_and_reaches_the_outputs_one_code_changes(preset: str) -> None:
    model = tiny(preset).double()
    dims = model.config.dims
    fields = [axis_field(model.decoder, axis) for axis in range(dims)]
    latent = [2 * math.ceil(f.left) + 2 * math.ceil(f.right) + 5 for f in fields]
    axes = range(dims)
    if dims == 3:
        latent[1:], axes = [3, 3], range(1)  # time only here: the spatial axes are image's
    at = tuple(n // 2 for n in latent)
    z = torch.randn(1, model.config.latent_dim, *latent, dtype=torch.float64)
    moved = z.clone()
    moved[(0, slice(None), *at)] += torch.randn(model.config.latent_dim, dtype=torch.float64)
    with torch.no_grad():
        changed = (model.decoder(moved) != model.decoder(z))[0].any(dim=0)
    for axis in axes:
        stride = model.config.strides[axis]
        others = tuple(a for a in range(dims) if a != axis)
        hit = (changed.any(dim=others) if others else changed).nonzero().flatten().tolist()
        # The outputs whose computed field holds the changed code position.
        spans = [fields[axis].inputs(o, o) for o in range(changed.shape[axis])]
        predicted = [o for o, (lo, hi) in enumerate(spans) if lo <= at[axis] < hi]
        assert set(hit) <= set(predicted), axis
        # Tight up to the rounding of the upsamplings: less than one code position's worth.
        assert 0 <= min(hit) - min(predicted) < stride, axis
        assert 0 <= max(predicted) - max(hit) < stride, axis


def test_unknown_layers_are_refused_rather_than_guessed() -> None:
    with pytest.raises(TypeError, match="no receptive-field rule for Linear"):
        axis_field(nn.Sequential(nn.Linear(2, 2)), 0)
