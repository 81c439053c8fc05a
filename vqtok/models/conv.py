"""Residual convolution stacks for 1D, 2D and 3D signals with per-axis strides.

One family serves audio (B, C, T), images (B, C, H, W) and video (B, C, T, H, W). With
``causal_time=True`` the first axis (time) is causal: every convolution pads only on the
left in time, so an output frame never depends on later input frames. Normalization is
per position (over channels only), which keeps causality and makes each output depend on a
bounded window of the input, so long clips can be coded in chunks (see
``Encoder.time_receptive_field``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.models.config import TokenizerConfig

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


class PaddedConv(nn.Module):
    """Convolution that pads explicitly: centered per axis, or left-only on a causal time axis.

    With stride s and kernel k on an axis, an input of length s*n gives n outputs (centered),
    and a causal input of length 1 + s*n gives 1 + n outputs, output i seeing inputs <= s*i.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: Sequence[int],
        stride: Sequence[int],
        dilation: int = 1,
        causal_time: bool = False,
    ) -> None:
        super().__init__()
        dims = len(kernel)
        self.causal_time = causal_time
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.dilation = dilation
        pads = self._padding()
        symmetric = all(pads[i] == pads[i + 1] for i in range(0, len(pads), 2))
        # The conv pads symmetric cases itself, sparing a padded copy of the input.
        self.padding = () if symmetric else pads
        self.conv = _CONV[dims](
            in_channels,
            out_channels,
            self.kernel,
            self.stride,
            padding=tuple(reversed(pads[::2])) if symmetric else 0,
            dilation=dilation,
        )

    def _padding(self) -> tuple[int, ...]:
        """F.pad amounts, last axis first: (left, right) per axis."""
        pads: list[int] = []
        for axis in reversed(range(len(self.kernel))):
            total = (self.kernel[axis] - 1) * self.dilation - (self.stride[axis] - 1)
            if axis == 0 and self.causal_time:
                # Left pad of (k-1)*d keeps output i aligned with input s*i.
                pads += [(self.kernel[axis] - 1) * self.dilation, 0]
            else:
                pads += [total // 2, total - total // 2]
        return tuple(pads)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, *spatial) float -> (B, C_out, *spatial / stride) float."""
        return self.conv(F.pad(x, self.padding) if self.padding else x)


class ChannelNorm(nn.Module):
    """RMS normalization over channels at each position: no statistics across time or space."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, *spatial) float -> same shape."""
        # Channel-first arithmetic avoids the permuted copies a LayerNorm would need.
        scale = torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return x * scale * self.weight.view(1, -1, *([1] * (x.dim() - 2)))


class ResidualBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x)))))), kernel 3 on every axis."""

    def __init__(
        self, channels: int, dims: int, dilation: int = 1, causal_time: bool = False
    ) -> None:
        super().__init__()
        kernel, unit = (3,) * dims, (1,) * dims
        self.body = nn.Sequential(
            ChannelNorm(channels),
            nn.SiLU(),
            PaddedConv(channels, channels, kernel, unit, dilation, causal_time),
            ChannelNorm(channels),
            nn.SiLU(),
            PaddedConv(channels, channels, kernel, unit, 1, causal_time),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


def stage_blocks(config: TokenizerConfig, channels: int) -> list[nn.Module]:
    """A stage's residual blocks; dilations grow as 1, g, g^2, ... (g = dilation_growth)."""
    return [
        ResidualBlock(channels, config.dims, config.dilation_growth**i, config.causal_time)
        for i in range(config.blocks_per_stage)
    ]


def mid_blocks(config: TokenizerConfig) -> list[nn.Module]:
    """The undilated residual blocks at the latent resolution, next to the bottleneck."""
    return [
        ResidualBlock(config.widths[-1], config.dims, 1, config.causal_time)
        for _ in range(config.mid_blocks)
    ]


def _down_kernel(stride: int) -> int:
    # Overlapping windows (2s) for downsampling axes, a plain 3-tap conv elsewhere.
    return 2 * stride if stride > 1 else 3


class Upsample(nn.Module):
    """Nearest-neighbour repeat by ``stride`` per axis, then a 3-tap conv.

    On a causal time axis, 1 + n frames become 1 + s*n: latent frame 0 gives frame 0 alone,
    latent frame i gives frames s*(i-1)+1 .. s*i, mirroring the causal encoder.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: Sequence[int], causal_time: bool
    ) -> None:
        super().__init__()
        self.stride = tuple(stride)
        self.causal_time = causal_time
        dims = len(self.stride)
        self.conv = PaddedConv(in_channels, out_channels, (3,) * dims, (1,) * dims, 1, causal_time)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C_in, *spatial) float -> (B, C_out, *upsampled) float."""
        for axis, s in enumerate(self.stride):
            if s > 1:
                x = x.repeat_interleave(s, dim=axis + 2)
                if axis == 0 and self.causal_time:
                    x = x[:, :, s - 1 :]
        return self.conv(x)


class Encoder(nn.Module):
    """(B, channels, *spatial) -> (B, latent_dim, *spatial / prod(stage strides))."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        channels, widths, latent_dim = config.channels, config.widths, config.latent_dim
        dims, causal_time, unit = config.dims, config.causal_time, (1,) * config.dims
        layers: list[nn.Module] = [
            PaddedConv(channels, widths[0], (3,) * dims, unit, 1, causal_time)
        ]
        for i, stride in enumerate(config.stage_strides):
            kernel = tuple(_down_kernel(s) for s in stride)
            layers.append(PaddedConv(widths[i], widths[i + 1], kernel, stride, 1, causal_time))
            layers += stage_blocks(config, widths[i + 1])
        layers += mid_blocks(config)
        layers += [
            ChannelNorm(widths[-1]),
            nn.SiLU(),
            PaddedConv(widths[-1], latent_dim, unit, unit, 1, causal_time),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    def time_receptive_field(self) -> int:
        """How many input frames (along axis 0, counting the current one) one output sees.

        Exact for this stack: every convolution lies on the single serial path (residual
        branches are in series), so the usual receptive-field recursion applies.
        """
        field, jump = 1, 1
        for module in self.layers.modules():
            if isinstance(module, PaddedConv):
                field += (module.kernel[0] - 1) * module.dilation * jump
                jump *= module.stride[0]
        return field


class Decoder(nn.Module):
    """(B, latent_dim, *latent) -> (B, channels, *latent * prod(stage strides))."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        channels, widths, latent_dim = config.channels, config.widths, config.latent_dim
        dims, causal_time, unit = config.dims, config.causal_time, (1,) * config.dims
        layers: list[nn.Module] = [
            PaddedConv(latent_dim, widths[-1], (3,) * dims, unit, 1, causal_time)
        ]
        layers += mid_blocks(config)
        for i in reversed(range(len(config.stage_strides))):
            layers += stage_blocks(config, widths[i + 1])
            layers.append(Upsample(widths[i + 1], widths[i], config.stage_strides[i], causal_time))
        layers += [
            ChannelNorm(widths[0]),
            nn.SiLU(),
            PaddedConv(widths[0], channels, (3,) * dims, unit, 1, causal_time),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.layers(z)


def pad_to_multiple(x: Tensor, strides: Sequence[int], causal_time: bool) -> Tensor:
    """Pad the trailing edge of each spatial axis by edge replication so the encoder's
    strides divide it: length a multiple of s, or 1 + a multiple of s on a causal time axis.

    x: (B, C, *spatial) float -> (B, C, *padded) float.
    """
    target = padded_shape(tuple(x.shape[2:]), strides, causal_time)
    pads: list[int] = []
    for size, want in reversed(list(zip(x.shape[2:], target, strict=True))):
        pads += [0, want - size]
    if not any(pads):
        return x
    return F.pad(x, pads, mode="replicate")


def padded_shape(
    shape: Sequence[int], strides: Sequence[int], causal_time: bool
) -> tuple[int, ...]:
    """Spatial shape after ``pad_to_multiple``."""
    out = []
    for axis, (size, s) in enumerate(zip(shape, strides, strict=True)):
        if axis == 0 and causal_time:
            out.append(1 + s * -(-(size - 1) // s))
        else:
            out.append(s * -(-size // s))
    return tuple(out)


def crop(x: Tensor, size: Sequence[int]) -> Tensor:
    """Keep the leading ``size`` entries of each spatial axis. x: (B, C, *spatial)."""
    index = (slice(None), slice(None), *(slice(0, n) for n in size))
    return x[index]
