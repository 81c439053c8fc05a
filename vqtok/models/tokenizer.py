"""VQTokenizer: conv encoder -> quantizer -> conv decoder, for audio, images and video."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.models.config import TokenizerConfig
from vqtok.models.conv import Decoder, Encoder, crop, pad_to_multiple, padded_shape
from vqtok.models.identity import content_hash
from vqtok.registry import QUANTIZERS


class VQTokenizer(nn.Module):
    """A VQ-VAE that turns media into integer codes and back.

    Inputs are floats in [-1, 1] in PyTorch's conv layout: audio (B, C, T), images
    (B, C, H, W), video (B, C, T, H, W). Any size is accepted: inputs are padded at the
    trailing edge to the strides and outputs cropped back. Video is causal in time: T frames
    give 1 + ceil((T - 1) / s_t) latent frames, the first frame being coded alone.

    Args:
        config: The architecture; the quantizer's resolved options are recorded in
            ``self.config`` so that a checkpoint rebuilds exactly this model.

    Raises:
        KeyError: ``config.quantizer`` is not a registered quantizer.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.encoder = Encoder(config)
        self.quantizer = QUANTIZERS.create(
            config.quantizer, dim=config.latent_dim, **config.quantizer_options
        )
        self.decoder = Decoder(config)
        # Record the quantizer's resolved options so a checkpoint rebuilds exactly this one.
        options = dataclasses.asdict(self.quantizer.config)
        options.pop("dim", None)
        self.config = dataclasses.replace(config, quantizer_options=options)
        # (Q, K) int64 code frequencies for entropy coding, set by `vqtok fit-prior`. Not a
        # buffer: saved beside the weights, outside the state dict and model_id.
        self.code_prior: Tensor | None = None

    @property
    def codebook_size(self) -> int:
        """K, the number of distinct codes per level."""
        return self.quantizer.codebook_size

    @property
    def num_levels(self) -> int:
        """1, or Q for residual VQ (codes then carry a level axis after the batch axis)."""
        return self.quantizer.num_levels

    @property
    def model_id(self) -> str:
        """Content hash of config and weights (16 hex chars); what code files store."""
        return content_hash(self.config.to_dict(), self.state_dict())

    def latent_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the codes for an input of spatial shape ``input_shape``.

        Args:
            input_shape: The input's spatial sizes, e.g. (H, W) for images, any values >= 1.

        Returns:
            The codes' spatial sizes (the inputs are padded to the strides first).
        """
        padded = padded_shape(tuple(input_shape), self.config.strides, self.config.causal_time)
        out = []
        for axis, (size, s) in enumerate(zip(padded, self.config.strides, strict=True)):
            causal = axis == 0 and self.config.causal_time
            out.append(1 + (size - 1) // s if causal else size // s)
        return tuple(out)

    def forward(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor], dict[str, float]]:
        """Reconstruct ``x`` through the quantizer, with the training losses.

        Args:
            x: (B, C, *spatial) float in [-1, 1].

        Returns:
            x_hat (same shape as x, float), losses ("reconstruction" MSE plus the quantizer's
            weighted losses; sum them for the training loss) and the quantizer's stats.

        Raises:
            ValueError: ``x`` does not have the modality's layout and channel count, or has an
                empty axis.
            TypeError: ``x`` is not floating point.
        """
        self._check_input(x)
        quantized = self.quantizer(self.encoder(self._pad(x)))
        x_hat = crop(self.decoder(quantized.z_q), x.shape[2:])
        losses = {"reconstruction": F.mse_loss(x_hat.float(), x.float()), **quantized.losses}
        return x_hat, losses, dict(quantized.stats)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """Integer codes of ``x``, without gradients.

        Args:
            x: (B, C, *spatial) float in [-1, 1].

        Returns:
            codes int64 (B, *latent), or (B, Q, *latent) for residual VQ;
            ``latent = latent_shape(spatial)``.

        Raises:
            ValueError: ``x`` does not have the modality's layout and channel count, or has an
                empty axis.
            TypeError: ``x`` is not floating point.
        """
        self._check_input(x)
        return self.quantizer.encode(self.encoder(self._pad(x)))

    def decode(self, codes: Tensor, size: Sequence[int] | None = None) -> Tensor:
        """Media from codes.

        Values are not clamped (they match ``forward``); clamp to [-1, 1] before saving media.

        Batch-invariant: each sample is decoded on its own, so its output is a function of
        its own codes, bit for bit the same whatever else shares the batch. Convolution
        backends pick their algorithm by batch size (on the CPU, oneDNN for a batch but
        im2col + GEMM for a single small input; cuDNN heuristics on a GPU), and the last-bit
        differences between algorithms flip roundings to uint8, which H.264 then spreads over
        the following frames; decoding the same codes in batches of another size must not
        change the media (`decompress` splits codes into batches, a direct call may not).

        Args:
            codes: int64 as returned by ``encode``; residual VQ may pass the first q <= Q
                levels, (B, q, *latent).
            size: The original spatial size to crop to; without it the padded size is kept.

        Returns:
            (B, C, *spatial) float.

        Raises:
            ValueError: Residual-VQ codes lack a level axis of 1 to Q levels.
        """
        if codes.shape[0] > 1:
            return torch.cat([self.decode(one, size) for one in codes.split(1)])
        x_hat = self.decoder(self.quantizer.decode(codes))
        return x_hat if size is None else crop(x_hat, tuple(size))

    @torch.no_grad()
    def encode_chunked(self, x: Tensor, chunk_frames: int) -> Tensor:
        """Video only: ``encode(x)`` computed a chunk at a time, with identical codes.

        Each chunk codes ``chunk_frames`` new frames (the first chunk also codes frame 0) and
        re-reads enough earlier frames to cover the encoder's causal receptive field, so peak
        memory follows the chunk length rather than T. The context is
        ``encoder.time_receptive_field() - 1`` frames rounded up to the stride (76 for
        video-vq-t4s8), so chunks of 64 frames or more keep the extra work under about 2x.

        Args:
            x: (B, C, T, H, W) float in [-1, 1].
            chunk_frames: New frames per chunk, a positive multiple of the temporal stride.

        Returns:
            codes int64 (B, T', H', W') (or (B, Q, T', H', W') for residual VQ).

        Raises:
            ValueError: The model is not causal in time, ``chunk_frames`` is not a positive
                multiple of the temporal stride, or ``x`` is not a (B, C, T, H, W) video
                with the model's channels and no empty axis.
            TypeError: ``x`` is not floating point.
        """
        step = self._check_chunking(x, chunk_frames)
        x = self._pad(x)
        s = self.config.strides[0]
        total = self.latent_shape(x.shape[2:])[0]
        context = -(-(self.encoder.time_receptive_field() - 1) // s)
        time_axis = -3
        bounds = [0, *range(step + 1, total, step), total]
        pieces = []
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            first = max(0, start - context)
            clip = x[:, :, first * s : (stop - 1) * s + 1]
            codes = self.quantizer.encode(self.encoder(clip))
            pieces.append(codes.narrow(time_axis, start - first, stop - start))
        return torch.cat(pieces, dim=time_axis)

    def _check_chunking(self, x: Tensor, chunk_frames: int) -> int:
        """Validate encode_chunked's arguments; returns latent frames per chunk.

        Raises:
            ValueError: See ``encode_chunked``.
        """
        if not self.config.causal_time:
            raise ValueError("encode_chunked needs a model that is causal in time (a video preset)")
        self._check_input(x)
        s = self.config.strides[0]
        if chunk_frames < s or chunk_frames % s:
            raise ValueError(
                f"chunk_frames must be a positive multiple of the temporal stride {s}, "
                f"got {chunk_frames}"
            )
        return chunk_frames // s

    def _pad(self, x: Tensor) -> Tensor:
        return pad_to_multiple(x, self.config.strides, self.config.causal_time)

    def _check_input(self, x: Tensor) -> None:
        want = 2 + self.config.dims
        if x.dim() != want or x.shape[1] != self.config.channels:
            layout = {"audio": "(B, C, T)", "image": "(B, C, H, W)", "video": "(B, C, T, H, W)"}
            raise ValueError(
                f"{self.config.modality} input must be {layout[self.config.modality]} with "
                f"C={self.config.channels}; got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"input must be floating point in [-1, 1], got {x.dtype}")
        if min(x.shape[2:]) < 1:
            raise ValueError(f"input has an empty axis: shape {tuple(x.shape)}")
