"""`decode_shards`: code shards back to media at the original size and length.

Writes PNG (images), WAV or FLAC (audio) and MP4 (video), either as shards with the same
basenames and keys (`output_format="shards"`) or as loose files `OUT_DIR/<key>.<ext>`
(`output_format="files"`), never outside OUT_DIR. Done markers, resume and the error
policy work as in `encode_shards`. Compressed code shards (`encode --compress`) are decoded
with the model's prior; shards coded with another prior are refused.

Windows or clips cut from a sample's code stream (`encode --window-seconds`,
`--clip-frames`) are joined back into the stream first, so a sample decodes as one signal,
without seams at the cuts. Audio and video are decoded in time slabs that are written as
they come (`media.restore_stream`): the decoded signal is never held whole, only the
encoded output file.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vqtok import VQTokenizer
from vqtok.entropy import model_prior
from vqtok.pipelines.config import ErrorOptions, JobConfig, RuntimeOptions
from vqtok.pipelines.data.media import restore, restore_stream
from vqtok.pipelines.data.sources import Placement, expand_shards
from vqtok.pipelines.data.tario import Sample, ShardWriter, read_samples
from vqtok.pipelines.errors import ErrorPolicy, SampleError, UsageError, write_error_log
from vqtok.pipelines.folder_lock import FolderLock
from vqtok.pipelines.jobs.codes import code_meta, join_codes, time_axis, unpack_codes
from vqtok.pipelines.jobs.common import ShardOutputs, load_model, shard_names, write_summary
from vqtok.pipelines.jobs.preflight import (
    check_all,
    check_code_input,
    check_output_folder,
    check_resume,
    read_json,
)
from vqtok.pipelines.progress import ShardProgress


@dataclass
class DecodeConfig(JobConfig):
    """Options of a decode job (the CLI flags); saved as `decode_config.json` in the output."""

    output_format: Literal["shards", "files"] = "shards"
    audio_format: Literal["wav", "flac"] = "wav"
    errors: ErrorOptions = field(default_factory=ErrorOptions)
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    resume: bool = False
    progress: bool = True


@dataclass
class DecodeSummary:
    """What a decode job did on this rank."""

    rank: int = 0
    shards_total: int = 0
    shards_decoded: int = 0
    shards_already_done: int = 0
    samples: int = 0
    skipped: int = 0
    seconds: float = 0.0
    out_dir: str = ""
    error_logs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def decode_shards(
    model: VQTokenizer | str | Path,
    code_shards: str | list[str],
    out_dir: str | Path,
    config: DecodeConfig | None = None,
    placement: Placement | None = None,
) -> DecodeSummary:
    """Decode every sample of this rank's `code_shards` with `model`.

    Args:
        model: A VQTokenizer or its checkpoint path.
        code_shards: Code shards written by `encode_shards`: a folder, file, brace pattern
            or URL, or a list of them.
        out_dir: Folder for the media (shards or loose files), stats, error logs, the
            resolved config and the summary.
        config: Output format, error policy, batch size, device and resume.
        placement: This rank's share of the shards (default: from the environment).

    Returns:
        What this rank did: shards and samples decoded or skipped, and the time.

    Raises:
        UsageError: For bad arguments, found before anything is written: options, device,
            checkpoint, media shards or codes of another model, an `out_dir` that is a
            file, not writable, in use by another job, holding output without `resume`, or
            (with `resume`) holding another model's or other options' output.
        PipelineError: For failures: a bad sample under `on_error="raise"`, or more skips
            than `max_error_rate` allows.
    """
    config = config or DecodeConfig()
    config.check()
    # The budget is resolved once, so that the saved config names the figure used.
    config = replace(config, runtime=config.runtime.resolved())
    policy = ErrorPolicy(config.errors.on_error, config.errors.max_error_rate)
    placement = placement or Placement.from_env()
    urls = placement.select(expand_shards(code_shards))
    names = shard_names(urls)
    model = load_model(model, config.runtime.device)
    model_id = model.model_id  # a hash of every weight: computed once
    out_dir = Path(out_dir)
    check_all([
        lambda: check_output_folder(out_dir),
        lambda: check_code_input(urls, model_id, "decode"),
        lambda: check_resume(out_dir, "decode_config.json", config.to_dict(), model_id,
                             config.resume),
    ])
    with FolderLock(out_dir, "decode", placement.rank):
        outputs = ShardOutputs(out_dir, with_tar=config.output_format == "shards")
        todo = outputs.prepare(urls, names, resume=config.resume)
        outputs.save_config(
            "decode_config.json", {**config.to_dict(), "model_id": model_id, "shards": urls}
        )
        summary = DecodeSummary(
            rank=placement.rank,
            shards_total=len(urls),
            shards_already_done=len(urls) - len(todo),
            out_dir=str(outputs.root),
        )
        _decode_all(model, todo, names, outputs, config, policy, summary)
    policy.check_rate(summary.skipped, summary.samples + summary.skipped)
    return summary


def _decode_all(
    model: VQTokenizer,
    todo: list[str],
    names: dict[str, str],
    outputs: ShardOutputs,
    config: DecodeConfig,
    policy: ErrorPolicy,
    summary: DecodeSummary,
) -> None:
    """Decode the shards still to do, then write the summary."""
    start = time.monotonic()
    decoder = _SampleDecoder(model, model.model_id, model_prior(model), config)
    claims = _FileClaims.from_done(outputs, names) if not outputs.with_tar else None
    with ShardProgress(len(todo), label="decode", enabled=config.progress) as progress:
        for url in todo:
            _decode_shard(decoder, url, names[url], outputs, policy, summary, claims)
            progress.advance(
                samples=summary.samples - progress.samples,
                errors=summary.skipped - progress.errors,
                shards=1,
            )
    summary.seconds = round(time.monotonic() - start, 3)
    write_summary(outputs.root, "decode", summary.to_dict())


class _FileClaims:
    """Which sample wrote each loose output file of this job: no two samples share a file.

    Keys are unique within a shard but not across shards, and a key's file name could
    match another's (`a/b` and `a/b.png` with another extension); the second sample is
    refused rather than overwriting the first. Done shards record their files in their
    stats, so that a resumed job knows them too.
    """

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    @classmethod
    def from_done(cls, outputs: ShardOutputs, names: dict[str, str]) -> _FileClaims:
        claims = cls()
        for name in names.values():
            stats = read_json(outputs.stats(name)) if outputs.is_done(name) else None
            for path in (stats or {}).get("files", []):
                claims.owner[path] = f"shard {name}"
        return claims

    def claim(self, paths: list[str], owner: str) -> None:
        taken = [p for p in paths if self.owner.get(p, owner) != owner]
        if taken:
            raise ValueError(
                f"output file {taken[0]} was already written by {self.owner[taken[0]]}"
            )
        self.owner.update(dict.fromkeys(paths, owner))


class _FileSink:
    """Writes decoded samples as `root/<key>.<ext>` (via a temporary name).

    Paths outside root are refused, and so are paths another sample of the job wrote.
    """

    def __init__(self, root: Path, shard: str, claims: _FileClaims) -> None:
        self.root = root.resolve()
        self.shard = shard
        self.claims = claims
        self.count = 0
        self.files: list[str] = []

    def target(self, key: str, ext: str) -> Path:
        path = (self.root / f"{key}.{ext}").resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key {key!r} would write outside the output folder")
        return path

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        paths = {ext: self.target(key, ext) for ext in fields}
        names = [str(p.relative_to(self.root)) for p in paths.values()]
        self.claims.claim(names, f"sample {key!r} of shard {self.shard}")
        for ext, data in fields.items():
            path = paths[ext]
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            os.replace(partial, path)
        self.files += names
        self.count += 1

    def commit(self) -> None:
        """Files are complete as soon as they are written."""

    def abort(self) -> None:
        """Leave complete files; a resumed job rewrites this shard's files."""


def _decode_shard(
    decoder: _SampleDecoder,
    url: str,
    name: str,
    outputs: ShardOutputs,
    policy: ErrorPolicy,
    summary: DecodeSummary,
    claims: _FileClaims | None,
) -> None:
    started = time.monotonic()
    sink = ShardWriter(outputs.tar(name)) if claims is None else _FileSink(
        outputs.root, name, claims
    )
    errors: list[SampleError] = []
    try:
        for item in read_samples(url, name):
            if isinstance(item, SampleError):
                policy.handle(item, errors)
                continue
            error = _write_sample(decoder, item, sink)
            if error is not None:
                policy.handle(error, errors)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    write_error_log(outputs.errors(name), errors)
    stats = {
        "shard": name,
        "count": sink.count,
        "skipped": len(errors),
        "seconds": round(time.monotonic() - started, 3),
    }
    if claims is not None:
        stats["files"] = sink.files
    outputs.mark_done(name, stats)
    summary.shards_decoded += 1
    summary.samples += sink.count
    summary.skipped += len(errors)
    if errors:
        summary.error_logs.append(str(outputs.errors(name)))


def _write_sample(decoder: _SampleDecoder, sample: Sample, sink) -> SampleError | None:
    """Decode and write one sample; a failure is returned as a SampleError of its stage."""
    try:
        fields = decoder(sample)
    except UsageError:
        raise
    except Exception as exc:  # one bad sample must not sink the shard
        stage = "keys" if isinstance(exc, KeyError) else "model"
        # str() of a KeyError is the repr of its message, quotes and all.
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        return SampleError(sample.shard, sample.key, stage, message)
    try:
        sink.write(sample.key, fields)
    except (ValueError, OSError) as exc:
        return SampleError(sample.shard, sample.key, "write", str(exc))
    return None


def _streams(meta: dict, pieces: int) -> bool:
    """Whether a sample is one whole-signal piece that ``restore_stream`` writes slab by slab
    (code shards of older vqtok versions hold windows or clips of the signal instead)."""
    if meta.get("modality") not in ("audio", "video") or pieces != 1:
        return False
    return meta["modality"] == "audio" or meta["media"].get("clip_starts") == [0]


def slab_limit(model: VQTokenizer, size: tuple[int, ...], max_bytes: int) -> tuple[int | None, ...]:
    """A cap on latent time positions per decoded slab, so that a slab of ``size[1:]``
    float32 outputs per time step takes at most ``max_bytes``.

    Args:
        model: The tokenizer (its channels and temporal stride).
        size: The decoded spatial size (T, *rest).
        max_bytes: The most one slab may hold.

    Returns:
        (cap on time, None for the other axes).
    """
    per_step = 4 * model.config.channels * int(np.prod(size[1:], dtype=np.int64))
    steps = max(1, max_bytes // max(per_step, 1))
    return (max(1, steps // model.config.strides[0]), *([None] * (len(size) - 1)))


@dataclass
class _SampleDecoder:
    """Code sample -> media fields, with the model and its prior (for compressed samples)."""

    model: VQTokenizer
    model_id: str  # hashed once: every sample is checked against it
    prior: np.ndarray  # (Q, K) int64
    config: DecodeConfig

    @torch.inference_mode()
    def __call__(self, sample: Sample) -> dict[str, bytes]:
        meta = code_meta(sample.fields)
        if meta.get("model_id") != self.model_id:
            raise UsageError(
                f"{sample.shard}: codes of {sample.key!r} come from model {meta.get('model_id')}, "
                f"not from this checkpoint ({self.model_id})"
            )
        codes, _ = unpack_codes(sample.fields, self.prior)
        if "cut" in meta:
            codes = join_codes(codes, meta["cut"], time_axis(meta))
        media = meta["media"]
        pieces = torch.from_numpy(codes.astype(np.int64))
        size = tuple(media["input_size"])
        budget = self.config.runtime.max_bytes()
        if _streams(meta, pieces.shape[0]):
            slabs = self.model.decode_slabs_within(
                pieces.to(self.config.runtime.device), budget, size,
                slab_limit(self.model, size, budget // 4),
            )
            ext, data = restore_stream(
                (slab.cpu() for slab in slabs), media, meta["modality"], self.config.audio_format
            )
            fields = {ext: data}
            if "cls" in sample.fields:
                fields["cls"] = sample.fields["cls"]
            return fields
        # Within the budget: whole pieces as before, larger ones in tiles (decode_within).
        decoded = [
            self.model.decode_within(chunk.to(self.config.runtime.device), budget, size).cpu()
            for chunk in pieces.split(self.config.runtime.batch_size)
        ]
        ext, data = restore(torch.cat(decoded), media, meta["modality"], self.config.audio_format)
        fields = {ext: data}
        if "cls" in sample.fields:
            fields["cls"] = sample.fields["cls"]
        return fields
