"""A memory planner: piece sizes for ``VQTokenizer.encode_tiled`` and ``decode_tiled`` that
keep peak activation memory under a byte budget.

The footprint is computed from the layers: walking the encoder (or decoder), each layer's
output holds ``channels / prod(jump)`` values per input position (``jump`` being its
resolution relative to the input, from ``vqtok.models.receptive``). Without autograd, only
what one layer needs is alive at once: its input, the skip input of a residual block, a
padded copy for an uneven (causal) pad, oneDNN's reorders of a conv's input and output into
its blocked layout, the output, and for strided 3D convs oneDNN's scratch. The peak is the
largest of these sums, per position, times the element size and ``LIVE_FACTOR``.

Measured on the CPU in fp32 (peak RSS above the baseline, one thread), whole passes peaked
at 0.82 to 0.91 of the computed figure for every preset, encode and decode, from 17x240x320
video to 20 s of audio; a cropped video decode tile at 1.24 of it (narrowed views copied by
the convolutions). ``LIVE_FACTOR`` covers that with headroom (docs/memory.md).

What the budget bounds: memory the call adds on top of its input and its result (the
codes, or the decoded media, which the caller holds anyway; ``decode_slabs`` streams the
latter). Model weights are not counted.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from vqtok.models.conv import PaddedConv, ResidualBlock, Upsample, padded_shape
from vqtok.models.cropped import regions, steps
from vqtok.models.receptive import axis_field

# Measured peak over computed live values: at most 0.91 for whole passes, 1.24 for cropped
# decode tiles; 1.5 leaves headroom for allocator slack and thread-local scratch.
LIVE_FACTOR = 1.5


class BudgetError(ValueError):
    """Not even the smallest piece fits in the budget; the message names both sizes."""


@dataclass(frozen=True)
class Plan:
    """How to run one pass within a budget.

    piece: Latent positions per piece on each axis; None on an axis means whole.
    samples: Samples per pass through the network.
    peak_bytes: The planner's estimate of the pass's peak extra memory.
    """

    piece: tuple[int | None, ...]
    samples: int
    peak_bytes: int

    @property
    def whole(self) -> bool:
        """True when no axis is cut: ``encode``/``decode`` can run as they are."""
        return all(p is None for p in self.piece)


def layer_live(stack: nn.Module, dims: int) -> list[tuple[Fraction, Fraction]]:
    """Per top-level layer of ``stack``: (values alive at once while it runs, per input
    position of the stack; the product of its output's jumps, i.e. stack input positions
    per output position).

    Args:
        stack: A module with a ``layers`` sequence of the conv-stack layers.
        dims: Number of spatial axes.

    Returns:
        One pair per layer, in order.
    """
    jump = [Fraction(1)] * dims
    density = Fraction(_first_channels(stack))
    out = []
    for layer in stack.layers:
        before = math.prod(jump)
        jump = [j * axis_field(layer, a).jump for a, j in enumerate(jump)]
        live, density = _layer_live(layer, density, before, math.prod(jump))
        out.append((live, math.prod(jump)))
    return out


def values_per_position(stack: nn.Module, dims: int) -> float:
    """Peak live values per input position of ``stack`` (an Encoder or Decoder) run over a
    whole input, before ``LIVE_FACTOR``: the largest over its layers (see ``layer_live``).

    Args:
        stack: A module with a ``layers`` sequence of the conv-stack layers.
        dims: Number of spatial axes.

    Returns:
        Values per input position (per code position for a decoder).
    """
    return float(max(live for live, _ in layer_live(stack, dims)))


def _layer_live(
    layer: nn.Module, density: Fraction, before: Fraction, after: Fraction
) -> tuple[Fraction, Fraction]:
    """(values alive at once while ``layer`` runs, its output's values), per input position.

    ``density`` is the layer input's values per input position; ``before`` and ``after``
    are the products of the jumps at its input and output.
    """
    convs = _convs(layer)
    out = Fraction(convs[-1].out_channels) / after if convs else density
    if isinstance(layer, ResidualBlock):
        # The skip input, the activation, and a conv's input and output (each twice).
        return density + _conv_live(layer.body[-1], density, density, before), out
    if isinstance(layer, Upsample):
        # The low-resolution input, then a conv over its repeat at the output resolution.
        repeated = Fraction(convs[0].in_channels) / after
        return density + _conv_live(layer.conv, repeated, out, after), out
    if isinstance(layer, PaddedConv):
        return _conv_live(layer, density, out, after), out
    return 2 * density + out, out  # a norm's temporaries, or an activation


def _conv_live(conv: PaddedConv, density: Fraction, out: Fraction, after: Fraction) -> Fraction:
    """Values alive while a conv runs: its input, a padded copy where it pads unevenly
    (causal time), oneDNN's reorders of input and output into its blocked layout, the output,
    and for a strided 3D conv the scratch of the unfolded input (measured: about half of the
    C_in * prod(kernel) values per output position; 1D and 2D convs run without)."""
    copy = density if conv.padding else 0
    scratch = Fraction(0)
    if conv.conv.weight.dim() == 5 and any(s > 1 for s in conv.stride):
        scratch = Fraction(conv.conv.in_channels * math.prod(conv.kernel), 2) / after
    return 2 * density + copy + 2 * out + scratch


def _convs(layer: nn.Module) -> list[nn.modules.conv._ConvNd]:
    return [m for m in layer.modules() if isinstance(m, nn.modules.conv._ConvNd)]


def _first_channels(stack: nn.Module) -> int:
    for module in stack.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            return module.in_channels
    raise TypeError(f"{type(stack).__name__} has no convolution")


def pass_bytes(
    model: nn.Module, part: str, piece_shape: Sequence[int], samples: int, dtype: torch.dtype
) -> int:
    """Estimated peak extra bytes of one pass over a piece.

    Args:
        model: A ``VQTokenizer``.
        part: "encode" (``piece_shape`` in padded input positions) or "decode" (in code
            positions).
        piece_shape: The spatial shape the network is given.
        samples: Samples in the pass.
        dtype: The activations' dtype.

    Returns:
        Bytes.
    """
    stack = model.encoder if part == "encode" else model.decoder
    per_position = values_per_position(stack, model.config.dims)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return int(LIVE_FACTOR * per_position * itemsize * samples * math.prod(piece_shape))


def plan(
    model: nn.Module,
    shape: Sequence[int],
    max_bytes: int,
    part: str = "encode",
    dtype: torch.dtype = torch.float32,
    limit: Sequence[int | None] | None = None,
) -> Plan:
    """Pick piece sizes and samples per pass so one pass stays under ``max_bytes``.

    Whole inputs are preferred (all samples at once, then fewer samples at once); only when
    one whole sample does not fit is the input cut, by halving the piece on the axis whose
    read extent (halo included) is largest until it fits. The time axis of causal video is
    cut like any other: the halo makes each cut cost the same on every axis.

    ``limit`` caps the piece per axis on top of the budget: a caller that streams the input
    in (or the output out) along time holds only one piece's worth of it.

    Args:
        model: A ``VQTokenizer``.
        shape: (B, C, *spatial): the input's shape (for "decode", the media's shape too).
        max_bytes: The budget for the pass's extra memory, in bytes.
        part: "encode" or "decode".
        dtype: The activations' dtype.
        limit: The most latent positions per piece on each axis (None: no cap), or None.

    Returns:
        The plan.

    Raises:
        BudgetError: Even one latent position per axis of one sample does not fit.
        ValueError: ``part`` is neither "encode" nor "decode".
    """
    if part not in ("encode", "decode"):
        raise ValueError(f"part must be 'encode' or 'decode', got {part!r}")
    batch, spatial = shape[0], tuple(shape[2:])
    latent = model.latent_shape(spatial)
    limit = [None] * len(latent) if limit is None else list(limit)
    caps = [n if c is None else max(1, min(n, c)) for n, c in zip(latent, limit, strict=True)]
    whole = _read_shape(model, part, spatial, [None] * len(latent))
    one = pass_bytes(model, part, whole, 1, dtype)
    if one <= max_bytes and caps == list(latent):
        samples = max(1, min(batch, max_bytes // max(one, 1)))
        return Plan((None,) * len(latent), samples, one * samples)
    if part == "encode":
        best = _least_halo(model, spatial, latent, max_bytes, dtype, caps)
        if best is not None:
            return best
    piece = list(caps)
    while True:
        reads = _read_shape(model, part, spatial, piece)
        if part == "encode":
            need = pass_bytes(model, part, reads, 1, dtype)
        else:
            need = _decode_bytes(model, spatial, piece, dtype)
        if need <= max_bytes:
            return Plan(tuple(piece), 1, need)
        cuttable = [a for a in range(len(piece)) if piece[a] > 1]
        if not cuttable:
            raise BudgetError(
                f"{part} of a {'x'.join(map(str, spatial))} input needs at least "
                f"{need / 2**20:.0f} MiB even in pieces of one code position "
                f"(budget {max_bytes / 2**20:.0f} MiB)"
            )
        axis = max(cuttable, key=lambda a: reads[a])
        piece[axis] = -(-piece[axis] // 2)


def _least_halo(
    model: nn.Module,
    spatial: Sequence[int],
    latent: Sequence[int],
    max_bytes: int,
    dtype: torch.dtype,
    caps: Sequence[int],
) -> Plan | None:
    """The encoder pieces that fit with the least halo compute, among whole axes and
    halvings of them (at most 4096 pieces per axis, at most ``caps`` positions per piece);
    None when none fits.

    Axes are independent, so each axis's pieces are laid out once per candidate size and
    combined: the widest read per axis sets the memory, the reads' sums the compute.
    """
    padded = padded_shape(tuple(spatial), model.config.strides, model.config.causal_time)
    options = []
    for axis, n in enumerate(latent):
        sizes = sorted({-(-n // 2**k) for k in range(n.bit_length() + 1)} - {0})
        if caps[axis] < n:
            sizes = sorted({s for s in sizes if s <= caps[axis]} | {caps[axis]})
        per_axis = []
        for size in sizes:
            if -(-n // size) > 4096:
                continue
            piece = [None] * len(latent)
            piece[axis] = size
            pieces = model._encoder_pieces(spatial, piece)[axis]
            reads = [p.read[1] - p.read[0] for p in pieces]
            per_axis.append((size, max(reads), sum(reads) / padded[axis], len(pieces)))
        options.append(per_axis)
    itemsize = torch.empty(0, dtype=dtype).element_size()
    per_position = LIVE_FACTOR * values_per_position(model.encoder, len(latent)) * itemsize
    best: tuple[float, int, Plan] | None = None
    for combo in itertools.product(*options):
        need = int(per_position * math.prod(c[1] for c in combo))
        if need > max_bytes:
            continue
        key = (math.prod(c[2] for c in combo), math.prod(c[3] for c in combo))
        if best is None or key < best[:2]:
            best = (*key, Plan(tuple(c[0] for c in combo), 1, need))
    return None if best is None else best[2]


def _read_shape(
    model: nn.Module, part: str, spatial: Sequence[int], piece: Sequence[int | None]
) -> list[int]:
    """The largest read extent per axis of a piece (what the network is given)."""
    if part == "encode":
        axes = model._encoder_pieces(spatial, piece)
    else:
        axes = model._decoder_pieces(model.latent_shape(spatial), piece, spatial)
    return [max(p.read[1] - p.read[0] for p in axis) for axis in axes]


def _decode_bytes(
    model: nn.Module, spatial: Sequence[int], piece: Sequence[int | None], dtype: torch.dtype
) -> int:
    """Peak extra bytes of decoding the largest tile, layer by layer as ``decode_tile``
    crops it (see ``vqtok.models.cropped``)."""
    dims = model.config.dims
    latent = model.latent_shape(spatial)
    axes = model._decoder_pieces(latent, piece, spatial)
    # Axes are independent: the largest tile takes each axis's widest piece.
    tile = [max(axis, key=lambda p: p.read[1] - p.read[0]) for axis in axes]
    spans = regions(
        steps(model.decoder, dims),
        [p.read[0] for p in tile],
        [p.read[1] for p in tile],
        latent,
        [p.write for p in tile],
    )
    peak = Fraction(0)
    for (live, jump), kept in zip(layer_live(model.decoder, dims), spans, strict=True):
        peak = max(peak, live * jump * math.prod(hi - lo for lo, hi in kept))
    itemsize = torch.empty(0, dtype=dtype).element_size()
    return int(LIVE_FACTOR * peak * itemsize)
