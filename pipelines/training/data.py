"""The training data stream: shards -> fixed-size random crops -> shuffled batches.

Each rank reads its own shards (``Placement.select``), each DataLoader worker a share of
them (``worker_shards``). Pieces from ``media.read_pieces`` (an image, audio windows, video
clips: ``media.prepare``'s, decoded one at a time, so an hour-long file is never held
whole) are cropped to a fixed size, padded by edge replication where smaller, mixed in a
shuffle buffer and stacked into batches. All randomness comes from a generator seeded by
(seed, rank, epoch, worker), so an epoch replays exactly; ``DataPosition`` (epoch, batches
taken) is what a checkpoint stores, and resuming replays the epoch up to it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from vqtok.models import TokenizerConfig
from vqtok.pipelines.data.media import MediaConfig, find_media, read_pieces
from vqtok.pipelines.data.sources import worker_shards
from vqtok.pipelines.data.tario import Sample, read_samples
from vqtok.pipelines.errors import PipelineError, SampleError, UsageError

DEFAULT_FRAME = 64
DEFAULT_IMAGE = 128


@dataclass(frozen=True)
class DataPosition:
    """Where a rank's stream stands: ``batch`` batches of ``epoch`` have been taken."""

    epoch: int = 0
    batch: int = 0


def resolve_crop(model: TokenizerConfig, crop: Sequence[int]) -> list[int]:
    """The crop size for ``model``'s modality: ``crop`` when given, else a default."""
    if crop:
        if len(crop) != model.dims:
            raise UsageError(f"{model.modality} crops need {model.dims} sizes, got {list(crop)}")
        return list(crop)
    if getattr(model, "input_size", None):  # models with a fixed input size (flat VAEs)
        return list(model.input_size)
    if model.modality == "audio":
        return [model.sample_rate or 16000]
    if model.modality == "video":
        return [model.clip_frames or 17, DEFAULT_FRAME, DEFAULT_FRAME]
    return [DEFAULT_IMAGE, DEFAULT_IMAGE]


def media_for(model: TokenizerConfig, crop: Sequence[int], mono: bool = False) -> MediaConfig:
    """How to decode samples.

    Audio windows and video clips then already have the crop's length. `mono` mixes
    multichannel audio down for a 1-channel model (refused otherwise, as in every job).
    """
    if model.modality == "audio":
        rate = model.sample_rate or 16000
        return MediaConfig("audio", channels=model.channels, sample_rate=rate,
                           window_seconds=crop[0] / rate, mono=mono)
    if model.modality == "video":
        return MediaConfig("video", channels=model.channels, clip_frames=crop[0])
    return MediaConfig("image", channels=model.channels)


def input_options(model: TokenizerConfig) -> dict[str, int | bool]:
    """The `CropBatches` options a model's config asks for: ``condition_size`` (a conditional
    VAE's ``num_classes``) and ``binarize`` (a Bernoulli likelihood models binary data)."""
    conditional = getattr(model, "family", None) == "cvae"
    return {"condition_size": model.num_classes if conditional else 0,
            "binarize": getattr(model, "likelihood", None) == "bernoulli"}


def crop_piece(
    piece: torch.Tensor, size: Sequence[int], generator: torch.Generator | None
) -> torch.Tensor:
    """piece: (C, *spatial) float -> (C, *size): a random window (centred without ``generator``),
    after replicating the trailing edge of axes shorter than ``size``."""
    short = [max(0, want - have) for want, have in zip(size, piece.shape[1:], strict=True)]
    if any(short):
        pad = [amount for axis in reversed(short) for amount in (0, axis)]
        piece = F.pad(piece.unsqueeze(0), pad, mode="replicate").squeeze(0)
    for axis, want in enumerate(size, start=1):
        room = piece.shape[axis] - want
        if generator is None:
            start = room // 2
        else:
            start = int(torch.randint(room + 1, (1,), generator=generator))
        piece = piece.narrow(axis, start, want)
    return piece.contiguous()


def _seed(*parts: int) -> int:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class CropBatches(IterableDataset):
    """One epoch of ``shards`` as batches ``(B, C, *crop)`` float32 in [-1, 1], and the
    ``SampleError`` of each sample that could not be read or decoded.

    ``train`` takes random crops, shuffles shard order and pieces (``shuffle_buffer``);
    otherwise crops are centred and order is kept. The last batch may be smaller.
    ``condition_size`` M > 0 (conditional models): batches are pairs (x, c) with c: (B, M)
    float, each sample's ``condition_vector``. ``binarize``: each value becomes 1 with
    probability (x + 1) / 2, else -1, drawn anew each epoch (dynamic binarization, for
    Bernoulli likelihoods); the draws come from the seeded generator, so evaluation data
    is binarized the same way every run.
    """

    def __init__(
        self,
        shards: Sequence[str],
        media: MediaConfig,
        crop: Sequence[int],
        batch_size: int,
        *,
        train: bool,
        shuffle_buffer: int = 1,
        seed: int = 0,
        rank: int = 0,
        epoch: int = 0,
        condition_size: int = 0,
        binarize: bool = False,
    ) -> None:
        self.shards = list(shards)
        self.media = media
        self.crop = list(crop)
        self.batch_size = batch_size
        self.train = train
        self.shuffle_buffer = shuffle_buffer if train else 1
        self.seed, self.rank, self.epoch = seed, rank, epoch
        self.condition_size = condition_size
        self.binarize = binarize

    def __iter__(self) -> Iterator[torch.Tensor | SampleError]:
        info = torch.utils.data.get_worker_info()
        generator = torch.Generator().manual_seed(
            _seed(self.seed, self.rank, self.epoch, info.id if info else 0))
        shards = self.shards
        if self.train:
            order = torch.randperm(len(shards), generator=torch.Generator().manual_seed(
                _seed(self.seed, self.rank, self.epoch)))
            shards = [shards[i] for i in order]
        buffer: list[torch.Tensor] = []
        batch: list[torch.Tensor] = []
        for item in self._pieces(worker_shards(shards), generator):
            if isinstance(item, SampleError):
                yield item
                continue
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                batch.append(self._take(buffer, generator))
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
        while buffer:
            batch.append(self._take(buffer, generator))
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
        if batch:  # the short last batch: no piece is dropped
            yield collate(batch)

    def _take(self, buffer: list[torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Remove and return a random piece of ``buffer`` (the oldest one when not training)."""
        if not self.train:
            return buffer.pop(0)
        index = int(torch.randint(len(buffer), (1,), generator=generator))
        buffer[index], buffer[-1] = buffer[-1], buffer[index]
        return buffer.pop()

    def _pieces(
        self, shards: list[str], generator: torch.Generator
    ) -> Iterator[torch.Tensor | SampleError]:
        for url in shards:
            for sample in read_samples(url):
                if isinstance(sample, SampleError):
                    yield sample
                    continue
                yield from self._sample_pieces(url, sample, generator)

    def _sample_pieces(
        self, url: str, sample: Sample, generator: torch.Generator
    ) -> Iterator[torch.Tensor | tuple[torch.Tensor, torch.Tensor] | SampleError]:
        """The crops of one sample's pieces, each decoded as it is taken.

        A sample whose first piece cannot be decoded is one "decode" error; one that fails
        later keeps the crops taken before, and its error says how many.
        """
        try:
            _, data = find_media(sample.fields, self.media.modality)
            pieces = iter(read_pieces(data, self.media))
            first = next(pieces)
        except Exception as exc:  # a decoder failure is this sample's, not the run's
            yield SampleError(url, sample.key, "decode", str(exc))
            return
        condition = None
        if self.condition_size:
            try:
                condition = condition_vector(sample.fields, self.condition_size)
            except ValueError as exc:
                yield SampleError(url, sample.key, "label", str(exc))
                return
        taken = 0
        try:
            for piece in itertools.chain([first], pieces):
                cropped = crop_piece(piece, self.crop, generator if self.train else None)
                if self.binarize:
                    cropped = binarize(cropped, generator)
                taken += 1
                yield cropped if condition is None else (cropped, condition)
        except Exception as exc:  # partway through a long file: the crops before it stay
            yield SampleError(url, sample.key, "decode", f"{exc} (after {taken} pieces)")


def binarize(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x: float in [-1, 1] -> values in {-1, 1}, 1 with probability (x + 1) / 2."""
    draws = torch.rand(x.shape, generator=generator)
    return torch.where(draws < (x + 1) / 2, 1.0, -1.0)


def condition_vector(fields: dict[str, bytes], size: int) -> torch.Tensor:
    """A sample's condition c: (size,) float32: the one-hot of its ``.cls`` class, or its
    ``.json`` attributes (a list of ``size`` numbers, or an object of ``size`` numbers taken
    in sorted key order). ValueError when it has neither or they do not fit."""
    by_ext = {name.lower().rsplit(".", 1)[-1]: data for name, data in fields.items()}
    if "cls" in by_ext:
        return _one_hot(by_ext["cls"], size)
    if "json" in by_ext:
        return _attributes(by_ext["json"], size)
    raise ValueError("it has no .cls label or .json attributes, which a conditional model needs")


def _one_hot(data: bytes, size: int) -> torch.Tensor:
    try:
        label = int(data.decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"its .cls field {data[:20]!r} is not an integer") from None
    if not 0 <= label < size:
        raise ValueError(f"its class {label} is outside the model's {size} classes")
    return torch.nn.functional.one_hot(torch.tensor(label), size).float()


def _attributes(data: bytes, size: int) -> torch.Tensor:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("its .json field is not valid JSON") from None
    values = [value[k] for k in sorted(value)] if isinstance(value, dict) else value
    numeric = isinstance(values, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    if not numeric or len(values) != size:
        raise ValueError(
            f"its .json attributes must be {size} finite numbers (a list or an object)"
        )
    return torch.tensor(values, dtype=torch.float32)


def collate(items: list) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Stack pieces into a batch (B, C, *crop); (piece, condition) pairs give (x, c (B, M))."""
    if isinstance(items[0], tuple):
        return torch.stack([piece for piece, _ in items]), torch.stack(
            [condition for _, condition in items]
        )
    return torch.stack(items)


def _quiet_worker(worker_id: int) -> None:
    """Workers leave Ctrl-C to the main process, which stops at a step boundary."""
    del worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def epoch_loader(dataset: CropBatches, num_workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=None, num_workers=num_workers,
                      worker_init_fn=_quiet_worker if num_workers else None)


def training_batches(make_epoch: Callable[[int], CropBatches], num_workers: int,
                     start: DataPosition, on_error: Callable[[SampleError], None],
                     ) -> Iterator[tuple[torch.Tensor, DataPosition]]:
    """Endless (batch, position after it) pairs from ``start``; epochs follow one another.

    The first ``start.batch`` batches of ``start.epoch`` are replayed and discarded (their
    sample errors were reported before). Raises PipelineError on an epoch without a batch.
    """
    epoch, skip = start.epoch, start.batch
    while True:
        taken = 0
        for item in epoch_loader(make_epoch(epoch), num_workers):
            if isinstance(item, SampleError):
                if taken >= skip:
                    on_error(item)
                continue
            taken += 1
            if taken > skip:
                yield item, DataPosition(epoch, taken)
        if taken == 0:
            raise PipelineError(f"epoch {epoch} produced no training batch: every sample failed")
        epoch, skip = epoch + 1, 0


def check_readable(shards: Sequence[str], media: MediaConfig, what: str) -> None:
    """Raise UsageError unless some sample of ``shards`` decodes (cheap: stops at the first)."""
    problems: list[str] = []
    for url in shards:
        for sample in read_samples(url):
            if isinstance(sample, SampleError):
                problems.append(sample.describe())
                continue
            try:
                _, data = find_media(sample.fields, media.modality)
                next(iter(read_pieces(data, media)))  # the first piece decodes
                return
            except Exception as exc:  # reported below with the others
                problems.append(f"{url}: sample {sample.key!r}: {exc}")
    detail = f"; first problem: {problems[0]}" if problems else ""
    raise UsageError(f"the {what} data is empty: no {media.modality} sample could be read from "
                     f"{len(shards)} shard(s){detail}")
