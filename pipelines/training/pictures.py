"""PNG pictures of reconstructions, written at each validation.

Images: originals in the top row, reconstructions below. Video: for each clip a row of
original frames and a row of reconstructed frames. Audio: log-mel spectrograms, the
original above its reconstruction. Built with torchvision's ``make_grid`` and Pillow.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from vqtok.pipelines.training.losses import LogMel

MAX_ITEMS = 8
MAX_FRAMES = 8


def reconstruction_picture(x: Tensor, x_hat: Tensor, modality: str,
                           sample_rate: int | None = None) -> Tensor:
    """x, x_hat: (B, C, *spatial) float in [-1, 1] -> (3, H, W) uint8 picture."""
    x, x_hat = x[:MAX_ITEMS].detach().float().cpu(), x_hat[:MAX_ITEMS].detach().float().cpu()
    if modality == "audio":
        tiles = _spectrogram_tiles(x, x_hat, sample_rate or 16000)
        grid = make_grid(tiles, nrow=2, padding=2, pad_value=1.0)
    elif modality == "video":
        frames = [
            clip[:, :MAX_FRAMES].transpose(0, 1)
            for pair in zip(x, x_hat, strict=True)
            for clip in pair
        ]
        width = frames[0].shape[0]
        grid = make_grid(
            torch.cat(frames), nrow=width, padding=2, normalize=True, value_range=(-1, 1)
        )
    else:
        grid = make_grid(
            torch.cat([x, x_hat]), nrow=x.shape[0], padding=2, normalize=True, value_range=(-1, 1)
        )
    return (grid.clamp(0, 1) * 255).round().to(torch.uint8)


def _spectrogram_tiles(x: Tensor, x_hat: Tensor, sample_rate: int) -> Tensor:
    """(2B, 1, n_mels, frames) in [0, 1], original and reconstruction side by side, low
    frequencies at the bottom; both share the original's colour scale."""
    log_mel = LogMel(sample_rate)
    originals = log_mel(x.mean(dim=1, keepdim=True))
    recons = log_mel(x_hat.mean(dim=1, keepdim=True))
    low, high = (
        originals.amin(dim=(1, 2, 3), keepdim=True),
        originals.amax(dim=(1, 2, 3), keepdim=True),
    )
    scale = (high - low).clamp_min(1e-6)
    tiles = torch.stack([(originals - low) / scale, (recons - low) / scale], dim=1).flatten(0, 1)
    return tiles.clamp(0, 1).flip(-2)


def save_reconstruction_picture(path: str | Path, x: Tensor, x_hat: Tensor, modality: str,
                                sample_rate: int | None = None) -> Path:
    """Write ``reconstruction_picture`` as PNG to ``path``; returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = reconstruction_picture(x, x_hat, modality, sample_rate)
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)
    return path
