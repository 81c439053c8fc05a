"""Discriminators for adversarial tokenizer training: PatchGAN, multi-scale STFT, multi-period.

Every discriminator here is a plain ``nn.Module`` (no file or network access) whose
``forward(x)`` takes media in the tokenizers' layout, ``x: (B, C, *spatial) float``, and
returns ``(logits, features)``:

- ``logits``: a list with one tensor per sub-discriminator, each ``(B, 1, *positions)``
  float: one real/fake score per patch, time-frequency tile or period frame;
- ``features``: a list (one per sub-discriminator) of lists of the hidden activations,
  ``(B, C_l, *positions_l)`` float, for the feature-matching loss.

Sub-discriminators of several kinds combine with `DiscriminatorSet` ("msstft+mpd"). Widths
default small so that CPU training stays affordable; the papers' widths are 2-4x larger.
Names are registered in ``vqtok.registry.DISCRIMINATORS``; the builders take the modality's
``dims`` (1 audio, 2 images, 3 video) and ``channels`` plus keyword overrides.

Padding is zero padding throughout (no reflect or replicate padding): their backward passes
have no deterministic CUDA kernel, which a ``deterministic`` run would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vqtok.models.conv import ChannelNorm
from vqtok.registry import DISCRIMINATORS

Output = tuple[list[Tensor], list[list[Tensor]]]
SLOPE = 0.2  # LeakyReLU slope of PatchGAN, HiFi-GAN and EnCodec alike


class PatchGAN(nn.Module):
    """PatchGAN (pix2pix / VQGAN): strided convs that score overlapping patches.

    Images use 2D convs (kernel 4, stride 2). Video uses 3D convs rather than a 2D
    discriminator per frame: a per-frame critic cannot see flicker or motion that is wrong
    from one frame to the next, which is the artefact a frame-wise reconstruction loss leaves
    (MAGVIT's and Cosmos's video tokenizers use 3D critics for the same reason). Time takes
    kernel 3 and stride 2 in the downsampling layers, so that short clips (a causal
    tokenizer's 1 + 4k frames) still fit.

    A per-position channel norm replaces VQGAN's BatchNorm: the trainer scores real and
    reconstructed inputs in one batch, and batch statistics would let the critic tell them
    apart by the batch alone; a GroupNorm's statistics over the whole picture would make every
    score depend on every pixel. With it, each score sees only its patch.

    Args:
        dims: 2 (images, x: (B, C, H, W)) or 3 (video, x: (B, C, T, H, W)).
        channels: C, the input channels.
        width: Channels of the first layer; each downsampling layer doubles them (up to 8x).
        layers: Downsampling layers (stride 2). Each spatial side must be at least
            ``3 * 2 ** layers`` pixels, e.g. 24 for 3 layers.

    Raises:
        ValueError: dims is not 2 or 3, or a size is not positive.
    """

    def __init__(self, dims: int = 2, channels: int = 3, width: int = 16, layers: int = 3) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"PatchGAN is 2D (images) or 3D (video), got dims={dims}")
        if min(channels, width, layers) < 1:
            raise ValueError("channels, width and layers must be positive")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d

        def block(c_in: int, c_out: int, stride: int) -> nn.Module:
            kernel = (4,) * dims if dims == 2 else (3, 4, 4)
            strides = (stride,) * dims
            padding = (1,) * dims
            return conv(c_in, c_out, kernel, strides, padding)

        blocks: list[nn.Module] = [nn.Sequential(block(channels, width, 2), nn.LeakyReLU(SLOPE))]
        c_in = width
        for index in range(1, layers + 1):
            c_out = width * min(2**index, 8)
            stride = 2 if index < layers else 1  # the last hidden layer keeps the size
            blocks.append(nn.Sequential(block(c_in, c_out, stride),
                                        ChannelNorm(c_out), nn.LeakyReLU(SLOPE)))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        self.head = block(c_in, 1, 1)

    def forward(self, x: Tensor) -> Output:
        """Score every patch.

        Args:
            x: (B, C, H, W) or (B, C, T, H, W) float.

        Returns:
            ([logits (B, 1, *patches)], [[each hidden layer's (B, C_l, *positions_l)]]).
        """
        features = []
        for layer in self.blocks:
            x = layer(x)
            features.append(x)
        return [self.head(x)], [features]


def _wn(module: nn.Conv2d) -> nn.Module:
    # Weight norm, as in HiFi-GAN and EnCodec: it keeps the critics' steps well scaled.
    return weight_norm(module)


class STFTDiscriminator(nn.Module):
    """One resolution of EnCodec's multi-scale STFT discriminator.

    The complex STFT's real and imaginary parts are 2C channels of a (frequency, time)
    image; convs dilated in time and strided in frequency score it.

    Args:
        channels: C, the audio channels.
        n_fft: FFT and window size; the hop is n_fft / 4.
        width: Conv channels.
        dilations: Time dilations of the middle convs.
    """

    def __init__(self, channels: int = 1, n_fft: int = 1024, width: int = 16,
                 dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [_wn(nn.Conv2d(2 * channels, width, (9, 3), padding=(4, 1)))]
        for dilation in dilations:
            layers.append(_wn(nn.Conv2d(width, width, (9, 3), stride=(2, 1),
                                        dilation=(1, dilation), padding=(4, dilation))))
        layers.append(_wn(nn.Conv2d(width, width, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.head = _wn(nn.Conv2d(width, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, x: Tensor) -> Tensor:
        """The complex spectrogram as channels, computed in fp32 outside autocast.

        Args:
            x: (B, C, T) float.

        Returns:
            (B, 2C, n_fft/2 + 1, frames) fp32: channel 2c the real part of audio channel c,
            2c + 1 its imaginary part.
        """
        batch, channels, _ = x.shape
        with torch.autocast(device_type=x.device.type, enabled=False):
            # Zero padding and center=False: see the module docstring on determinism.
            flat = F.pad(x.float().reshape(batch * channels, -1), (self.n_fft // 2,) * 2)
            if flat.shape[-1] < self.n_fft:
                flat = F.pad(flat, (0, self.n_fft - flat.shape[-1]))
            spec = torch.stft(flat, self.n_fft, self.hop, window=self.window, center=False,
                              return_complex=True)
        spec = torch.view_as_real(spec)  # (B*C, F, frames, 2)
        return spec.permute(0, 3, 1, 2).reshape(batch, 2 * channels, *spec.shape[1:3])

    def forward(self, x: Tensor) -> Output:
        """Score the spectrogram's time-frequency tiles.

        Args:
            x: (B, C, T) float.

        Returns:
            ([logits (B, 1, F', frames)], [[each hidden layer's features]]).
        """
        h = self.spectrogram(x)
        features = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), SLOPE)
            features.append(h)
        return [self.head(h)], [features]


class PeriodDiscriminator(nn.Module):
    """One period of HiFi-GAN's multi-period discriminator.

    The waveform is folded into a (T / p, p) image, so that kernels (k, 1) compare samples
    exactly p apart: periodic structure (pitch) that spectral losses blur.

    Args:
        channels: C, the audio channels.
        period: p, in samples.
        widths: Channels of the strided convs.
    """

    def __init__(self, channels: int = 1, period: int = 2,
                 widths: Sequence[int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        self.period = period
        layers, c_in = [], channels
        for index, c_out in enumerate(widths):
            stride = 3 if index < len(widths) - 1 else 1
            layers.append(_wn(nn.Conv2d(c_in, c_out, (5, 1), (stride, 1), padding=(2, 0))))
            c_in = c_out
        self.layers = nn.ModuleList(layers)
        self.head = _wn(nn.Conv2d(c_in, 1, (3, 1), padding=(1, 0)))

    def forward(self, x: Tensor) -> Output:
        """Score the waveform folded by the period.

        Args:
            x: (B, C, T) float (zero padded to a multiple of the period).

        Returns:
            ([logits (B, 1, T', p)], [[each hidden layer's features]]).
        """
        batch, channels, length = x.shape
        pad = -length % self.period
        h = F.pad(x, (0, pad)).reshape(batch, channels, -1, self.period)
        features = []
        for layer in self.layers:
            h = F.leaky_relu(layer(h), SLOPE)
            features.append(h)
        return [self.head(h)], [features]


class DiscriminatorSet(nn.Module):
    """Several discriminators seen as one: their logits and features lists, concatenated.

    Args:
        members: The discriminators, each returning ``(logits, features)`` lists.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def heads(self) -> int:
        """How many logits tensors ``forward`` returns.

        Returns:
            The number of sub-discriminators, nested sets counted flat.
        """
        return sum(m.heads() if isinstance(m, DiscriminatorSet) else 1 for m in self.members)

    def forward(self, x: Tensor) -> Output:
        """Run every member.

        Args:
            x: (B, C, *spatial) float.

        Returns:
            Every member's logits and features lists, concatenated in order.
        """
        logits: list[Tensor] = []
        features: list[list[Tensor]] = []
        for member in self.members:
            more_logits, more_features = member(x)
            logits += more_logits
            features += more_features
        return logits, features


@DISCRIMINATORS.register("patchgan")
def patchgan(dims: int = 2, channels: int = 3, width: int = 16, layers: int = 3) -> PatchGAN:
    """PatchGAN: 2D for images, 3D for video.

    Args:
        dims: 2 (images) or 3 (video).
        channels: Input channels.
        width: First layer's channels.
        layers: Downsampling layers.

    Returns:
        The discriminator.
    """
    return PatchGAN(dims, channels, width, layers)


@DISCRIMINATORS.register("msstft")
def multi_scale_stft(dims: int = 1, channels: int = 1, width: int = 16,
                     fft_sizes: Sequence[int] = (1024, 512, 256)) -> DiscriminatorSet:
    """EnCodec's multi-scale STFT discriminator: one `STFTDiscriminator` per FFT size.

    Args:
        dims: Must be 1 (audio).
        channels: Audio channels.
        width: Conv channels.
        fft_sizes: The resolutions.

    Returns:
        The discriminators as one set.

    Raises:
        ValueError: dims is not 1.
    """
    _audio_only("msstft", dims)
    return DiscriminatorSet([STFTDiscriminator(channels, n, width) for n in fft_sizes])


@DISCRIMINATORS.register("mpd")
def multi_period(dims: int = 1, channels: int = 1, periods: Sequence[int] = (2, 3, 5, 7, 11),
                 widths: Sequence[int] = (16, 32, 64, 64)) -> DiscriminatorSet:
    """HiFi-GAN's (and DAC's) multi-period discriminator: one per prime period.

    Args:
        dims: Must be 1 (audio).
        channels: Audio channels.
        periods: The periods, in samples.
        widths: Conv channels of each period discriminator.

    Returns:
        The discriminators as one set.

    Raises:
        ValueError: dims is not 1.
    """
    _audio_only("mpd", dims)
    return DiscriminatorSet([PeriodDiscriminator(channels, p, widths) for p in periods])


def _audio_only(name: str, dims: int) -> None:
    """Refuse a non-audio input: the audio critics score waveforms.

    Raises:
        ValueError: ``dims`` is not 1.
    """
    if dims != 1:
        raise ValueError(f"{name} scores audio (dims=1), got dims={dims}")


def build_discriminator(spec: str, dims: int, channels: int,
                        options: dict[str, dict] | None = None) -> DiscriminatorSet:
    """The discriminators named in ``spec``, joined by "+" (e.g. "msstft+mpd").

    Args:
        spec: Registered names joined by "+".
        dims: 1 (audio), 2 (images) or 3 (video).
        channels: Input channels.
        options: Per-name keyword overrides, e.g. ``{"patchgan": {"width": 32}}``.

    Returns:
        One `DiscriminatorSet` over every named discriminator.

    Raises:
        KeyError: A name is not registered.
        TypeError: An option is not a parameter of its builder.
        ValueError: A discriminator does not fit ``dims``, or a value is out of range.
    """
    options = options or {}
    members = [DISCRIMINATORS.create(name, dims=dims, channels=channels, **options.get(name, {}))
               for name in spec.split("+")]
    return DiscriminatorSet(members)
