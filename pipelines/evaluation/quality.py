"""Distortion metrics for rate-distortion curves, on what a user would get back.

Images and video are compared as 8-bit RGB (PSNR, and MS-SSIM after Wang, Simoncelli and
Bovik 2003); audio as mono float at the original sample rate (SI-SNR, and the log-mel
distance the training code reports).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vqtok.pipelines.training.losses import LogMel, mel_distance

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


# Values per block when a metric walks a signal in blocks: float64 copies of a block, not
# of the whole signal, are what the metrics hold beyond their inputs.
BLOCK_VALUES = 1 << 22


def psnr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB of uint8 arrays of equal shape (peak 255); inf when they are equal."""
    error = SquaredError()
    error.add(reference, decoded)
    return error.psnr()


class SquaredError:
    """The squared error of uint8 signals given block by block (e.g. frames as they are
    decoded), summed in float64 over blocks of at most ``BLOCK_VALUES`` values."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, reference: np.ndarray, decoded: np.ndarray) -> None:
        """Add a block: two uint8 arrays of equal shape, (t, ...) along a first axis.

        Raises:
            ValueError: The shapes differ.
        """
        if reference.shape != decoded.shape:
            raise ValueError(f"decoded shape {decoded.shape} differs from the input's "
                             f"{reference.shape}")
        step = max(1, BLOCK_VALUES // max(1, math.prod(reference.shape[1:])))
        for start in range(0, reference.shape[0], step):
            difference = (reference[start : start + step].astype(np.float64)
                          - decoded[start : start + step].astype(np.float64))
            self.total += float(np.sum(difference * difference))
            self.count += difference.size

    def psnr(self) -> float:
        """PSNR in dB of all blocks added (peak 255); inf when they are equal."""
        if self.count == 0 or self.total == 0:
            return math.inf
        return 10 * math.log10(255.0**2 / (self.total / self.count))


def ms_ssim(reference: np.ndarray, decoded: np.ndarray) -> float:
    """MS-SSIM of uint8 images `(H, W, C)` (or frames `(T, H, W, C)`, averaged), data range 255.

    Five scales with the standard weights; an image too small for five scales of the 11-tap
    window uses the scales that fit, with their weights renormalized (below 11 pixels, one
    scale with a window as wide as the image).
    """
    x = _nchw(reference)
    y = _nchw(decoded)
    side = min(x.shape[-2:])
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side >> scales >= SSIM_WINDOW:
        scales += 1
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    window = _gaussian_window(min(SSIM_WINDOW, *x.shape[-2:]), x.shape[1])
    factors = []
    for scale in range(scales):
        similarity, contrast = _ssim_terms(x, y, window)
        factors.append((similarity if scale == scales - 1 else contrast).clamp_min(0))
        if scale < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    per_image = torch.stack(factors, dim=-1).pow(weights).prod(dim=-1)
    return float(per_image.mean())


def _nchw(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, C) or (T, H, W, C) uint8 -> (N, C, H, W) float64 in [0, 255]."""
    tensor = torch.from_numpy(np.array(pixels, dtype=np.float64))
    tensor = tensor.unsqueeze(0) if tensor.dim() == 3 else tensor
    return tensor.permute(0, 3, 1, 2)


def _gaussian_window(size: int, channels: int) -> torch.Tensor:
    """The 1-D Gaussian taps `(C, 1, size, 1)`; the 2-D window is separable."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * SSIM_SIGMA**2))
    return (g / g.sum()).view(1, 1, size, 1).expand(channels, 1, size, 1).contiguous()


def _ssim_terms(
    x: torch.Tensor, y: torch.Tensor, window: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and contrast-structure term per image and channel: two (N, C) float64."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    channels = x.shape[1]

    def blur(t: torch.Tensor) -> torch.Tensor:
        rows = F.conv2d(t, window, groups=channels)
        return F.conv2d(rows, window.transpose(2, 3), groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    contrast = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (luminance * contrast).mean(dim=(-2, -1)), contrast.mean(dim=(-2, -1))


def si_snr(reference: np.ndarray, decoded: np.ndarray) -> float:
    """Scale-invariant SNR in dB of mono float signals `(T,)` of equal length.

    Computed in two passes over blocks of ``BLOCK_VALUES`` samples (float64 sums), so
    that an hour of audio is not copied to float64 whole.
    """
    s_mean = float(np.mean(reference, dtype=np.float64))
    e_mean = float(np.mean(decoded, dtype=np.float64))

    def blocks():
        for start in range(0, len(reference), BLOCK_VALUES):
            stop = start + BLOCK_VALUES
            yield (reference[start:stop].astype(np.float64) - s_mean,
                   decoded[start:stop].astype(np.float64) - e_mean)

    cross = power = 0.0
    for s, e in blocks():
        cross += float(e @ s)
        power += float(s @ s)
    scale = cross / max(power, 1e-12)
    noise = sum(float((e - scale * s) @ (e - scale * s)) for s, e in blocks())
    target = scale * scale * power
    return 10 * math.log10(max(target, 1e-12) / max(noise, 1e-12))


def log_mel_distance(reference: np.ndarray, decoded: np.ndarray, sample_rate: int) -> float:
    """Mean absolute log-mel difference of mono float signals `(T,)` (as in training)."""
    log_mel = LogMel(sample_rate)
    as_batch = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).view(1, 1, -1)
                for a in (decoded, reference)]
    return float(mel_distance(log_mel, *as_batch))
