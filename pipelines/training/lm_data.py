"""Pieces of exported tokens for LM training: labels, layout checks, reproducible batches.

The exported files are read through an object with the ``TokenDataset`` interface
(``manifest``, ``num_samples``, ``sample(i)``): the CLI passes
``vqtok.pipelines.jobs.tokens.TokenDataset``, which this wing may not import (training and
jobs are wings of one rank). A sample's codes (its BOS/EOS stripped) are cut into pieces
of ``prod(layout) * Q`` tokens, or, for audio and video (a relative-time LM), kept whole
at any length; pieces longer than the LM's context are visited chunk by chunk.

Batch b of epoch e is a function of (seed, e, b) alone, class dropout included, so a run
resumed from a checkpoint sees exactly the batches it would have seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from vqtok.lm import LMConfig, chunk_starts
from vqtok.lm.layout import chunk_steps
from vqtok.lm.sequences import chunk_sequence, collate
from vqtok.pipelines.data.sources import expand_shards, shard_name
from vqtok.pipelines.data.tario import read_samples
from vqtok.pipelines.errors import SampleError, UsageError
from vqtok.pipelines.training.data import DataPosition

Batch = tuple[Tensor, Tensor, Tensor]


class TokenSource(Protocol):
    """What LM training reads of an export (``TokenDataset`` has it)."""

    manifest: object

    @property
    def num_samples(self) -> int: ...

    def sample(self, index: int) -> Tensor: ...


def sample_codes(source: TokenSource, index: int) -> Tensor:
    """Sample ``index``'s code tokens without its BOS/EOS: int64 (n,)."""
    tokens = source.sample(index)
    manifest = source.manifest
    if manifest.bos_id is not None and tokens.numel() and int(tokens[0]) == manifest.bos_id:
        tokens = tokens[1:]
    if manifest.eos_id is not None and tokens.numel() and int(tokens[-1]) == manifest.eos_id:
        tokens = tokens[:-1]
    return tokens


def check_export(source: TokenSource, what: str) -> None:
    """UsageError unless the export can train an LM (levels interleaved, samples present)."""
    manifest = source.manifest
    if manifest.num_levels > 1 and manifest.order != "interleaved":
        raise UsageError(f"the {what} tokens were exported with --order {manifest.order}; the "
                         "LM reads residual levels interleaved (export-tokens' default)")
    if source.num_samples < 1:
        raise UsageError(f"the {what} tokens hold no sample")


def resolve_layout(source: TokenSource, layout: Sequence[int], relative_time: bool = False,
                   max_len: int = 0) -> tuple[int, ...]:
    """The LM's grid: ``layout``, or one time axis for audio.

    Args:
        source: The training tokens.
        layout: The grid asked for; empty to derive it.
        relative_time: Time is counted per chunk, so axis 0 needs only cover one chunk
            of ``max_len`` tokens (and is widened to that when it does not).
        max_len: The LM's context (only with ``relative_time``).

    Returns:
        The grid: without ``relative_time`` and ``layout``, the first sample's length as
        one axis.
    """
    levels = source.manifest.num_levels
    if relative_time:
        grid = tuple(layout) or (1,)
        steps = chunk_steps(max_len, math.prod(grid[1:]) * levels)
        return (max(grid[0], steps), *grid[1:])
    if layout:
        return tuple(layout)
    return (max(1, sample_codes(source, 0).numel() // levels),)


def read_labels(spec: str, keys: Sequence[str], what: str) -> list[int]:
    """The ``.cls`` class of every exported sample, read from the code shards ``spec``.

    Args:
        spec: Code shards: a folder, file, brace pattern or URL.
        keys: The export's sample keys, in order.
        what: "training" or "validation", for messages.

    Returns:
        One class per key.

    Raises:
        UsageError: A shard is unreadable, a label is not a non-negative integer, or a key
            has no label.
    """
    found: dict[str, int] = {}
    for url in expand_shards(spec):
        for item in read_samples(url, shard_name(url)):
            if isinstance(item, SampleError):
                raise UsageError(f"cannot read the {what} labels: {item.describe()}")
            if "cls" in item.fields:
                found[item.key] = _label(item.fields["cls"], item.key)
    missing = [key for key in keys if key not in found]
    if missing:
        raise UsageError(f"{len(missing)} {what} sample(s) have no .cls label in {spec}, "
                         f"e.g. {missing[0]!r}")
    return [found[key] for key in keys]


def _label(data: bytes, key: str) -> int:
    try:
        label = int(data.decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise UsageError(
            f"sample {key!r}: its .cls field {data[:20]!r} is not an integer"
        ) from None
    if label < 0:
        raise UsageError(f"sample {key!r}: class {label} is negative")
    return label


@dataclass
class Pieces:
    """Every piece of an export, with its class, ready to become training sequences.

    A piece is ``prod(layout) * Q`` code tokens (images, fixed windows or clips) or, for a
    relative-time LM (audio, video), a whole sample of any number of time steps. Training
    and evaluation visit chunks (``vqtok.lm.layout.chunk_starts``), the units the coder
    and the sampler use, so every chunk of every piece is seen once per epoch.

    Args:
        codes: Per piece, int64 (n_i,) code tokens.
        labels: (P,) classes, or None for an unconditional LM.
        ends: Per sample, the number of pieces up to its last (cumulative).
    """

    codes: list[Tensor]
    labels: Tensor | None
    ends: list[int]

    @classmethod
    def build(cls, source: TokenSource, config: LMConfig, labels: list[int] | None,
              what: str) -> Pieces:
        """Cut every sample of ``source`` into the LM's pieces.

        Raises:
            UsageError: A sample's length is not a whole number of pieces (of time steps,
                for a relative-time LM), or a label is outside the LM's classes.
        """
        size = _unit_tokens(config)
        rows: list[Tensor] = []
        classes: list[int] = []
        ends: list[int] = []
        for index in range(source.num_samples):
            codes = sample_codes(source, index)
            if codes.numel() == 0 or codes.numel() % size:
                raise UsageError(_length_problem(config, what, index, codes.numel(), size))
            pieces = [codes] if config.relative_time else list(codes.view(-1, size))
            rows += pieces
            ends.append(len(rows))
            if labels is not None:
                if labels[index] >= config.num_classes:
                    raise UsageError(f"{what} sample {index} has class {labels[index]}, "
                                     f"outside the LM's {config.num_classes}")
                classes += [labels[index]] * len(pieces)
        return cls(rows, torch.tensor(classes) if labels is not None else None, ends)

    def first_samples(self, count: int) -> Pieces:
        """The pieces of the first ``count`` samples (all when 0)."""
        if not count or count >= len(self.ends):
            return self
        end = self.ends[count - 1]
        return Pieces(self.codes[:end], None if self.labels is None else self.labels[:end],
                      self.ends[:count])

    @property
    def num_tokens(self) -> int:
        """Code tokens in all pieces."""
        return sum(piece.numel() for piece in self.codes)

    def chunks(self, config: LMConfig) -> list[tuple[int, int, int]]:
        """(piece, start, count) of every chunk, piece by piece."""
        return [(index, *chunk) for index, piece in enumerate(self.codes)
                for chunk in chunk_starts(piece.numel(), config.max_len, config.num_levels)]

    def level_counts(self, config: LMConfig) -> Tensor:
        """int64 (Q, K): how often each code occurs at each residual level."""
        counts = torch.zeros(config.num_levels, config.codebook_size, dtype=torch.int64)
        for piece in self.codes:
            levels = piece.view(-1, config.num_levels).T
            for level, row in enumerate(levels):
                counts[level] += torch.bincount(row, minlength=config.codebook_size)
        return counts

    def batch(self, config: LMConfig, chunks: Sequence[tuple[int, int, int]],
              generator: torch.Generator | None) -> Batch:
        """The sequences of ``chunks`` and, with a generator, each class dropped to the
        null class with ``config.class_dropout``."""
        items = []
        for index, start, count in chunks:
            label = None if self.labels is None else int(self.labels[index])
            if label is not None and generator is not None and config.class_dropout:
                if float(torch.rand((), generator=generator)) < config.class_dropout:
                    label = None
            items.append(chunk_sequence(config, self.codes[index], start, count, label=label))
        return collate(items)

    def evaluation_batches(self, config: LMConfig, batch_size: int) -> Iterator[Batch]:
        """Every chunk of every piece once, in order, with the true class."""
        items = self.chunks(config)
        for first in range(0, len(items), batch_size):
            yield self.batch(config, items[first : first + batch_size], None)

    def __len__(self) -> int:
        return len(self.codes)


def _unit_tokens(config: LMConfig) -> int:
    """Tokens a sample's length must be a multiple of: a piece, or one time step."""
    if config.relative_time:
        return math.prod(config.layout[1:]) * config.num_levels
    return config.piece_tokens


def _length_problem(config: LMConfig, what: str, index: int, tokens: int, size: int) -> str:
    if config.relative_time:
        return (f"{what} sample {index} holds {tokens} code tokens, not a whole number of "
                f"time steps ({list(config.layout[1:])} x {config.num_levels} level(s) = "
                f"{size}); set layout to the tokenizer's latent grid")
    return (f"{what} sample {index} holds {tokens} code tokens, not a multiple of one piece "
            f"({list(config.layout)} x {config.num_levels} level(s) = {size}); set layout to "
            f"the tokenizer's latent grid")


def lm_batches(pieces: Pieces, config: LMConfig, batch_size: int, seed: int, rank: int,
                     world_size: int, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
    """Endless (batch, position after it) from ``start``; each rank gets its own rows.

    Epoch e shuffles the chunks of all pieces with (seed, e); global batch b takes rows
    ``[b * B * W, (b + 1) * B * W)`` of that order (wrapping around), and rank r the r-th
    block of B of them.
    """
    chunks = pieces.chunks(config)
    total = batch_size * world_size
    per_epoch = math.ceil(len(chunks) / total)
    epoch, batch = start.epoch, start.batch
    while True:
        order = np.random.default_rng((seed, epoch)).permutation(len(chunks))
        order = np.resize(order, per_epoch * total)  # wrap: every batch is full
        for b in range(batch, per_epoch):
            rows = order[b * total + rank * batch_size : b * total + (rank + 1) * batch_size]
            state = np.random.SeedSequence((seed, epoch, b, rank)).generate_state(1)[0]
            generator = torch.Generator().manual_seed(int(state))
            yield (pieces.batch(config, [chunks[i] for i in rows], generator),
                   DataPosition(epoch, b + 1))
        epoch, batch = epoch + 1, 0
