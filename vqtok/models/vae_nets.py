"""The networks of the continuous-latent models: flat MLP or linear maps, or the tokenizers'
residual conv stacks, each optionally fed a condition vector c (flat networks only).

Encoders map x: (B, C, *spatial) [and c: (B, M)] to (B, out, ...): (B, out) for flat
networks, (B, out, *spatial / strides) for conv. Decoders map z back to the likelihood's
parameters (B, P * C, *spatial), P = params_per_channel.
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


def _with_condition(h: Tensor, c: Tensor | None) -> Tensor:
    return h if c is None else torch.cat([h, c.to(h.dtype)], dim=1)


class FlatEncoder(nn.Module):
    """(B, C, *size) [+ c (B, M)] -> (B, out): flatten, concatenate c, MLP."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_features: int) -> None:
        super().__init__()
        self.net = mlp([in_features, *hidden, out_features])

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.net(_with_condition(x.flatten(1), c))


class FlatDecoder(nn.Module):
    """(B, K) [+ c (B, M)] -> (B, *out_shape): MLP, then unflatten."""

    def __init__(self, in_features: int, hidden: Sequence[int], out_shape: Sequence[int]) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = mlp([in_features, *hidden, math.prod(self.out_shape)])

    def forward(self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        return self.net(_with_condition(z, c)).view(z.shape[0], *self.out_shape)


def conv_config(config: VAEConfig, channels: int, latent_channels: int) -> TokenizerConfig:
    """The TokenizerConfig that makes the tokenizers' conv stacks map ``channels`` to ``latent_channels``."""
    return TokenizerConfig(
        preset=config.preset, modality=config.modality, channels=channels,
        stage_strides=config.stage_strides, widths=config.widths, latent_dim=latent_channels,
        blocks_per_stage=config.blocks_per_stage, causal_time=config.causal_time,
    )


class ConvEncoder(nn.Module):
    """(B, C, *spatial) -> (B, out, *latent): pad to the strides, residual conv encoder."""

    def __init__(self, config: VAEConfig, out_channels: int) -> None:
        super().__init__()
        self.stack = conv_config(config, config.channels, out_channels)
        self.net = Encoder(self.stack)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        return self.net(pad_to_multiple(x, self.stack.strides, self.stack.causal_time))


class ConvDecoder(nn.Module):
    """(B, K, *latent) -> (B, out, *spatial): residual conv decoder, cropped to ``size``."""

    def __init__(self, config: VAEConfig, out_channels: int) -> None:
        super().__init__()
        self.net = Decoder(conv_config(config, out_channels, config.latent_dim))

    def forward(self, z: Tensor, c: Tensor | None = None, size: Sequence[int] | None = None) -> Tensor:
        out = self.net(z)
        return out if size is None else crop(out, tuple(size))


def build_encoder(config: VAEConfig, out_features: int, condition: int = 0) -> nn.Module:
    """The encoder to ``out_features`` values (channels for conv) per latent position."""
    if config.network == "conv":
        return ConvEncoder(config, out_features)
    hidden = config.hidden if config.network == "mlp" else ()
    return FlatEncoder(config.input_dim + condition, hidden, out_features)


def build_decoder(config: VAEConfig, params_per_channel: int, condition: int = 0) -> nn.Module:
    """The decoder from the latent to the likelihood's parameters."""
    out_channels = params_per_channel * config.channels
    if config.network == "conv":
        return ConvDecoder(config, out_channels)
    hidden = tuple(reversed(config.hidden)) if config.network == "mlp" else ()
    return FlatDecoder(config.latent_dim + condition, hidden, (out_channels, *config.input_size))


def latent_shape(config: VAEConfig, size: Sequence[int]) -> tuple[int, ...]:
    """Shape of z for inputs of spatial ``size``: (K,) flat, (K, *size / strides) conv."""
    if config.network != "conv":
        return (config.latent_dim,)
    stack = conv_config(config, config.channels, config.latent_dim)
    out = []
    for axis, (n, s) in enumerate(zip(size, stack.strides, strict=True)):
        out.append(1 + -(-(n - 1) // s) if axis == 0 and stack.causal_time else -(-n // s))
    return (config.latent_dim, *out)

