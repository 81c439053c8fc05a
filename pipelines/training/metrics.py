"""Validation metrics, accumulated over batches.

Reconstruction: MSE on the model's [-1, 1] scale and PSNR from it (peak-to-peak 2, the
same figure as PSNR of [0, 1] images). Codes: per level, the fraction of the codebook used
and the perplexity of the code histogram over the whole validation set; bits per token is
the empirical entropy of a token (summed over residual levels), the rate an ideal entropy
coder would reach, next to the nominal levels * log2(K). Audio adds the log-mel distance.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vqtok.pipelines.errors import PipelineError
from vqtok.pipelines.training.losses import LogMel, mel_distance

PEAK_TO_PEAK = 2.0


class ValidationMetrics:
    """Feed ``update`` batch by batch, then read ``compute()``.

    codebook_size, num_levels: of the model's codes (0 levels for a model without codes).
    """

    def __init__(self, codebook_size: int = 0, num_levels: int = 0,
                 sample_rate: int | None = None) -> None:
        self.squared_error = 0.0
        self.values = 0
        self.mel_total = 0.0
        self.batches = 0
        self.histograms = torch.zeros(num_levels, codebook_size, dtype=torch.int64)
        self.log_mel = LogMel(sample_rate) if sample_rate else None

    @torch.no_grad()
    def update(self, x: Tensor, x_hat: Tensor, codes: Tensor | None = None) -> None:
        """x, x_hat: (B, C, *spatial) float; codes: int64 (B, *latent) or (B, Q, *latent)."""
        x, x_hat = x.float().cpu(), x_hat.float().cpu()
        self.squared_error += float((x_hat - x).double().pow(2).sum())
        self.values += x.numel()
        self.batches += 1
        if self.log_mel is not None:
            self.mel_total += float(mel_distance(self.log_mel, x_hat, x))
        if codes is not None and self.histograms.numel():
            per_level = codes.cpu().reshape(codes.shape[0], self.histograms.shape[0], -1)
            for level in range(self.histograms.shape[0]):
                self.histograms[level] += torch.bincount(
                    per_level[:, level].reshape(-1), minlength=self.histograms.shape[1])

    def compute(self) -> dict[str, float]:
        """{"mse", "psnr", ...}; with codes also "codebook_usage", "perplexity",
        "bits_per_token", "nominal_bits_per_token"; for audio "mel_distance"."""
        if not self.values:
            raise PipelineError("the validation shards gave no sample to validate on")
        mse = self.squared_error / self.values
        out = {"mse": mse, "psnr": 10 * math.log10(PEAK_TO_PEAK**2 / max(mse, 1e-20))}
        if self.log_mel is not None:
            out["mel_distance"] = self.mel_total / self.batches
        if self.histograms.numel() and int(self.histograms.sum()):
            entropies = [_entropy_bits(h) for h in self.histograms]
            out["codebook_usage"] = float((self.histograms > 0).float().mean())
            out["perplexity"] = sum(2.0**e for e in entropies) / len(entropies)
            out["bits_per_token"] = sum(entropies)
            out["nominal_bits_per_token"] = len(entropies) * math.log2(self.histograms.shape[1])
        return out


def _entropy_bits(histogram: Tensor) -> float:
    p = histogram[histogram > 0].double() / histogram.sum()
    return float(-(p * p.log2()).sum())
