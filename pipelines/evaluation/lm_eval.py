"""`vqtok lm eval`: held-out cross-entropy of a token LM beside the entropy coder's figures.

For the same exported tokens it reports bits per code token and per sample three ways:
the LM (teacher-forced next-token cross-entropy, each piece from its start token, with
the true class for a conditional LM), the static prior (``ans-static``: the tokenizer's
code-frequency table, uniform without a tokenizer checkpoint) and the adaptive coder
(``ans-adaptive``, adapting within each sample as it does within a file). The prior
figures are ideal code lengths, as the LM's are; real payloads add a few bytes each.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqtok.checkpoint import CheckpointError
from vqtok.entropy import ADAPTIVE_CODER, CODER, ideal_bits, model_prior, uniform_prior
from vqtok.lm import TokenLM, load_lm
from vqtok.pipelines.config import JobConfig, RuntimeOptions
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs.common import load_model
from vqtok.pipelines.jobs.tokens import TokenDataset
from vqtok.pipelines.training.lm_data import Pieces, check_export, read_labels
from vqtok.pipelines.training.lm_loop import evaluate_pieces


@dataclass
class LMEvalConfig(JobConfig):
    """How to evaluate: ``labels`` are code shards with ``.cls`` fields (conditional LMs),
    ``tokenizer`` the checkpoint whose prior the static and adaptive figures use."""

    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    labels: str = ""
    tokenizer: str = ""
    limit: int = 0

    def problems(self) -> list[str]:
        return [] if self.limit >= 0 else [f"limit must be >= 0, got {self.limit}"]


@dataclass
class LMEvalReport:
    """Bits per code token and per sample: the LM, the static prior, the adaptive coder."""

    lm_id: str
    tokens: str
    samples: int
    code_tokens: int
    lm_bits_per_token: float
    static_bits_per_token: float
    adaptive_bits_per_token: float
    lm_bits_per_sample: float
    static_bits_per_sample: float
    adaptive_bits_per_sample: float
    prior: str
    saving_vs_best_coder: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return asdict(self)


def load_lm_checked(path: str | Path, device: str = "cpu") -> TokenLM:
    """An LM checkpoint, any failure a UsageError that names it.

    Args:
        path: The LM directory.
        device: Where to put it.

    Returns:
        The LM, in eval mode.

    Raises:
        UsageError: The directory is not a readable LM checkpoint.
    """
    try:
        return load_lm(path, device)
    except CheckpointError as error:
        raise UsageError(f"cannot load the LM: {error}") from None


def evaluate_lm(lm_path: str | Path, tokens: str | Path,
                config: LMEvalConfig | None = None) -> LMEvalReport:
    """Held-out bits of the LM on an export, beside the static prior and adaptive coder.

    Args:
        lm_path: The LM checkpoint directory.
        tokens: The ``export-tokens`` prefix of held-out samples.
        config: Labels, tokenizer, device, batch size, sample limit.

    Returns:
        The report.

    Raises:
        UsageError: Unreadable LM or tokens, tokens of another tokenizer, missing labels.
    """
    config = config or LMEvalConfig()
    config.check()
    lm = load_lm_checked(lm_path, config.runtime.device)
    source = _open_tokens(tokens)
    manifest = source.manifest
    if lm.config.tokenizer_id and manifest.model_id != lm.config.tokenizer_id:
        raise UsageError(f"the tokens come from tokenizer {manifest.model_id}, the LM was "
                         f"trained on {lm.config.tokenizer_id}'s")
    labels = None
    if lm.config.num_classes:
        if not config.labels:
            raise UsageError("this LM is class-conditional; pass --labels with the code shards "
                             "that hold the samples' .cls classes")
        labels = read_labels(config.labels, list(manifest.keys), "evaluation")
    pieces = Pieces.build(source, lm.config, labels, "evaluation").first_samples(config.limit)
    samples = pieces.ends
    lm_figures = evaluate_pieces(lm, pieces, config.runtime.batch_size, 0, config.runtime.device)
    prior, prior_name = _prior(config.tokenizer, lm)
    static, adaptive = _coder_bits(pieces.codes, samples, lm.config.num_levels, prior)
    count = pieces.num_tokens
    report = LMEvalReport(
        lm_id=lm.lm_id, tokens=str(tokens), samples=len(samples), code_tokens=count,
        lm_bits_per_token=lm_figures["bits_per_token"],
        static_bits_per_token=static / count, adaptive_bits_per_token=adaptive / count,
        lm_bits_per_sample=lm_figures["bits_per_token"] * count / len(samples),
        static_bits_per_sample=static / len(samples),
        adaptive_bits_per_sample=adaptive / len(samples), prior=prior_name,
    )
    best = min(report.static_bits_per_token, report.adaptive_bits_per_token)
    report.saving_vs_best_coder = 1.0 - report.lm_bits_per_token / best
    return report


def _open_tokens(prefix: str | Path) -> TokenDataset:
    try:
        source = TokenDataset(prefix, 1)
    except (OSError, ValueError, TypeError) as error:
        raise UsageError(f"cannot read the tokens {prefix}: {error}") from None
    check_export(source, "evaluation")
    return source


def _prior(tokenizer: str, lm: TokenLM) -> tuple[np.ndarray, str]:
    if not tokenizer:
        return uniform_prior(lm.config.codebook_size, lm.config.num_levels), "uniform"
    model = load_model(tokenizer, "cpu")
    if model.model_id != lm.config.tokenizer_id:
        raise UsageError(f"--tokenizer is {model.model_id}, the LM's tokenizer is "
                         f"{lm.config.tokenizer_id}")
    return model_prior(model), f"{Path(tokenizer).name} ({model.model_id})"


def _coder_bits(pieces: list[torch.Tensor], ends: list[int], num_levels: int,
                prior: np.ndarray) -> tuple[float, float]:
    """Ideal static and adaptive bits of the pieces, one 'file' per sample."""
    static = adaptive = 0.0
    start = 0
    for end in ends:
        # A sample's pieces have one length (fixed pieces), or the sample is one piece.
        tokens = torch.stack(pieces[start:end]).numpy()
        levels = tokens.reshape(tokens.shape[0], -1, num_levels)  # (pieces, positions, Q)
        stacked = np.moveaxis(levels, 2, 1) if num_levels > 1 else levels[..., 0]
        static += ideal_bits(stacked, prior, CODER)
        adaptive += ideal_bits(stacked, prior, ADAPTIVE_CODER)
        start = end
    return static, adaptive
