"""The networks of the continuous-latent models: flat MLP or linear maps, or the tokenizers'
residual conv stacks, each optionally fed a condition vector c: (B, M).

Encoders map x: (B, C, *spatial) [and c] to (B, out, ...): (B, out) for flat networks,
(B, out, *spatial / strides) for conv. Decoders map z back to the likelihood's parameters
(B, P * C, *spatial), P = params_per_channel. Flat networks append c to the input of
every layer; conv networks append it as M constant channels to their input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqtok.models.config import TokenizerConfig
from vqtok.models.conv import Decoder, Encoder, crop, pad_to_multiple
from vqtok.models.vae_config import VAEConfig


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers through ``sizes`` with SiLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


def with_condition(h: Tensor, c: Tensor | None) -> Tensor:
    """h: (B, F) or (B, F, *spatial), c: (B, M) -> (B, F + M[, *spatial]): c appended as
    features, or as channels constant over every position."""
    if c is None:
        return h
    c = c.to(h.dtype).view(*c.shape, *([1] * (h.dim() - 2))).expand(-1, -1, *h.shape[2:])
    return torch.cat([h, c], dim=1)


class ConditionedMLP(nn.Module):
    """An MLP through ``sizes`` (SiLU between layers) whose every layer also reads c: (B, M),
    so that deep layers need not carry the condition through from the input."""

    def __init__(self, sizes: Sequence[int], condition: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Linear(a + condition, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            h = layer(with_condition(h, c))
            if i < len(self.layers) - 1:
                h = nn.functional.silu(h)
        return h


def flat_net(sizes: Sequence[int], condition: int) -> nn.Module:
    """``mlp(sizes)``, or a ConditionedMLP when there is a condition of ``condition`` values."""
    return ConditionedMLP(sizes, condition) if condition else mlp(sizes)


class FlatEncoder(nn.Module):
    """(B, C, *size) [+ c (B, M)] -> (B, out): flatten, then an MLP (c enters every layer)."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_features: int, condition: int = 0
    ) -> None:
        super().__init__()
        self.net = flat_net([in_features, *hidden, out_features], condition)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1)) if c is None else self.net(x.flatten(1), c)


class FlatDecoder(nn.Module):
    """(B, K) [+ c (B, M)] -> (B, *out_shape): an MLP (c enters every layer), then unflatten."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_shape: Sequence[int], condition: int = 0
    ) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = flat_net([in_features, *hidden, math.prod(self.out_shape)], condition)

    def forward(
        self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        out = self.net(z) if c is None else self.net(z, c)
        return out.view(z.shape[0], *self.out_shape)


def conv_config(config: VAEConfig, channels: int, latent_channels: int) -> TokenizerConfig:
    """The TokenizerConfig that makes the tokenizers' conv stacks map ``channels`` to
    ``latent_channels``."""
    return TokenizerConfig(
        preset=config.preset, modality=config.modality, channels=channels,
        stage_strides=config.stage_strides, widths=config.widths, latent_dim=latent_channels,
        blocks_per_stage=config.blocks_per_stage, causal_time=config.causal_time,
    )


class ConvEncoder(nn.Module):
    """(B, C, *spatial) [+ c (B, M)] -> (B, out, *latent): pad to the strides, append c as
    channels, residual conv encoder."""

    def __init__(self, config: VAEConfig, out_channels: int, condition: int = 0) -> None:
        super().__init__()
        self.stack = conv_config(config, config.channels + condition, out_channels)
        self.net = Encoder(self.stack)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.net(
            with_condition(pad_to_multiple(x, self.stack.strides, self.stack.causal_time), c)
        )


class ConvDecoder(nn.Module):
    """(B, K, *latent) [+ c (B, M)] -> (B, out, *spatial): append c as channels, residual
    conv decoder, cropped to ``size``."""

    def __init__(self, config: VAEConfig, out_channels: int, condition: int = 0) -> None:
        super().__init__()
        self.net = Decoder(conv_config(config, out_channels, config.latent_dim + condition))

    def forward(
        self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None
    ) -> Tensor:
        out = self.net(with_condition(z, c))
        return out if size is None else crop(out, tuple(size))


def build_encoder(config: VAEConfig, out_features: int, condition: int = 0) -> nn.Module:
    """The encoder to ``out_features`` values (channels for conv) per latent position."""
    if config.network == "conv":
        return ConvEncoder(config, out_features, condition)
    hidden = config.hidden if config.network == "mlp" else ()
    return FlatEncoder(config.input_dim, hidden, out_features, condition)


def build_decoder(config: VAEConfig, params_per_channel: int, condition: int = 0) -> nn.Module:
    """The decoder from the latent to the likelihood's parameters."""
    out_channels = params_per_channel * config.channels
    if config.network == "conv":
        return ConvDecoder(config, out_channels, condition)
    hidden = tuple(reversed(config.hidden)) if config.network == "mlp" else ()
    return FlatDecoder(config.latent_dim, hidden, (out_channels, *config.input_size), condition)


def latent_shape(config: VAEConfig, size: Sequence[int]) -> tuple[int, ...]:
    """Shape of z for inputs of spatial ``size``: (K,) flat, (K, *size / strides) conv."""
    if config.network != "conv":
        return (config.latent_dim,)
    return (config.latent_dim, *downsampled(size, config.strides, config.causal_time))


def downsampled(size: Sequence[int], strides: Sequence[int], causal_time: bool) -> tuple[int, ...]:
    """Spatial shape of a conv stack's output for inputs of spatial ``size`` padded to total
    ``strides``: ceil(n / s) per axis, 1 + ceil((n - 1) / s) on a causal time axis."""
    out = []
    for axis, (n, s) in enumerate(zip(size, strides, strict=True)):
        out.append(1 + -(-(n - 1) // s) if axis == 0 and causal_time else -(-n // s))
    return tuple(out)

