"""Pieces of exported tokens for LM training: labels, layout checks, reproducible batches.

The exported files are read through an object with the ``TokenDataset`` interface
(``manifest``, ``num_samples``, ``sample(i)``): the CLI passes
``vqtok.pipelines.jobs.tokens.TokenDataset``, which this wing may not import (training and
jobs are wings of one rank). A sample's codes (its BOS/EOS stripped) are cut into pieces
of ``prod(layout) * Q`` tokens; a piece longer than the LM's context gives one random
chunk per visit.

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


def resolve_layout(source: TokenSource, layout: Sequence[int]) -> tuple[int, ...]:
    """The piece grid: ``layout``, or the first sample's length as one axis."""
    if layout:
        return tuple(layout)
    return (max(1, sample_codes(source, 0).numel() // source.manifest.num_levels),)


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

    Args:
        codes: int64 (P, n) pieces of n code tokens each.
        labels: (P,) classes, or None for an unconditional LM.
        ends: Per sample, the number of pieces up to its last (cumulative).
    """

    codes: Tensor
    labels: Tensor | None
    ends: list[int]

    @classmethod
    def build(cls, source: TokenSource, config: LMConfig, labels: list[int] | None,
              what: str) -> Pieces:
        """Cut every sample of ``source`` into pieces of ``config.piece_tokens`` tokens.

        Raises:
            UsageError: A sample's length is not a whole number of pieces, or a label is
                outside the LM's classes.
        """
        size, rows, classes = config.piece_tokens, [], []
        for index in range(source.num_samples):
            codes = sample_codes(source, index)
            if codes.numel() == 0 or codes.numel() % size:
                raise UsageError(
                    f"{what} sample {index} holds {codes.numel()} code tokens, not a multiple "
                    f"of one piece ({list(config.layout)} x {config.num_levels} level(s) = "
                    f"{size}); set layout to the tokenizer's latent grid, and for audio or "
                    f"video encoded whole, cut fixed-length pieces with `vqtok encode "
                    f"--window-seconds S` or `--clip-frames N` and a layout of that length")
            rows.append(codes.view(-1, size))
            if labels is not None:
                if labels[index] >= config.num_classes:
                    raise UsageError(f"{what} sample {index} has class {labels[index]}, "
                                     f"outside the LM's {config.num_classes}")
                classes += [labels[index]] * rows[-1].shape[0]
        ends = np.cumsum([len(r) for r in rows]).tolist()
        return cls(torch.cat(rows), torch.tensor(classes) if labels is not None else None, ends)

    def first_samples(self, count: int) -> Pieces:
        """The pieces of the first ``count`` samples (all when 0)."""
        if not count or count >= len(self.ends):
            return self
        end = self.ends[count - 1]
        return Pieces(self.codes[:end], None if self.labels is None else self.labels[:end],
                      self.ends[:count])

    def __len__(self) -> int:
        return self.codes.shape[0]

    def batch(self, config: LMConfig, indices: Sequence[int],
              generator: torch.Generator | None) -> Batch:
        """The sequences of ``indices``: a random chunk of each long piece and, with a
        generator, the class dropped to the null class with ``config.class_dropout``."""
        items = []
        chunks = chunk_starts(self.codes.shape[1], config.max_len, config.num_levels)
        for index in indices:
            pick = 0
            if generator is not None and len(chunks) > 1:
                pick = int(torch.randint(len(chunks), (1,), generator=generator))
            label = None if self.labels is None else int(self.labels[index])
            if label is not None and generator is not None and config.class_dropout:
                if float(torch.rand((), generator=generator)) < config.class_dropout:
                    label = None
            items.append(chunk_sequence(config, self.codes[index], *chunks[pick], label=label))
        return collate(items)

    def evaluation_batches(self, config: LMConfig, batch_size: int) -> Iterator[Batch]:
        """Every chunk of every piece once, in order, with the true class."""
        chunks = chunk_starts(self.codes.shape[1], config.max_len, config.num_levels)
        items = [(i, chunk) for i in range(len(self)) for chunk in chunks]
        for first in range(0, len(items), batch_size):
            yield collate([
                chunk_sequence(config, self.codes[i], *chunk,
                               label=None if self.labels is None else int(self.labels[i]))
                for i, chunk in items[first : first + batch_size]
            ])


def lm_batches(pieces: Pieces, config: LMConfig, batch_size: int, seed: int, rank: int,
                     world_size: int, start: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
    """Endless (batch, position after it) from ``start``; each rank gets its own rows.

    Epoch e shuffles the pieces with (seed, e); global batch b takes rows
    ``[b * B * W, (b + 1) * B * W)`` of that order (wrapping around), and rank r the r-th
    block of B of them.
    """
    total = batch_size * world_size
    per_epoch = math.ceil(len(pieces) / total)
    epoch, batch = start.epoch, start.batch
    while True:
        order = np.random.default_rng((seed, epoch)).permutation(len(pieces))
        order = np.resize(order, per_epoch * total)  # wrap: every batch is full
        for b in range(batch, per_epoch):
            rows = order[b * total + rank * batch_size : b * total + (rank + 1) * batch_size]
            state = np.random.SeedSequence((seed, epoch, b, rank)).generate_state(1)[0]
            generator = torch.Generator().manual_seed(int(state))
            yield pieces.batch(config, rows.tolist(), generator), DataPosition(epoch, b + 1)
        epoch, batch = epoch + 1, 0
