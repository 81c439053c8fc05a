"""`encode_shards`: media shards in, code shards out (one per input, same basename and keys).

Each output shard is written to `<name>.tar.partial`, renamed to `<name>.tar` when complete,
then `<name>.stats.json` (count, skipped, seconds) marks it done. With `resume`, done shards
are skipped and partial ones redone from scratch; output tars are byte-deterministic, so a
killed and resumed job gives exactly the output of an uninterrupted one. Skipped samples
are logged to `<name>.errors.jsonl`. With `compress`, samples hold the codes entropy-coded
with the model's prior (`.vqc`, see `codes`) instead of `.npy`.

Each sample is encoded whole: one code stream per image, audio file or video, computed in
the pieces the memory planner picks (`VQTokenizer.encode_within`), so the codes equal the
whole input's. Fixed-length windows or clips (`media.window_seconds`, `media.clip_frames`)
are then cut from that stream (`codes.cut_codes`), not from the signal: no code near a
window's edge lacks its context.

The per-shard work (`ShardEncoder`) is shared by engines: the local one below feeds it the
events of a DataLoader, `ray_engine` feeds it one shard per Ray actor call.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from vqtok import VQTokenizer
from vqtok.entropy import model_prior
from vqtok.pipelines.config import ErrorOptions, JobConfig, MediaOptions, RuntimeOptions
from vqtok.pipelines.data.batches import (
    Event,
    MediaBatches,
    PreparedBatch,
    PreparedSample,
    identity,
)
from vqtok.pipelines.data.media import (
    AudioSource,
    FrameCountError,
    MediaConfig,
    MediaDecodeError,
    VideoSource,
)
from vqtok.pipelines.data.sources import Placement, expand_shards
from vqtok.pipelines.data.tario import ShardWriter
from vqtok.pipelines.errors import ErrorPolicy, SampleError, UsageError, write_error_log
from vqtok.pipelines.folder_lock import FolderLock
from vqtok.pipelines.jobs.codes import code_dtype, cut_codes, pack_codes
from vqtok.pipelines.jobs.common import ShardOutputs, load_model, shard_names, write_summary
from vqtok.pipelines.jobs.preflight import (
    check_all,
    check_media_input,
    check_output_folder,
    check_resume,
)
from vqtok.pipelines.progress import ShardProgress


@dataclass
class EncodeConfig(JobConfig):
    """Options of an encode job (the CLI flags); saved as `encode_config.json` in the output."""

    media: MediaOptions = field(default_factory=MediaOptions)
    errors: ErrorOptions = field(default_factory=ErrorOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    workers: int = 2  # DataLoader workers reading and decoding shards beside the model
    resume: bool = False
    progress: bool = True
    compress: bool = False  # entropy-code the codes with the model's prior

    def problems(self) -> list[str]:
        """`workers` is 0 or more.

        Returns:
            One message per broken rule.
        """
        return [] if self.workers >= 0 else [f"workers must be 0 or more, got {self.workers}"]


UNIFORM_PRIOR_WARNING = (
    "the checkpoint has no fitted prior, so --compress codes with the uniform prior "
    "(log2 K bits per code); run `vqtok fit-prior` on it first for smaller files"
)


@dataclass
class EncodeSummary:
    """What an encode job did on this rank."""

    rank: int = 0
    shards_total: int = 0
    shards_encoded: int = 0
    shards_already_done: int = 0
    samples: int = 0
    skipped: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0
    model_id: str = ""
    out_dir: str = ""
    error_logs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The summary as plain JSON-ready data.

        Returns:
            The fields as a dict (the content of `encode-summary.json`).
        """
        return asdict(self)

    def add_shard(self, stats: dict, error_log: Path) -> None:
        """Count a finished shard from its `<name>.stats.json` content.

        Args:
            stats: The shard's stats (`count` and `skipped` samples among them).
            error_log: The shard's error log, listed when the shard skipped samples.
        """
        self.shards_encoded += 1
        self.samples += stats["count"]
        self.skipped += stats["skipped"]
        if stats["skipped"]:
            self.error_logs.append(str(error_log))


@dataclass
class EncodeJob:
    """The shards an engine has to encode, and everything it needs for them."""

    source: VQTokenizer | str | Path  # the model as given, for workers that load their own copy
    model: VQTokenizer  # loaded in this process
    todo: list[str]  # URLs of the shards not done yet
    names: dict[str, str]  # URL -> output basename
    outputs: ShardOutputs
    config: EncodeConfig
    policy: ErrorPolicy
    summary: EncodeSummary  # the engine adds each finished shard


Engine = Callable[[EncodeJob], None]


def encode_shards(
    model: VQTokenizer | str | Path,
    shards: str | list[str],
    out_dir: str | Path,
    config: EncodeConfig | None = None,
    placement: Placement | None = None,
    engine: Engine | None = None,
) -> EncodeSummary:
    """Encode every sample of this rank's `shards` with `model`.

    `engine` runs the job (default: this process, with DataLoader workers); another engine
    encodes elsewhere, so this process keeps a CPU copy of the model only for its metadata.
    Partial outputs are removed on any exception.

    Args:
        model: A VQTokenizer or its checkpoint path.
        shards: Media shards: a folder, file, brace pattern or URL, or a list of them.
        out_dir: Folder for the code shards, their stats and error logs, the resolved
            config and the summary.
        config: Media cutting, error policy, batch size, device, workers, resume and
            compression.
        placement: This rank's share of the shards (default: from the environment).
        engine: Runs the job (default: this process with DataLoader workers; see
            `encode_shards_ray`).

    Returns:
        What this rank did: shards and samples encoded or skipped, time and the model id.

    Raises:
        UsageError: For bad arguments, found before anything is written: options, device,
            checkpoint, shards of another modality or code shards, an `out_dir` that is a
            file, not writable, in use by another job, holding output without `resume`, or
            (with `resume`) holding another model's or other options' output.
        PipelineError: For failures: a bad sample under `on_error="raise"`, or more skips
            than `max_error_rate` allows.
    """
    config = config or EncodeConfig()
    config.check()
    # The budget is resolved once, so that every engine and the saved config use one figure.
    config = replace(config, runtime=config.runtime.resolved())
    policy = ErrorPolicy(config.errors.on_error, config.errors.max_error_rate)
    placement = placement or Placement.from_env()
    all_urls = expand_shards(shards)
    urls = placement.select(all_urls)
    names = shard_names(urls)
    # Everything is checked before OUT_DIR is touched: a refused job writes nothing.
    loaded = load_model(model, config.runtime.device if engine is None else "cpu")
    model_id = loaded.model_id  # a hash of every weight: computed once
    out_dir = Path(out_dir)
    check_all([
        lambda: check_output_folder(out_dir),
        lambda: check_media_input(urls, loaded.config.modality),
        lambda: code_cut(loaded, config.media),
        lambda: check_resume(out_dir, "encode_config.json", config.to_dict(), model_id,
                             config.resume),
    ])
    with FolderLock(out_dir, "encode", placement.rank):
        outputs = ShardOutputs(out_dir)
        todo = outputs.prepare(urls, names, resume=config.resume)
        job = EncodeJob(model, loaded, todo, names, outputs, config, policy, EncodeSummary(
            rank=placement.rank,
            shards_total=len(urls),
            shards_already_done=len(urls) - len(todo),
            model_id=model_id,
            out_dir=str(outputs.root),
        ))
        outputs.save_config(
            "encode_config.json",
            {**config.to_dict(), "model_id": model_id, "shards": all_urls},
        )
        _run_job(job, engine)
    policy.check_rate(job.summary.skipped, job.summary.samples + job.summary.skipped)
    return job.summary


def _run_job(job: EncodeJob, engine: Engine | None) -> None:
    """Run `job` on `engine` and write its summary."""
    if job.config.compress and getattr(job.model, "code_prior", None) is None:
        warnings.warn(UNIFORM_PRIOR_WARNING, stacklevel=3)
    start = time.monotonic()
    if job.todo:
        (engine or _run)(job)
    summary = job.summary
    summary.seconds = round(time.monotonic() - start, 3)
    summary.samples_per_second = round(summary.samples / max(summary.seconds, 1e-9), 2)
    write_summary(job.outputs.root, "encode", summary.to_dict())


def media_config(model: VQTokenizer, options: MediaOptions) -> MediaConfig:
    """How to cut media for `model`, from its TokenizerConfig and the job's options.

    Windows and clips, when the options ask for them, are cut from the signal (as
    `compress` does); `encode_shards` reads whole files instead (`whole_media_config`) and
    cuts their codes.

    Args:
        model: The tokenizer; its config gives modality, channels and sample rate.
        options: The job's media options (window, clip, clip stride, frame size, longest
            side, pixel limit, downmix).

    Returns:
        The MediaConfig the shard readers decode with.
    """
    model_config = model.config
    return MediaConfig(
        modality=model_config.modality,
        channels=model_config.channels,
        sample_rate=getattr(model_config, "sample_rate", None),
        window_seconds=options.window_seconds,
        clip_frames=options.clip_frames,
        clip_stride=options.clip_stride if options.clip_frames else None,
        frame_size=tuple(options.frame_size) if options.frame_size else None,
        max_side=options.max_side,
        max_image_pixels=options.max_image_pixels,
        mono=options.mono,
    )


def whole_media_config(model: VQTokenizer, options: MediaOptions) -> MediaConfig:
    """`media_config` reading every file whole (one piece per sample): the encode job's.

    Args:
        model: The tokenizer.
        options: The job's media options; windows and clips are left to `code_cut`.

    Returns:
        The MediaConfig the shard readers decode with.
    """
    return replace(
        media_config(model, options), window_seconds=None, clip_frames=None, clip_stride=None
    )


@dataclass(frozen=True)
class CodeCut:
    """Fixed-length pieces cut from a sample's whole code stream, in code positions."""

    length: int
    stride: int

    def apply(self, codes: np.ndarray, levels: int) -> tuple[np.ndarray, dict]:
        """Cut one sample's code stream.

        Args:
            codes: (1, [Q,] T, *rest) integer.
            levels: The model's residual levels Q (the level axis exists when above 1).

        Returns:
            ((N, [Q,] length, *rest) pieces, the `cut` record for the JSON).
        """
        return cut_codes(codes, self.length, self.stride, 2 if levels > 1 else 1)


def code_cut(model: VQTokenizer, options: MediaOptions) -> CodeCut | None:
    """The windows (audio) or clips (video) the options ask for, in code positions.

    A window of `window_seconds` is rounded to whole code positions (the encoder's stride
    in samples); a clip of `clip_frames` frames has the latent frames the model gives such
    a clip, and clips start every `clip_stride` frames rounded to latent frames.

    Args:
        model: The tokenizer (its modality and temporal stride).
        options: The job's media options.

    Returns:
        The cut, or None for whole streams (images always).

    Raises:
        UsageError: A clip stride without a clip length, or one longer than the clip.
    """
    config = model.config
    stride = config.strides[0] if config.modality != "image" else 1
    if config.modality == "audio" and options.window_seconds is not None:
        samples = options.window_seconds * config.sample_rate
        length = max(1, round(samples / stride))
        return CodeCut(length, length)
    if config.modality != "video":
        return None
    if options.clip_frames is None:
        if options.clip_stride is not None:
            raise UsageError("clip_stride needs clip_frames: clips start every clip_stride "
                             "frames of a clip_frames-frame clip")
        return None
    length = model.latent_shape((options.clip_frames, 1, 1))[0]
    step = length if options.clip_stride is None else max(1, round(options.clip_stride / stride))
    if step > length:
        raise UsageError(
            f"clip_stride {options.clip_stride} is longer than the clip of {options.clip_frames} "
            "frames: frames between clips would have no codes"
        )
    return CodeCut(length, step)


def _run(job: EncodeJob) -> None:
    """The local engine: DataLoader workers read and decode shards while this process encodes."""
    dataset = MediaBatches(
        job.todo,
        whole_media_config(job.model, job.config.media),
        job.config.runtime.batch_size,
        job.names,
        stream=True,
    )
    workers = min(job.config.workers, len(job.todo))
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=identity,
                        prefetch_factor=4 if workers else None)
    with ShardProgress(len(job.todo), enabled=job.config.progress) as progress, \
            ShardEncoder(job.model, job.outputs, job.config, job.policy) as encoder:
        for event in loader:
            written, skipped, stats = encoder.handle(event)
            progress.advance(samples=written, errors=skipped, shards=int(stats is not None))
            if stats is not None:
                job.summary.add_shard(stats, job.outputs.errors(stats["shard"]))


@dataclass
class _OpenShard:
    writer: ShardWriter
    errors: list[SampleError] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)


class ShardEncoder:
    """Turns the events of media shards into code shards, the same way in every engine.

    Events of several shards may interleave; each shard's output is committed and marked
    done at its `ShardEnd`. Leaving the `with` block early drops unfinished outputs.

    Args:
        model: The tokenizer, on the device it encodes on.
        outputs: The job's per-shard output files.
        config: The job's options (batch size, compression).
        policy: What to do with a bad sample.
    """

    def __init__(
        self, model: VQTokenizer, outputs: ShardOutputs, config: EncodeConfig, policy: ErrorPolicy
    ) -> None:
        self.model = model
        self.outputs = outputs
        self.config = config
        self.policy = policy
        self.dtype = code_dtype(model.codebook_size)
        self.header = _model_header(model)
        self.prior = model_prior(model) if config.compress else None
        self.cut = code_cut(model, config.media)
        self.open_shards: dict[str, _OpenShard] = {}

    def __enter__(self) -> ShardEncoder:
        return self

    def __exit__(self, *exc_info) -> None:
        for shard in self.open_shards.values():
            shard.writer.abort()
        self.open_shards.clear()

    def handle(self, event: Event) -> tuple[int, int, dict | None]:
        """Handle one event of a media shard: a batch, a bad sample or the shard's end.

        Args:
            event: A PreparedBatch, a SampleError or a ShardEnd.

        Returns:
            (samples written, samples skipped, the stats of the shard it finished or None).

        Raises:
            PipelineError: For a bad sample under `on_error="raise"`.
        """
        if event.shard not in self.open_shards:
            self.open_shards[event.shard] = _OpenShard(ShardWriter(self.outputs.tar(event.shard)))
        shard = self.open_shards[event.shard]
        if isinstance(event, SampleError):
            self.policy.handle(event, shard.errors)
            return 0, 1, None
        if isinstance(event, PreparedBatch):
            written = self._encode_batch(event, shard)
            return written, len(event.samples) - written, None
        del self.open_shards[event.shard]
        return 0, 0, _finish(shard, event.shard, self.outputs)

    def _encode_batch(self, batch: PreparedBatch, shard: _OpenShard) -> int:
        """Encode and write one batch; on a model failure retry sample by sample.

        Returns the number of samples written.
        """
        try:
            per_sample = self._codes(batch)
        except Exception as exc:  # a failure on one sample must not sink its batch
            if len(batch.samples) == 1:
                # A streamed video is decoded while the model reads it: name the real stage.
                stage = "decode" if isinstance(exc, MediaDecodeError) else "model"
                self.policy.handle(
                    SampleError(batch.shard, batch.samples[0].key, stage, str(exc)), shard.errors
                )
                return 0
            return sum(self._encode_batch(single, shard) for single in _singles(batch))
        for sample, codes in zip(batch.samples, per_sample, strict=True):
            header = self.header
            if self.cut is not None:
                codes, cut = self.cut.apply(codes, self.model.num_levels)
                header = {**header, "cut": cut}
            shard.writer.write(
                sample.key, _fields(sample, codes.astype(self.dtype), header, self.prior)
            )
        return len(batch.samples)

    def _codes(self, batch: PreparedBatch) -> list[np.ndarray]:
        """One int64 array (N_i, [Q,] *latent) per sample of the batch."""
        runtime = self.config.runtime
        if isinstance(batch.pieces, AudioSource):
            return [encode_audio(self.model, batch.pieces, runtime.max_bytes(), runtime.device)]
        if not isinstance(batch.pieces, VideoSource):
            return encode_pieces(self.model, batch.pieces, [s.pieces for s in batch.samples],
                                 runtime)
        codes, source = encode_video(self.model, batch.pieces, runtime.max_bytes(),
                                     runtime.device)
        # The container may have counted the frames wrong: the meta says what was encoded.
        batch.samples[0].meta.update(frames=source.frames, clip_frames=source.frames,
                                     input_size=list(source.shape[2:]))
        return [codes]


def _model_header(model) -> dict:
    return {
        "model_id": model.model_id,
        "preset": model.config.preset,
        "modality": model.config.modality,
        "codebook_size": model.codebook_size,
        "num_levels": model.num_levels,
        "layout": "pieces,levels,latent" if model.num_levels > 1 else "pieces,latent",
    }


def _singles(batch: PreparedBatch) -> list[PreparedBatch]:
    pieces = torch.split(batch.pieces, [s.pieces for s in batch.samples])
    return [PreparedBatch(batch.shard, [s], p) for s, p in zip(batch.samples, pieces, strict=True)]


@torch.inference_mode()
def encode_pieces(
    model: VQTokenizer, pieces: torch.Tensor, counts: list[int], runtime: RuntimeOptions
) -> list[np.ndarray]:
    """pieces: (P, C, *spatial) float -> codes (N_i, [Q,] *latent) per sample of N_i pieces.

    Each call stays within the runtime's memory budget: batches of ``batch_size`` pieces
    whose whole pass fits run as they are, larger inputs in the tiles the planner picks
    (``encode_within``).

    Args:
        model: The tokenizer.
        pieces: The samples' pieces, one after another.
        counts: N_i, the pieces of each sample (summing to P).
        runtime: Device, batch size and memory budget.

    Returns:
        The codes of each sample.
    """
    budget = runtime.max_bytes()
    chunks = [
        model.encode_within(chunk.to(runtime.device), budget).cpu()
        for chunk in pieces.split(runtime.batch_size)
    ]
    return [codes.numpy() for codes in torch.cat(chunks).split(counts)]


@torch.inference_mode()
def encode_video(
    model: VQTokenizer, source: VideoSource, max_bytes: int, device: str = "cpu"
) -> tuple[np.ndarray, VideoSource]:
    """The codes of a streamed video, read in time pieces of ``max_bytes / 4`` of frames.

    A piece holds at least the encoder's receptive field in time. The frames are counted
    from the container (``open_video``); when the file decodes to another count, they are
    counted by decoding and the video is encoded again.

    Args:
        model: The video tokenizer.
        source: The video, not read yet.
        max_bytes: The budget of the model's activations.
        device: Where the model runs.

    Returns:
        (codes int64 (1, [Q,] *latent), the source whose frame count the codes are of).

    Raises:
        BudgetError: Not even one piece fits the budget.
        MediaDecodeError: The video cannot be decoded partway.
    """
    try:
        return _encode_source(model, source, max_bytes, device), source
    except FrameCountError:
        source = source.recounted()
        return _encode_source(model, source, max_bytes, device), source


@torch.inference_mode()
def encode_audio(model: VQTokenizer, source: AudioSource, max_bytes: int, device: str = "cpu"
                 ) -> np.ndarray:
    """The codes of a whole audio signal read box by box (``media.open_audio``).

    A box's samples are a small part of what the encoder's pass over it holds, so the
    planner's pieces bound the samples held too.

    Args:
        model: The audio tokenizer.
        source: The signal, not read yet.
        max_bytes: The budget of the model's activations.
        device: Where the model runs.

    Returns:
        codes int64 (1, [Q,] T').

    Raises:
        BudgetError: Not even one piece fits the budget.
        MediaDecodeError: The file ends before its counted frames.
    """
    source.device = device
    try:
        return model.encode_within(source, max_bytes).cpu().numpy()
    finally:
        source.close()


def _encode_source(model: VQTokenizer, source: VideoSource, max_bytes: int, device: str
                   ) -> np.ndarray:
    source.device = device
    frames = max_bytes // 4 // source.frame_bytes
    limit = (time_limit(model, source.shape[2:], frames), None, None)
    try:
        codes = model.encode_within(source, max_bytes, limit).cpu().numpy()
        source.finish()
        return codes
    finally:
        source.close()


def time_limit(model: VQTokenizer, spatial: tuple[int, ...], frames: int) -> int:
    """The most latent frames per piece whose encoder reads at most ``frames`` frames.

    Among halvings of the whole, halo included; 1 when even one reads more.

    Args:
        model: The video tokenizer.
        spatial: The video's (T, H, W).
        frames: The frames a piece may read.

    Returns:
        Latent frames per piece.
    """
    total = model.latent_shape(spatial)[0]
    for size in sorted({-(-total // 2**k) for k in range(total.bit_length() + 1)}, reverse=True):
        axis = model._encoder_pieces(spatial, (size, None, None))[0]
        if max(p.read[1] - p.read[0] for p in axis) <= frames:
            return size
    return 1


def _fields(
    sample: PreparedSample, codes: np.ndarray, header: dict, prior: np.ndarray | None
) -> dict[str, bytes]:
    meta = {**header, "key": sample.key, "media": sample.meta}
    if sample.labels is not None:
        meta["labels"] = sample.labels
    fields = pack_codes(codes, meta, prior)
    if sample.cls is not None:
        fields["cls"] = sample.cls
    return fields


def _finish(shard: _OpenShard, name: str, outputs: ShardOutputs) -> dict:
    """Commit the tar, then the error log, then the stats file that marks the shard done."""
    shard.writer.commit()
    write_error_log(outputs.errors(name), shard.errors)
    stats = {"shard": name, "count": shard.writer.count, "skipped": len(shard.errors),
             "seconds": round(time.monotonic() - shard.started, 3)}
    outputs.mark_done(name, stats)
    return stats
