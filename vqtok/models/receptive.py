"""Receptive fields of the conv stacks in ``vqtok.models.conv``, computed from their layers.

For one spatial axis, a stack maps output index ``o`` to the input indices it depends on.
Every layer here is an affine index map (a strided, dilated, padded convolution; a
pointwise norm or activation; a residual sum of two such paths) or a nearest-neighbour
upsampling (an index map with a floor or a ceiling), so the dependence of output ``o`` lies
in ``[o * jump - left, o * jump + right]`` in input units. ``jump`` is the input step per
output step: the total stride S for an encoder, 1/S for a decoder, hence ``Fraction``.

Indices are those of the tensors the stack actually sees: the encoder's input after
``pad_to_multiple`` and before each conv's own zero padding. A field reaching below 0 or
past the end reads the zero padding of the convolutions, which is what makes an output near
a true border differ from one in the interior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from torch import nn

from vqtok.models.conv import ChannelNorm, PaddedConv, ResidualBlock, Upsample


@dataclass(frozen=True)
class AxisField:
    """Where output ``o`` of a stack looks along one axis: input indices in
    ``[o * jump - left, o * jump + right]``.

    jump: input units per output unit (S for an encoder, 1/S for a decoder).
    left, right: how far the dependence reaches either side, in input units (>= 0).
    """

    jump: Fraction
    left: Fraction
    right: Fraction

    def then(self, other: AxisField) -> AxisField:
        """The field of this stack followed by ``other`` (``other`` reads this one's output)."""
        return AxisField(
            self.jump * other.jump,
            self.left + other.left * self.jump,
            self.right + other.right * self.jump,
        )

    def union(self, other: AxisField) -> AxisField:
        """The field of a sum of two paths with the same jump (a residual connection)."""
        if self.jump != other.jump:
            raise ValueError(f"residual paths change resolution: {self.jump} vs {other.jump}")
        return AxisField(self.jump, max(self.left, other.left), max(self.right, other.right))

    def inputs(self, first: int, last: int) -> tuple[int, int]:
        """The input index range outputs ``first..last`` (inclusive) depend on.

        Returns:
            (lo, hi), a half-open range of input indices, unclipped (may pass the borders).
        """
        lo = math.floor(first * self.jump - self.left)
        hi = math.floor(last * self.jump + self.right) + 1
        return lo, hi

    @property
    def size(self) -> Fraction:
        """Number of input positions one output depends on (the classical field size)."""
        return self.left + self.right + 1


IDENTITY = AxisField(Fraction(1), Fraction(0), Fraction(0))


def _conv_field(conv: PaddedConv, axis: int) -> AxisField:
    k, s, d = conv.kernel[axis], conv.stride[axis], conv.dilation
    pads = conv._padding()  # (left, right) per axis, last axis first
    left = pads[2 * (len(conv.kernel) - 1 - axis)]
    return AxisField(Fraction(s), Fraction(left), Fraction((k - 1) * d - left))


def _upsample_field(up: Upsample, axis: int) -> AxisField:
    s = up.stride[axis]
    # Output o reads input floor(o / s); on a causal time axis, after the first s - 1
    # repeats are dropped, ceil(o / s). Both lie within (s - 1) / s of o / s.
    reach = Fraction(s - 1, s)
    causal = axis == 0 and up.causal_time
    repeat = AxisField(Fraction(1, s), Fraction(0) if causal else reach, reach if causal else 0)
    return repeat.then(_conv_field(up.conv, axis))


def axis_field(module: nn.Module, axis: int) -> AxisField:
    """The receptive field of ``module`` along spatial axis ``axis`` (0 = first after C).

    Walks the module tree: sequences compose, residual blocks take the union of the skip
    and the body, norms and activations act per position.

    Args:
        module: An ``Encoder``, ``Decoder`` or any stack of the layers of
            ``vqtok.models.conv``.
        axis: The spatial axis.

    Returns:
        The field, in units of the module's input along that axis.

    Raises:
        TypeError: A layer whose index map is unknown here; add a rule for it rather than
            guess, since tiling relies on the field being an upper bound.
    """
    if isinstance(module, PaddedConv):
        return _conv_field(module, axis)
    if isinstance(module, Upsample):
        return _upsample_field(module, axis)
    if isinstance(module, ResidualBlock):
        return IDENTITY.union(axis_field(module.body, axis))
    if isinstance(module, (ChannelNorm, nn.SiLU, nn.Identity)):
        return IDENTITY
    if isinstance(module, nn.Sequential):
        field = IDENTITY
        for layer in module:
            field = field.then(axis_field(layer, axis))
        return field
    layers = getattr(module, "layers", None)
    if isinstance(layers, nn.Sequential):
        return axis_field(layers, axis)
    raise TypeError(f"no receptive-field rule for {type(module).__name__}")


def fields(module: nn.Module, dims: int) -> tuple[AxisField, ...]:
    """``axis_field`` for each of the ``dims`` spatial axes.

    Args:
        module: See ``axis_field``.
        dims: Number of spatial axes (1 audio, 2 image, 3 video).

    Returns:
        One field per axis.
    """
    return tuple(axis_field(module, axis) for axis in range(dims))
