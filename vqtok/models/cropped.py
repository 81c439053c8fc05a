"""Run a decoder on one tile, keeping after each layer only what the wanted outputs need.

A decoder's receptive field is wide in code units (video-vq-t4s8: about 21 latent frames
and 16 latent rows), so a tile must read many codes around its outputs; computing every
layer over all of them would spend most of the work on full-resolution halo that no kept
output reads. After each top-level layer the activation is cut down to the positions the
remaining layers need for the tile's outputs (``receptive.axis_field`` of the rest), clipped
to the whole decode's extent. The cut edges are then zero-padded by the next convolution,
but by construction only positions outside the next cut read them, so the kept outputs are
the whole decode's. The decoder's layers have stride 1 except the nearest upsamplings, which
keep any start's phase (a start g maps to g * s), so cuts may start anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor, nn

from vqtok.models.conv import Upsample
from vqtok.models.receptive import IDENTITY, AxisField, axis_field
from vqtok.models.tiling import AxisPiece


@dataclass(frozen=True)
class LayerStep:
    """One top-level layer and the receptive field of the layers after it (per axis)."""

    layer: nn.Module
    rest: tuple[AxisField, ...]
    upsample: tuple[int, ...]
    causal_time: bool


def steps(decoder: nn.Module, dims: int) -> list[LayerStep]:
    """The decoder's top-level layers with the fields of what follows each.

    Args:
        decoder: A ``Decoder`` (a module with a ``layers`` sequence).
        dims: Number of spatial axes.

    Returns:
        One step per layer, in order.

    Raises:
        ValueError: A layer other than an upsampling changes the resolution.
    """
    layers = list(decoder.layers)
    rest = [IDENTITY] * dims
    out: list[LayerStep] = []
    for layer in reversed(layers):
        fields = [axis_field(layer, a) for a in range(dims)]
        if isinstance(layer, Upsample):
            up, causal = layer.stride, layer.causal_time
        elif all(f.jump == 1 for f in fields):
            up, causal = (1,) * dims, False
        else:
            raise ValueError(f"{type(layer).__name__} changes resolution; cannot crop after it")
        out.append(LayerStep(layer, tuple(rest), tuple(up), causal))
        rest = [f.then(r) for f, r in zip(fields, rest, strict=True)]
    return out[::-1]


def _grow(start: int, length: int, s: int, causal: bool) -> tuple[int, int]:
    """(start, length) of a span after a nearest upsampling by ``s``."""
    return start * s, (1 + (length - 1) * s) if causal else length * s


def regions(
    plan: Sequence[LayerStep],
    start: Sequence[int],
    stop: Sequence[int],
    latent: Sequence[int],
    want: Sequence[tuple[int, int]],
) -> list[list[tuple[int, int]]]:
    """Per layer, the [lo, hi) kept of its output on each axis, in that layer's units.

    Args:
        plan: ``steps(decoder, dims)``.
        start, stop: The box of codes read, per axis.
        latent: The whole code grid's spatial shape.
        want: [first, stop) per axis of the outputs wanted.

    Returns:
        One list of per-axis spans per layer; the last is ``want`` itself.
    """
    span = [(a, b - a) for a, b in zip(start, stop, strict=True)]  # (first, length) per axis
    whole = list(latent)
    out = []
    for step in plan:
        kept = []
        for a, s in enumerate(step.upsample):
            first, length = span[a]
            if s > 1:
                causal = step.causal_time and a == 0
                first, length = _grow(first, length, s, causal)
                whole[a] = _grow(0, whole[a], s, causal)[1]
            lo, hi = step.rest[a].inputs(want[a][0], want[a][1] - 1)
            lo, hi = max(lo, 0, first), min(hi, whole[a], first + length)
            span[a] = (lo, hi - lo)
            kept.append((lo, hi))
        out.append(kept)
    return out


def decode_tile(
    plan: Sequence[LayerStep],
    z: Tensor,
    start: Sequence[int],
    latent: Sequence[int],
    want: Sequence[tuple[int, int]],
) -> Tensor:
    """The decoder's outputs ``want`` (a box of the whole output) from latents ``z``.

    Args:
        plan: ``steps(decoder, dims)``.
        z: (1, D, *box) float: the latents of a box starting at ``start`` in code units,
            covering the receptive field of ``want`` (clipped to the codes).
        start: The box's first code position per axis.
        latent: The whole code grid's spatial shape.
        want: [first, stop) per axis of the outputs to return.

    Returns:
        (1, C, *(stop - first)) float, equal to that box of the whole decode.
    """
    stop = [a + n for a, n in zip(start, z.shape[2:], strict=True)]
    h, first = z, list(start)
    for step, kept in zip(plan, regions(plan, start, stop, latent, want), strict=True):
        h = step.layer(h)
        for a, s in enumerate(step.upsample):
            first[a] *= s
            lo, hi = kept[a]
            h = h.narrow(2 + a, lo - first[a], hi - lo)
            first[a] = lo
    return h


def _macs(layer: nn.Module) -> int:
    """Multiply-adds per output position of a layer's convolutions."""
    convs = [m for m in layer.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    return sum(c.in_channels * c.out_channels * math.prod(c.kernel_size) for c in convs)


def axis_extents(
    plan: Sequence[LayerStep], pieces: Sequence[Sequence[AxisPiece]], latent: Sequence[int]
) -> list[list[list[int]]]:
    """Per axis, per piece on it, per layer: the positions kept on that axis.

    Axes are independent (the cuts on one axis do not move those on another), so a tile's
    region at a layer is the product of its pieces' extents.
    """
    dims = len(latent)
    out = []
    for a in range(dims):
        per_piece = []
        for p in pieces[a]:
            tile = [p if b == a else pieces[b][0] for b in range(dims)]
            spans = regions(
                plan,
                [t.read[0] for t in tile],
                [t.read[1] for t in tile],
                latent,
                [t.write for t in tile],
            )
            per_piece.append([hi - lo for lo, hi in (layer[a] for layer in spans)])
        out.append(per_piece)
    return out


def compute_ratio(
    plan: Sequence[LayerStep],
    pieces: Sequence[Sequence[AxisPiece]],
    latent: Sequence[int],
    full: Sequence[int],
) -> float:
    """Multiply-adds of a tiled decode over those of the whole decode.

    Args:
        plan: ``steps(decoder, dims)``.
        pieces: The decoder pieces per axis (``tiling.decoder_axis``).
        latent: The code grid's spatial shape.
        full: The whole decode's output shape (before its crop).

    Returns:
        The ratio; below 1 is possible where the tiles skip outputs cropped away anyway.
    """
    whole = [[AxisPiece((0, n), (0, m), (0, m))] for n, m in zip(latent, full, strict=True)]
    tiled, full = axis_extents(plan, pieces, latent), axis_extents(plan, whole, latent)
    work = base = 0
    for layer, step in enumerate(plan):
        macs = _macs(step.layer)
        work += macs * math.prod(sum(e[layer] for e in axis) for axis in tiled)
        base += macs * math.prod(axis[0][layer] for axis in full)
    return work / base
