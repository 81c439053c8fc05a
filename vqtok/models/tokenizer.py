"""VQTokenizer: conv encoder -> quantizer -> conv decoder, for audio, images and video."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqtok.models.config import TokenizerConfig
from vqtok.models.conv import Decoder, Encoder, crop, pad_to_multiple, padded_shape
from vqtok.models.cropped import compute_ratio, decode_tile, steps
from vqtok.models.identity import content_hash
from vqtok.models.memory import plan
from vqtok.models.receptive import AxisField, fields
from vqtok.models.tiling import (
    AxisPiece,
    Source,
    decoder_axis,
    encoder_axis,
    read_volume,
    replicate_read,
    tiles,
)
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
        """Content hash of config and weights (16 hex chars); what code files store.

        A model loaded from a checkpoint keeps the id the checkpoint recorded for as long as
        its config and weights are unchanged, even when this vqtok's config has since gained
        options (at their defaults) that the recorded hash did not cover: codes made with
        the checkpoint then still name the model that decodes them.
        """
        live = content_hash(self.config.to_dict(), self.state_dict())
        recorded = getattr(self, "recorded_id", None)
        return recorded[1] if recorded is not None and recorded[0] == live else live

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

    def receptive_fields(self) -> tuple[tuple[AxisField, ...], tuple[AxisField, ...]]:
        """The encoder's and the decoder's receptive fields per spatial axis, from the layers.

        Returns:
            (encoder, decoder): the encoder's in input units (jump = stride), the decoder's
            in latent units (jump = 1 / stride); see ``vqtok.models.receptive``.
        """
        dims = self.config.dims
        return fields(self.encoder, dims), fields(self.decoder, dims)

    @torch.no_grad()
    def encode_tiled(
        self, x: Tensor, piece: int | Sequence[int | None], samples: int | None = None
    ) -> Tensor:
        """``encode(x)`` computed piece by piece: time chunks and spatial tiles.

        Each piece covers ``piece`` latent positions per axis and reads the input with the
        halo its receptive field needs, starting on a multiple of the stride; the trailing
        replicate padding is applied per piece as ``encode`` applies it to the whole. Peak
        memory follows the piece, not the input.

        Equality with ``encode``: the network computes the same sums over the same inputs,
        but convolution backends (oneDNN on the CPU) block and vectorize them differently
        for other input sizes, so fp32 latents may differ from the whole input's by a few
        ulps (measured: at most ~1e-6 relative to the latent's scale; bit-exact in fp64, and
        often bit-exact in fp32). Codes are therefore equal wherever the nearest code wins
        by more than that noise; a code may differ only where the whole input's two nearest
        codes are tied to within float rounding, and the two codes then decode to vectors
        equally close to the latent. Decode what you encode with the same entry point and
        the result does not depend on the piece size beyond that.

        Args:
            x: (B, C, *spatial) float in [-1, 1].
            piece: Latent positions per piece on each axis (None: the whole axis), or one
                int for every axis. On a causal time axis a chunk of n latent frames reads
                n * s_t new frames.
            samples: Samples per pass through the network (default all B).

        Returns:
            codes int64 as ``encode`` returns them: (B, *latent) or (B, Q, *latent).

        Raises:
            ValueError: Bad input (see ``encode``), or a piece size below 1.
            TypeError: ``x`` is not floating point.
        """
        self._check_input(x)
        if x.shape[0] == 0:
            return self.encode(x)
        return self._encode_tiles(x, piece, samples, self.quantizer.encode)

    def _encode_tiles(
        self,
        x: Tensor,
        piece: int | Sequence[int | None],
        samples: int | None,
        head: Callable[[Tensor], Tensor],
    ) -> Tensor:
        """``head(encoder(pad(x)))`` tile by tile.

        ``head`` maps (b, D, *latent) to (b, ..., *latent) position by position (the
        quantizer, or the identity in tests).

        Raises:
            ValueError: ``samples`` is below 1, or ``piece`` does not fit the axes.
        """
        spatial = tuple(x.shape[2:])
        axes = self._encoder_pieces(spatial, piece)
        step = x.shape[0] if samples is None else samples
        if step < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        out: Tensor | None = None
        for b in range(0, x.shape[0], step):
            for tile in tiles(axes):
                reads = [p.read for p in tile]
                # A Source holds one sample and is read box by box, in time order.
                clip = x.read(reads) if isinstance(x, Source) else replicate_read(
                    x[b : b + step], reads
                )
                result = head(self.encoder(clip))
                if out is None:
                    lead = result.shape[1 : result.dim() - len(tile)]
                    shape = (x.shape[0], *lead, *self.latent_shape(spatial))
                    out = result.new_empty(shape)
                keep = tuple(slice(*p.keep) for p in tile)
                write = tuple(slice(*p.write) for p in tile)
                out[(slice(b, b + step), Ellipsis, *write)] = result[(Ellipsis, *keep)]
        assert out is not None  # x has at least one sample and one tile
        return out

    @torch.no_grad()
    def decode_tiled(
        self,
        codes: Tensor,
        piece: int | Sequence[int | None],
        size: Sequence[int] | None = None,
    ) -> Tensor:
        """``decode(codes, size)`` computed piece by piece; see ``decode_slabs``.

        Args:
            codes: int64 as ``encode`` returns them.
            piece: Latent positions' worth of output per piece on each axis (None: whole).
            size: The spatial size to crop to; without it the padded size is kept.

        Returns:
            (B, C, *size) float, equal to ``decode(codes, size)`` up to the float noise of
            other conv blocking (bit-exact in fp64; see ``encode_tiled``).

        Raises:
            ValueError: A piece size below 1, or bad residual-VQ codes (see ``decode``).
        """
        return torch.cat(list(self.decode_slabs(codes, piece, size)), dim=2)

    @torch.no_grad()
    def decode_slabs(
        self,
        codes: Tensor,
        piece: int | Sequence[int | None],
        size: Sequence[int] | None = None,
    ) -> Iterator[Tensor]:
        """Decode slab by slab along the first spatial axis (time for audio and video).

        A writer can then stream the output without holding all of it. Each tile decodes
        the codes its output's receptive field needs and keeps the outputs whose field it
        covered. Samples are decoded one at a time, as ``decode`` does, so
        the result is batch-invariant.

        Args:
            codes: int64 (B, *latent) or (B, q, *latent), as ``decode`` takes them.
            piece: Latent positions' worth of output per piece on each axis (None: whole).
            size: The spatial size to crop to; without it the padded size is kept.

        Yields:
            (B, C, t, *size[1:]) float slabs, in order along axis 0; together ``size``.

        Raises:
            ValueError: A piece size below 1.
        """
        latent = tuple(codes.shape[-self.config.dims :])
        full = self.output_shape(latent)
        size = full if size is None else tuple(min(n, f) for n, f in zip(size, full, strict=True))
        axes = self._decoder_pieces(latent, piece, size)
        layers = steps(self.decoder, self.config.dims)
        channels = self.config.channels
        dtype = next(self.decoder.parameters()).dtype
        for first in axes[0]:
            rows = first.write[1] - first.write[0]
            shape = (codes.shape[0], channels, rows, *size[1:])
            slab = torch.empty(shape, dtype=dtype, device=codes.device)
            for tile in tiles([[first], *axes[1:]]):
                read = tuple(slice(*p.read) for p in tile)
                write = tuple(slice(*p.write) for p in tile[1:])
                starts = [p.read[0] for p in tile]
                want = [p.write for p in tile]
                for b, one in enumerate(codes.split(1)):
                    z = self.quantizer.decode(one[(Ellipsis, *read)])
                    part = decode_tile(layers, z, starts, latent, want)
                    slab[(slice(b, b + 1), slice(None), slice(None), *write)] = part
            yield slab

    def output_shape(self, latent: Sequence[int]) -> tuple[int, ...]:
        """The decoder's spatial output shape for codes of spatial shape ``latent``.

        Args:
            latent: The codes' spatial sizes.

        Returns:
            The padded size: latent * stride, or 1 + (latent - 1) * stride on a causal
            time axis.
        """
        out = []
        for axis, (n, s) in enumerate(zip(latent, self.config.strides, strict=True)):
            out.append(1 + (n - 1) * s if axis == 0 and self.config.causal_time else n * s)
        return tuple(out)

    def halo_ratio(
        self, shape: Sequence[int], piece: int | Sequence[int | None], part: str = "encode"
    ) -> float:
        """Compute of a tiled pass over the whole-input pass: 1.0 means no halo.

        Encode: every layer's work is proportional to the positions it is given, and a
        piece's positions are proportional to what it reads, so the ratio is the padded
        input volume the pieces read over the whole input's. Decode: tiles cut every layer
        down to what their outputs need (``vqtok.models.cropped``), so the ratio counts each
        layer's multiply-adds over the positions it keeps.

        Args:
            shape: The input's spatial shape (for "decode", too: the media's shape).
            piece: As ``encode_tiled`` and ``decode_tiled`` take it.
            part: "encode" or "decode".

        Returns:
            The ratio (>= 1, except a decode cropped to less than its padded size).

        Raises:
            ValueError: ``part`` is neither, or a piece size below 1.
        """
        shape = tuple(shape)
        if part == "encode":
            axes = self._encoder_pieces(shape, piece)
            whole = padded_shape(shape, self.config.strides, self.config.causal_time)
            return read_volume(axes) / math.prod(whole)
        if part == "decode":
            latent = self.latent_shape(shape)
            axes = self._decoder_pieces(latent, piece, shape)
            plan = steps(self.decoder, self.config.dims)
            return compute_ratio(plan, axes, latent, self.output_shape(latent))
        raise ValueError(f"part must be 'encode' or 'decode', got {part!r}")

    @torch.no_grad()
    def encode_within(
        self,
        x: Tensor | Source,
        max_bytes: int,
        limit: Sequence[int | None] | None = None,
    ) -> Tensor:
        """``encode(x)`` with the pass's extra memory planned to stay under ``max_bytes``.

        Inputs whose whole pass fits go through ``encode`` unchanged (in as many passes of
        whole samples as the budget needs); larger ones through ``encode_tiled`` with the
        pieces ``vqtok.models.memory.plan`` picks. A ``Source`` (one sample read box by
        box, e.g. video decoded as it is read) always goes piece by piece, so that only
        the pieces' inputs are ever held.

        Args:
            x: (B, C, *spatial) float in [-1, 1], or a ``Source`` of one sample.
            max_bytes: Budget for activations on top of ``x`` and the codes.
            limit: The most latent positions per piece on each axis (None: no cap), e.g.
                a cap on time that bounds what a streaming source buffers.

        Returns:
            codes int64 as ``encode`` returns them.

        Raises:
            BudgetError: Not even the smallest piece of one sample fits.
            ValueError: Bad input (see ``encode``).
            TypeError: ``x`` is not floating point.
        """
        streamed = isinstance(x, Source)
        self._check_shape(tuple(x.shape), x.dtype)
        chosen = plan(self, tuple(x.shape), max_bytes, "encode", x.dtype, limit)
        if chosen.whole and not streamed and chosen.samples >= x.shape[0]:
            return self.encode(x)
        piece = tuple(
            n if p is None else p
            for p, n in zip(chosen.piece, self.latent_shape(x.shape[2:]), strict=True)
        )
        return self._encode_tiles(x, piece, chosen.samples, self.quantizer.encode)

    @torch.no_grad()
    def decode_within(
        self, codes: Tensor, max_bytes: int, size: Sequence[int] | None = None
    ) -> Tensor:
        """``decode(codes, size)`` with the pass's extra memory planned under ``max_bytes``.

        Args:
            codes: int64 as ``encode`` returns them.
            max_bytes: Budget for activations on top of the codes and the decoded result.
            size: The spatial size to crop to; without it the padded size is kept.

        Returns:
            (B, C, *size) float.

        Raises:
            BudgetError: Not even the smallest piece fits.
            ValueError: ``size`` is not a crop of what the codes decode to.
        """
        chosen = self._decode_plan(codes, max_bytes, size)
        if chosen.whole:
            return self.decode(codes, size)
        return self.decode_tiled(codes, chosen.piece, size)

    @torch.no_grad()
    def decode_slabs_within(
        self,
        codes: Tensor,
        max_bytes: int,
        size: Sequence[int] | None = None,
        limit: Sequence[int | None] | None = None,
    ) -> Iterator[Tensor]:
        """``decode_slabs`` with pieces planned under ``max_bytes`` (see ``decode_within``).

        Args:
            codes: int64 as ``encode`` returns them.
            max_bytes: Budget for activations on top of the codes and one slab.
            size: The spatial size to crop to; without it the padded size is kept.
            limit: The most latent positions per piece on each axis (None: no cap); a cap
                on time bounds each slab, so a writer streaming them holds one at a time.

        Returns:
            An iterator of (B, C, t, *size[1:]) float slabs in time order, as
            ``decode_slabs`` yields them; planned (and checked) before the first.

        Raises:
            BudgetError: Not even the smallest piece fits.
            ValueError: ``size`` is not a crop of what the codes decode to.
        """
        chosen = self._decode_plan(codes, max_bytes, size, limit)
        return self.decode_slabs(codes, chosen.piece, size)

    def _decode_plan(self, codes: Tensor, max_bytes: int, size: Sequence[int] | None,
                     limit: Sequence[int | None] | None = None):
        """The planner's pieces for decoding ``codes`` to ``size`` within ``max_bytes``."""
        latent = tuple(codes.shape[-self.config.dims :])
        # A size beyond the decoded output is a corrupt description, not a bigger job: refuse
        # it before planning pieces for it.
        media = self._decoded_size(latent, size)
        dtype = next(self.decoder.parameters()).dtype
        shape = (codes.shape[0], self.config.channels, *media)
        return plan(self, shape, max_bytes, "decode", dtype, limit)

    def _decoded_size(self, latent: Sequence[int], size: Sequence[int] | None) -> tuple[int, ...]:
        """``size`` (default: the full output), checked to be a crop of the decoded size.

        Raises:
            ValueError: It is not.
        """
        full = self.output_shape(latent)
        media = full if size is None else tuple(size)
        # A size beyond the decoded output is a corrupt description, not a bigger job.
        fits = len(media) == len(full) and all(
            1 <= m <= f for m, f in zip(media, full, strict=True)
        )
        if not fits:
            raise ValueError(f"size {list(media)} is not a crop of the decoded {list(full)}")
        return media

    @torch.no_grad()
    def encode_chunked(self, x: Tensor, chunk_frames: int) -> Tensor:
        """Video only: ``encode(x)`` computed a chunk of time at a time; see ``encode_tiled``.

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
        return self.encode_tiled(x, (step, None, None))

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

    def _pieces(self, piece: int | Sequence[int | None], shape: Sequence[int]) -> list[int]:
        """Latent positions per piece on each axis, from ``piece`` (None: the whole axis).

        Raises:
            ValueError: ``piece`` does not give one positive size per axis.
        """
        sizes = [piece] * self.config.dims if isinstance(piece, int) else list(piece)
        if len(sizes) != self.config.dims:
            raise ValueError(f"piece needs {self.config.dims} sizes, got {piece!r}")
        out = [max(n, 1) if p is None else p for p, n in zip(sizes, shape, strict=True)]
        if min(out) < 1:
            raise ValueError(f"piece sizes must be >= 1 latent position, got {piece!r}")
        return out

    def _encoder_pieces(
        self, spatial: Sequence[int], piece: int | Sequence[int | None]
    ) -> list[list[AxisPiece]]:
        strides, causal = self.config.strides, self.config.causal_time
        padded = padded_shape(tuple(spatial), strides, causal)
        sizes = self._pieces(piece, self.latent_shape(spatial))
        field = fields(self.encoder, self.config.dims)
        return [
            encoder_axis(padded[a], strides[a], causal and a == 0, field[a], sizes[a])
            for a in range(self.config.dims)
        ]

    def _decoder_pieces(
        self, latent: Sequence[int], piece: int | Sequence[int | None], size: Sequence[int]
    ) -> list[list[AxisPiece]]:
        strides, causal = self.config.strides, self.config.causal_time
        sizes = self._pieces(piece, latent)
        field = fields(self.decoder, self.config.dims)
        return [
            decoder_axis(latent[a], strides[a], causal and a == 0, field[a], sizes[a], size[a])
            for a in range(self.config.dims)
        ]

    def _pad(self, x: Tensor) -> Tensor:
        return pad_to_multiple(x, self.config.strides, self.config.causal_time)

    def _check_input(self, x: Tensor) -> None:
        self._check_shape(tuple(x.shape), x.dtype)

    def _check_shape(self, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        want = 2 + self.config.dims
        if len(shape) != want or shape[1] != self.config.channels:
            layout = {"audio": "(B, C, T)", "image": "(B, C, H, W)", "video": "(B, C, T, H, W)"}
            raise ValueError(
                f"{self.config.modality} input must be {layout[self.config.modality]} with "
                f"C={self.config.channels}; got shape {shape}"
            )
        if not dtype.is_floating_point:
            raise TypeError(f"input must be floating point in [-1, 1], got {dtype}")
        if min(shape[2:]) < 1:
            raise ValueError(f"input has an empty axis: shape {shape}")
