"""Reconstruction losses per modality.

Images and video: weighted L1 and L2. Audio adds, as neural audio codecs do, a
multi-resolution STFT loss (spectral convergence + log-magnitude L1 over several FFT
sizes) and an L1 distance between log-mel spectrograms, built on torchaudio transforms.
All terms are computed in fp32, outside autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

STFT_SIZES = (512, 1024, 2048)
LOG_FLOOR = 1e-5


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1, averaged over FFT sizes (hop = n_fft / 4)."""

    def __init__(self, fft_sizes: tuple[int, ...] = STFT_SIZES) -> None:
        super().__init__()
        self.spectrograms = nn.ModuleList(
            torchaudio.transforms.Spectrogram(n_fft=n, hop_length=n // 4, power=1.0)
            for n in fft_sizes
        )

    def forward(self, x_hat: Tensor, x: Tensor) -> Tensor:
        """x_hat, x: (B, C, T) float -> scalar fp32."""
        total = x.new_zeros((), dtype=torch.float32)
        for spectrogram in self.spectrograms:
            s_hat, s = spectrogram(x_hat.float()), spectrogram(x.float())
            convergence = torch.linalg.vector_norm(s - s_hat) / torch.linalg.vector_norm(
                s
            ).clamp_min(LOG_FLOOR)
            log_l1 = F.l1_loss(
                torch.log(s_hat.clamp_min(LOG_FLOOR)), torch.log(s.clamp_min(LOG_FLOOR))
            )
            total = total + convergence + log_l1
        return total / len(self.spectrograms)


class LogMel(nn.Module):
    """(B, C, T) float audio -> (B, C, n_mels, frames) log-mel spectrogram, fp32."""

    def __init__(self, sample_rate: int, n_mels: int = 64) -> None:
        super().__init__()
        n_fft = 1024 if sample_rate >= 16000 else 512
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate, n_fft=n_fft, hop_length=n_fft // 4, n_mels=n_mels, power=1.0
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.log(self.mel(x.float()).clamp_min(LOG_FLOOR))


def mel_distance(log_mel: LogMel, x_hat: Tensor, x: Tensor) -> Tensor:
    """Mean absolute difference of log-mel spectrograms: scalar fp32."""
    return F.l1_loss(log_mel(x_hat), log_mel(x))


class ReconstructionLoss(nn.Module):
    """The weighted reconstruction terms for one modality; zero weights are skipped.

    ``forward(x_hat, x)`` with (B, C, *spatial) floats returns {"l1", "l2", "stft", "mel"}
    (those with a weight), each a weighted scalar fp32 tensor.
    """

    def __init__(self, modality: str, *, sample_rate: int | None = None, l1: float = 0.0,
                 l2: float = 1.0, stft: float = 1.0, mel: float = 1.0) -> None:
        super().__init__()
        audio = modality == "audio"
        self.weights = {
            "l1": l1,
            "l2": l2,
            "stft": stft if audio else 0.0,
            "mel": mel if audio else 0.0,
        }
        self.stft = MultiResolutionSTFTLoss() if self.weights["stft"] else None
        self.log_mel = LogMel(sample_rate or 16000) if self.weights["mel"] else None

    def forward(self, x_hat: Tensor, x: Tensor) -> dict[str, Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x_hat, x = x_hat.float(), x.float()
            terms = {"l1": lambda: F.l1_loss(x_hat, x), "l2": lambda: F.mse_loss(x_hat, x),
                     "stft": lambda: self.stft(x_hat, x),
                     "mel": lambda: mel_distance(self.log_mel, x_hat, x)}
            return {name: weight * terms[name]() for name, weight in self.weights.items() if weight}
