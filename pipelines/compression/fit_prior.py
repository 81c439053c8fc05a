"""`fit_prior_shards`: measure a checkpoint's code prior on media shards and store it in it.

Reads the shards like `encode_shards` (same cutting of audio windows and video clips),
counts the codes per level in FOLDS folds (sample i in fold i mod FOLDS), smooths and
quantizes them (`vqtok.entropy.smoothed_prior`, cross-validated over the folds) and saves
the checkpoint with the prior, which `vqtok compress` then entropy-codes with.
Samples that cannot be decoded are skipped, counted and reported, never dropped silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import vqtok
from vqtok.entropy import entropy, fit_prior, prior_id, smoothed_prior
from vqtok.pipelines.config import JobConfig, MediaOptions, RuntimeOptions
from vqtok.pipelines.data.batches import MediaBatches, PreparedBatch, identity
from vqtok.pipelines.data.sources import expand_shards
from vqtok.pipelines.errors import PipelineError, SampleError
from vqtok.pipelines.jobs.common import load_model
from vqtok.pipelines.jobs.encode import media_config
from vqtok.pipelines.jobs.preflight import check_all, check_media_input, check_output_folder

FOLDS = 5


@dataclass
class FitPriorConfig(JobConfig):
    """Options of `fit-prior`: media is cut as `vqtok encode` cuts it."""

    media: MediaOptions = field(default_factory=MediaOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    workers: int = 2  # DataLoader workers reading and decoding shards

    def problems(self) -> list[str]:
        """`workers` is 0 or more.

        Returns:
            One message per broken rule.
        """
        return [] if self.workers >= 0 else [f"workers must be 0 or more, got {self.workers}"]


@dataclass
class PriorSummary:
    """What `fit_prior_shards` measured and where it saved the checkpoint."""

    checkpoint: str
    prior_id: str
    samples: int = 0
    codes: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    entropy_bits_per_code: list[float] = field(default_factory=list)
    uniform_weight: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The summary as plain JSON-ready data.

        Returns:
            The fields as a dict.
        """
        return asdict(self)


def fit_prior_shards(
    checkpoint: str | Path,
    shards: str | list[str],
    output: str | Path | None = None,
    config: FitPriorConfig | None = None,
) -> PriorSummary:
    """Fit the prior of `checkpoint` on media `shards`; save to `output` (default: in place).

    Args:
        checkpoint: A tokenizer checkpoint directory.
        shards: Media shards: a folder, file, brace pattern or URL, or a list of them.
        output: Where to save the checkpoint with its prior (default: `checkpoint`).
        config: Media cutting, batch size, workers and device, as for encoding.

    Returns:
        The saved checkpoint, the prior's id, counts of samples, codes and skipped samples,
        and per level the code entropy (bits per code) and the weight of the uniform mix.

    Raises:
        UsageError: Before any work, for bad options, an unloadable checkpoint or device,
            no matching shards, code shards or shards of another modality, or a checkpoint
            folder that cannot be written.
        PipelineError: When no sample of the shards could be read.
    """
    config = config or FitPriorConfig()
    config.check()
    model = load_model(checkpoint, config.runtime.device)
    urls = expand_shards(shards)
    target = Path(output if output is not None else checkpoint)
    check_all([
        lambda: check_media_input(urls, model.config.modality),
        lambda: check_output_folder(target, "checkpoint folder"),
    ])
    dataset = MediaBatches(urls, media_config(model, config.media), config.runtime.batch_size)
    loader = DataLoader(dataset, batch_size=None, num_workers=min(config.workers, len(urls)),
                        collate_fn=identity)
    errors: list[SampleError] = []
    samples = 0

    def batches():
        nonlocal samples
        for event in loader:
            if isinstance(event, SampleError):
                errors.append(event)
            elif isinstance(event, PreparedBatch):
                # Each sample's pieces stay in one fold, so that folds are held out honestly.
                per_sample = [(samples + i) % FOLDS for i in range(len(event.samples))]
                folds = np.repeat(per_sample, [sample.pieces for sample in event.samples])
                samples += len(event.samples)
                for start in range(0, len(folds), config.runtime.batch_size):
                    stop = start + config.runtime.batch_size
                    yield folds[start:stop], event.pieces[start:stop]

    fold_counts = fit_prior(model, batches(), FOLDS)
    if samples == 0:
        raise PipelineError(
            f"no sample of {len(urls)} shard(s) could be read; nothing to fit the prior on"
        )
    prior, weights = smoothed_prior(fold_counts)
    counts = fold_counts.sum(axis=0)
    model.code_prior = torch.from_numpy(prior)
    target = vqtok.save(model.cpu(), target)
    return PriorSummary(
        checkpoint=str(target), prior_id=prior_id(prior), samples=samples, codes=int(counts.sum()),
        skipped=len(errors), errors=[error.describe() for error in errors],
        entropy_bits_per_code=[round(entropy(row), 4) for row in counts],
        uniform_weight=[round(w, 6) for w in weights],
    )

