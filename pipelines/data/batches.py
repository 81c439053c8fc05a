"""`MediaBatches`: an IterableDataset turning media shards into model-ready batches.

Runs inside DataLoader workers, so that tar reading and media decoding overlap with the
model in the main process. Each worker reads its own shards in order and yields events:
`PreparedBatch` (pieces of same-shape samples from one shard), `SampleError` (a sample
that failed at tar, keys or decode) and `ShardEnd` (the shard was fully read). With
`stream`, a video, and an audio file coded whole (no windows), is not decoded here: its
batch holds a `VideoSource` or `AudioSource` (counted, not decoded) that the model reads a
few frames or samples at a time, so an hour of either is never held.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import IterableDataset

from vqtok.pipelines.data.media import (
    AudioSource,
    MediaConfig,
    VideoSource,
    find_media,
    open_audio,
    open_video,
    prepare,
)
from vqtok.pipelines.data.sources import worker_shards
from vqtok.pipelines.data.tario import Sample, read_samples
from vqtok.pipelines.errors import SampleError


@dataclass
class PreparedSample:
    """One decoded sample: its key, `meta` (from `media.prepare`) and its labels, if any."""

    key: str
    pieces: int
    meta: dict
    cls: bytes | None = None
    labels: object = None


@dataclass
class PreparedBatch:
    """Samples of one shard with equal piece shape; `pieces: (sum of N, C, *spatial) float`,
    or one sample's `VideoSource` or `AudioSource`."""

    shard: str
    samples: list[PreparedSample]
    pieces: torch.Tensor | VideoSource | AudioSource


@dataclass
class ShardEnd:
    """Every sample of `shard` has been yielded (as a batch member or an error)."""

    shard: str
    samples_read: int = 0


@dataclass
class _Pending:
    samples: list[PreparedSample] = field(default_factory=list)
    tensors: list[torch.Tensor] = field(default_factory=list)

    @property
    def pieces(self) -> int:
        return sum(sample.pieces for sample in self.samples)

    def shape(self) -> tuple[int, ...] | None:
        return tuple(self.tensors[0].shape[1:]) if self.tensors else None


Event = PreparedBatch | SampleError | ShardEnd


class MediaBatches(IterableDataset):
    """Streams `shards` (this rank's URLs) as events; `batch_pieces` caps pieces per batch.

    Use with `DataLoader(..., batch_size=None, collate_fn=identity)`; each worker reads every
    `num_workers`-th shard, so all shards are read exactly once.
    """

    def __init__(self, shards: Sequence[str], media: MediaConfig, batch_pieces: int = 16,
                 names: dict[str, str] | None = None, stream: bool = False) -> None:
        self.shards = list(shards)
        self.media = media
        self.batch_pieces = batch_pieces
        self.names = names or {}
        # Audio cut into windows is decoded here: its windows batch like images.
        self.opener = prepare
        if stream and media.modality == "video":
            self.opener = open_video
        elif stream and media.modality == "audio" and media.window_seconds is None:
            self.opener = open_audio

    def __iter__(self) -> Iterator[Event]:
        for url in worker_shards(self.shards):
            yield from self._shard_events(url, self.names.get(url, url))

    def _shard_events(self, url: str, shard: str) -> Iterator[Event]:
        pending = _Pending()
        read = 0
        for item in read_samples(url, shard):
            read += 1
            prepared = item if isinstance(item, SampleError) else self._prepare(item)
            if isinstance(prepared, SampleError):
                yield prepared
                continue
            sample, pieces = prepared
            if isinstance(pieces, (VideoSource, AudioSource)):  # its own batch, model-read
                if pending.samples:
                    yield self._flush(shard, pending)
                    pending = _Pending()
                yield PreparedBatch(shard, [sample], pieces)
                continue
            if pending.shape() not in (None, tuple(pieces.shape[1:])):
                yield self._flush(shard, pending)
                pending = _Pending()
            pending.samples.append(sample)
            pending.tensors.append(pieces)
            if pending.pieces >= self.batch_pieces:
                yield self._flush(shard, pending)
                pending = _Pending()
        if pending.samples:
            yield self._flush(shard, pending)
        yield ShardEnd(shard, read)

    def _prepare(self, sample: Sample) -> tuple[PreparedSample, torch.Tensor] | SampleError:
        try:
            ext, data = find_media(sample.fields, self.media.modality)
        except KeyError as exc:
            return SampleError(sample.shard, sample.key, "keys", str(exc.args[0]))
        try:
            pieces, meta = self.opener(data, self.media)
            labels = json.loads(sample.fields["json"]) if "json" in sample.fields else None
        except Exception as exc:  # any decoder failure is this sample's, not the job's
            return SampleError(sample.shard, sample.key, "decode", f"{ext}: {exc}")
        prepared = PreparedSample(
            sample.key,
            pieces.shape[0],
            {"source": ext, "input_size": list(pieces.shape[2:]), **meta},
            sample.fields.get("cls"),
            labels,
        )
        return prepared, pieces

    @staticmethod
    def _flush(shard: str, pending: _Pending) -> PreparedBatch:
        tensors = pending.tensors  # one long sample is not copied by a concatenation
        return PreparedBatch(shard, pending.samples,
                             tensors[0] if len(tensors) == 1 else torch.cat(tensors))


def identity(batch: Event) -> Event:
    """DataLoader collate_fn that passes events through (picklable, unlike a lambda)."""
    return batch
