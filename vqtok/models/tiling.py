"""Where each piece of a tiled encode or decode reads, and which of its outputs it keeps.

An axis is cut into pieces of ``piece`` latent positions. A piece reads its inputs with the
halo its receptive field needs, starts on a multiple of the total stride (so that every
strided layer sees the same phase as on the whole input), and keeps only the outputs whose
whole field it read. Outputs near a cut are computed twice (once in each piece, the copy in
the piece that lacks their context being thrown away): that is the halo's extra compute.
At the true borders a piece reads exactly what the whole input gives the network (the
trailing replicate padding of ``pad_to_multiple``, then each conv's zero padding), so its
kept outputs are the whole input's outputs.

Index arithmetic, and the read of one encoder tile; the tokenizer runs the pieces.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

from vqtok.models.receptive import AxisField


@dataclass(frozen=True)
class AxisPiece:
    """One piece along one axis.

    read: [start, stop) of the network's input to read (encoder: of the padded input, which
        may pass the data's end, filled by replication; decoder: of the codes).
    keep: [start, stop) of the piece's output to keep.
    write: [start, stop) of the whole output that ``keep`` fills.
    """

    read: tuple[int, int]
    keep: tuple[int, int]
    write: tuple[int, int]


@runtime_checkable
class Source(Protocol):
    """An input read box by box instead of held whole (e.g. video decoded as it is read).

    ``shape`` is (1, C, *spatial) and ``dtype`` a float dtype; ``read`` gives what
    ``replicate_read`` gives of the whole input. A tiled encode reads boxes in time order:
    a box never starts before the start of an earlier box, so a source may forget what lies
    before it.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype

    def read(self, reads: Sequence[tuple[int, int]]) -> Tensor:
        """(1, C, *(stop - start)) float: the box ``reads`` of the padded input."""
        ...


def _valid_length(length: int, stride: int, causal: bool) -> int:
    """The smallest input length >= ``length`` that the strides divide exactly."""
    if causal:
        return 1 + stride * -(-(length - 1) // stride)
    return stride * -(-length // stride)


def encoder_axis(
    padded: int, stride: int, causal: bool, field: AxisField, piece: int
) -> list[AxisPiece]:
    """Pieces along one axis of an encoder whose padded input has ``padded`` positions.

    Args:
        padded: The axis length after ``pad_to_multiple``.
        stride: The encoder's total stride on the axis (``field.jump``).
        causal: The axis is a causal time axis (``padded`` is then 1 + a multiple of stride).
        field: The encoder's receptive field on the axis.
        piece: Latent positions per piece (>= 1).

    Returns:
        The pieces, in order; their writes tile the latent axis.
    """
    total = 1 + (padded - 1) // stride if causal else padded // stride
    pieces = []
    for first in range(0, total, piece):
        last = min(first + piece, total) - 1
        lo, hi = field.inputs(first, last)
        # Start on a multiple of the stride so each strided conv keeps its phase.
        lo = max(0, lo) // stride * stride
        hi = min(padded, lo + _valid_length(max(hi, lo + 1) - lo, stride, causal))
        offset = lo // stride
        pieces.append(AxisPiece((lo, hi), (first - offset, last + 1 - offset), (first, last + 1)))
    return pieces


def output_start(latent: int, stride: int, causal: bool) -> int:
    """The first decoder output that latent position ``latent`` is the nearest source of."""
    if causal:
        return 0 if latent == 0 else (latent - 1) * stride + 1
    return latent * stride


def decoder_axis(
    latent: int, stride: int, causal: bool, field: AxisField, piece: int, size: int
) -> list[AxisPiece]:
    """Pieces along one axis of a decoder given ``latent`` code positions.

    Args:
        latent: Code positions on the axis.
        stride: The decoder's total upsampling on the axis (``1 / field.jump``).
        causal: The axis is a causal time axis.
        field: The decoder's receptive field on the axis, in latent units.
        piece: Latent positions' worth of output per piece (>= 1).
        size: Outputs wanted: the crop size, at most the decoder's full output.

    Returns:
        The pieces, in order; their writes tile [0, size).
    """
    bounds = [output_start(a, stride, causal) for a in range(0, latent, piece)]
    bounds = [b for b in bounds if b < size] + [size]
    pieces = []
    for first, stop in itertools.pairwise(bounds):
        lo, hi = field.inputs(first, stop - 1)
        lo, hi = max(0, lo), min(latent, hi)
        # Piece output o is whole output o + lo * stride (the upsampling keeps phase).
        offset = lo * stride
        pieces.append(AxisPiece((lo, hi), (first - offset, stop - offset), (first, stop)))
    return pieces


def tiles(axes: Sequence[list[AxisPiece]]) -> Iterator[tuple[AxisPiece, ...]]:
    """Every combination of one piece per axis, the first axis outermost."""
    return itertools.product(*axes)


def read_volume(axes: Sequence[list[AxisPiece]]) -> int:
    """Input positions read by all tiles together (the halo counted each time)."""
    return math.prod(sum(p.read[1] - p.read[0] for p in axis) for axis in axes)


def replicate_read(x: Tensor, reads: Sequence[tuple[int, int]]) -> Tensor:
    """The ``reads`` box of ``pad_to_multiple(x)`` without padding all of ``x``.

    Args:
        x: (B, C, *spatial) float, the unpadded input.
        reads: [start, stop) per spatial axis, in padded coordinates (stop may pass the end).

    Returns:
        (B, C, *(stop - start)) float: the data there, the part past the end filled by
        replicating the last position (the box never starts past it by more than the
        padding, so replication of the last position is what the whole input has there).
    """
    index: list[slice] = [slice(None), slice(None)]
    pads: list[int] = []
    for (lo, hi), n in zip(reads, x.shape[2:], strict=True):
        start = min(lo, n - 1)
        index.append(slice(start, min(hi, n)))
        pads = [0, (hi - lo) - (min(hi, n) - start)] + pads
    clip = x[tuple(index)]
    return F.pad(clip, pads, mode="replicate") if any(pads) else clip
