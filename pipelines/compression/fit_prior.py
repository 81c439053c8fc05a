"""`fit_prior_shards`: measure a checkpoint's code prior on media shards and store it in it.

Reads the shards like `vqtok compress` (same cutting of audio windows and video clips; a
whole video decoded as the encoder reads it), encodes them within the memory budget
(`--max-memory`), counts the codes per level in FOLDS folds (sample i in fold i mod FOLDS),
smooths and quantizes them (`vqtok.entropy.smoothed_prior`, cross-validated over the
folds) and saves the checkpoint with the prior, which `vqtok compress` then entropy-codes with.
Samples that cannot be decoded are skipped, counted and reported, never dropped silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import vqtok
from vqtok.entropy import code_counts, entropy, prior_id, smoothed_prior
from vqtok.models.memory import BudgetError
from vqtok.pipelines.config import JobConfig, MediaOptions, RuntimeOptions
from vqtok.pipelines.data.batches import MediaBatches, PreparedBatch, identity
from vqtok.pipelines.data.media import AudioSource, VideoSource
from vqtok.pipelines.data.sources import expand_shards
from vqtok.pipelines.errors import PipelineError, SampleError, UsageError
from vqtok.pipelines.jobs.common import load_model
from vqtok.pipelines.jobs.encode import encode_audio, encode_pieces, encode_video, media_config
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


def _sample_codes(model, batch: PreparedBatch, runtime: RuntimeOptions) -> list[np.ndarray]:
    """The codes (N_i, [Q,] *latent) of each sample of `batch`, within the memory budget.

    Raises:
        UsageError: Not even one piece of a sample fits the budget.
    """
    try:
        if isinstance(batch.pieces, VideoSource):
            return [encode_video(model, batch.pieces, runtime.max_bytes(), runtime.device)[0]]
        if isinstance(batch.pieces, AudioSource):
            return [encode_audio(model, batch.pieces, runtime.max_bytes(), runtime.device)]
        return encode_pieces(model, batch.pieces, [s.pieces for s in batch.samples], runtime)
    except BudgetError as error:
        raise UsageError(f"{error}; raise --max-memory") from None


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
            folder that cannot be written; while encoding, a sample not even one piece of
            which fits the memory budget.
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
    media = media_config(model, config.media)
    # A whole video or audio file is decoded as the encoder reads it, never held (clips are
    # cut whole; audio windows batch).
    dataset = MediaBatches(urls, media, config.runtime.batch_size,
                           stream=media.clip_frames is None)
    loader = DataLoader(dataset, batch_size=None, num_workers=min(config.workers, len(urls)),
                        collate_fn=identity)
    errors: list[SampleError] = []
    fold_counts = np.zeros((FOLDS, model.num_levels, model.codebook_size), dtype=np.int64)
    samples = 0
    for event in loader:
        if isinstance(event, SampleError):
            errors.append(event)
        elif isinstance(event, PreparedBatch):
            # Each sample's codes stay in one fold, so that folds are held out honestly.
            for codes in _sample_codes(model, event, config.runtime):
                fold_counts[samples % FOLDS] += code_counts(codes, model.codebook_size,
                                                            model.num_levels)
                samples += 1
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

