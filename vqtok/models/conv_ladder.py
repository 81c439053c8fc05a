"""The ladder VAE on 1D/2D/3D conv inputs of any size: one stochastic layer per conv stage.

Stage i (1..L) of the tokenizers' residual conv stack downsamples by ``stage_strides[i - 1]``;
its latent z_i: (B, ladder_dims[i - 1], *spatial_i) lives at that stage's resolution
(spatial_i = input / the strides of stages 1..i). Every piece is a one-stage conv stack of
``vqtok.models.conv``: the bottom-up pass is stage i's ``Encoder`` (d_i: (B, widths[i],
*spatial_i)), a 1x1 head reads (mu_hat_i, logvar_hat_i) off d_i; p(z_i | z_{i+1}) is stage
i+1's ``Decoder``, upsampling z_{i+1} to (mu_p, logvar_p) at stage i's resolution; p(x|z_1)
is stage 1's ``Decoder``. A stride of 1 stacks several layers at one resolution. Inputs
are padded to a multiple of the total strides (as the tokenizers do) and outputs cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from vqtok.models.config import TokenizerConfig
from vqtok.models.conv import ChannelNorm, Decoder, Encoder, PaddedConv, crop, pad_to_multiple
from vqtok.models.ladder import LadderVAE
from vqtok.models.vae_config import VAEConfig
from vqtok.models.vae_nets import conv_config, downsampled


def one_stage(
    config: VAEConfig, stage: int, channels: int, latent_channels: int
) -> TokenizerConfig:
    """The conv stack of stage ``stage`` alone (0-based): its strides, its two widths, no mid
    blocks."""
    return conv_config(config, channels, latent_channels).with_overrides(
        stage_strides=config.stage_strides[stage : stage + 1],
        widths=config.widths[stage : stage + 2],
        mid_blocks=0,
    )


def gaussian_head(in_channels: int, latent_channels: int, dims: int) -> nn.Sequential:
    """(B, in, *spatial) -> (B, 2 * latent, *spatial): a Gaussian's (mu, logvar) per position."""
    unit = (1,) * dims
    return nn.Sequential(
        ChannelNorm(in_channels),
        nn.SiLU(),
        PaddedConv(in_channels, 2 * latent_channels, unit, unit),
    )


class ConvLadderVAE(LadderVAE):
    """x: (B, C, *spatial) float in [-1, 1], any spatial size; latents z_i: (B,
    ladder_dims[i - 1], *spatial / strides of stages 1..i), one layer per stage."""

    def __init__(self, config: VAEConfig) -> None:
        super().__init__(config)
        dims, widths = config.ladder_dims, config.widths
        stage_inputs = (config.channels, *widths[1:-1])
        self.up = nn.ModuleList(
            Encoder(one_stage(config, i, c, widths[i + 1])) for i, c in enumerate(stage_inputs)
        )
        self.up_heads = nn.ModuleList(
            gaussian_head(widths[i + 1], d, config.dims) for i, d in enumerate(dims)
        )
        self.down = nn.ModuleList(Decoder(one_stage(config, i + 1, 2 * dims[i], dims[i + 1]))
                                  for i in range(self.layers - 1))
        out_channels = self.likelihood.params_per_channel * config.channels
        self.decoder = Decoder(one_stage(config, 0, out_channels, dims[0]))

    def bottom_input(self, x: Tensor) -> Tensor:
        return pad_to_multiple(x, self.config.strides, self.config.causal_time)

    def decoder_params(self, z: Tensor, size: Sequence[int]) -> Tensor:
        return crop(self.decoder(z), tuple(size))

    def top_shape(self, size: Sequence[int]) -> tuple[int, ...]:
        return (
            self.config.ladder_dims[-1],
            *downsampled(size, self.config.strides, self.config.causal_time),
        )
