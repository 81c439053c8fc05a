"""`decode_shards`: code shards back to media at the original size and length.

Writes PNG (images), WAV or FLAC (audio) and MP4 (video), either as shards with the same
basenames and keys (`output_format="shards"`) or as loose files `OUT_DIR/<key>.<ext>`
(`output_format="files"`), never outside OUT_DIR. Done markers, resume and the error
policy work as in `encode_shards`. Compressed code shards (`encode --compress`) are decoded
with the model's prior; shards coded with another prior are refused.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vqtok import VQTokenizer
from vqtok.entropy import model_prior
from vqtok.pipelines.config import ErrorOptions, JobConfig, RuntimeOptions
from vqtok.pipelines.data.media import restore
from vqtok.pipelines.data.sources import Placement, expand_shards
from vqtok.pipelines.data.tario import Sample, ShardWriter, read_samples
from vqtok.pipelines.errors import ErrorPolicy, SampleError, UsageError, write_error_log
from vqtok.pipelines.jobs.codes import code_meta, unpack_codes
from vqtok.pipelines.jobs.common import ShardOutputs, load_model, shard_names, write_summary
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

    `model` is a VQTokenizer or a checkpoint path.
    """
    config = config or DecodeConfig()
    config.check()
    policy = ErrorPolicy(config.errors.on_error, config.errors.max_error_rate)
    placement = placement or Placement.from_env()
    urls = placement.select(expand_shards(code_shards))
    names = shard_names(urls)
    outputs = ShardOutputs(Path(out_dir), with_tar=config.output_format == "shards")
    todo = outputs.prepare(urls, names, resume=config.resume)
    model = load_model(model, config.runtime.device)
    outputs.save_config(
        "decode_config.json", {**config.to_dict(), "model_id": model.model_id, "shards": urls}
    )
    summary = DecodeSummary(
        rank=placement.rank,
        shards_total=len(urls),
        shards_already_done=len(urls) - len(todo),
        out_dir=str(outputs.root),
    )
    start = time.monotonic()
    decoder = _SampleDecoder(model, model_prior(model), config)
    with ShardProgress(len(todo), label="decode", enabled=config.progress) as progress:
        for url in todo:
            _decode_shard(decoder, url, names[url], outputs, policy, summary)
            progress.advance(
                samples=summary.samples - progress.samples,
                errors=summary.skipped - progress.errors,
                shards=1,
            )
    summary.seconds = round(time.monotonic() - start, 3)
    write_summary(outputs.root, "decode", summary.to_dict())
    policy.check_rate(summary.skipped, summary.samples + summary.skipped)
    return summary


class _FileSink:
    """Writes decoded samples as `root/<key>.<ext>` (via a temporary name).

    Paths outside root are refused.
    """

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.count = 0

    def target(self, key: str, ext: str) -> Path:
        path = (self.root / f"{key}.{ext}").resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"key {key!r} would write outside the output folder")
        return path

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        for ext, data in fields.items():
            path = self.target(key, ext)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            os.replace(partial, path)
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
) -> None:
    started = time.monotonic()
    sink = ShardWriter(outputs.tar(name)) if outputs.with_tar else _FileSink(outputs.root)
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
    outputs.mark_done(
        name,
        {
            "shard": name,
            "count": sink.count,
            "skipped": len(errors),
            "seconds": round(time.monotonic() - started, 3),
        },
    )
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
        return SampleError(sample.shard, sample.key, stage, str(exc))
    try:
        sink.write(sample.key, fields)
    except (ValueError, OSError) as exc:
        return SampleError(sample.shard, sample.key, "write", str(exc))
    return None


@dataclass
class _SampleDecoder:
    """Code sample -> media fields, with the model and its prior (for compressed samples)."""

    model: VQTokenizer
    prior: np.ndarray  # (Q, K) int64
    config: DecodeConfig

    @torch.inference_mode()
    def __call__(self, sample: Sample) -> dict[str, bytes]:
        meta = code_meta(sample.fields)
        if meta.get("model_id") != self.model.model_id:
            raise UsageError(
                f"{sample.shard}: codes of {sample.key!r} come from model {meta.get('model_id')}, "
                f"not from this checkpoint ({self.model.model_id})"
            )
        codes, _ = unpack_codes(sample.fields, self.prior)
        media = meta["media"]
        pieces = torch.from_numpy(codes.astype(np.int64))
        size = tuple(media["input_size"])
        decoded = [
            self.model.decode(chunk.to(self.config.runtime.device), size=size).cpu()
            for chunk in pieces.split(self.config.runtime.batch_size)
        ]
        ext, data = restore(torch.cat(decoded), media, meta["modality"], self.config.audio_format)
        fields = {ext: data}
        if "cls" in sample.fields:
            fields["cls"] = sample.fields["cls"]
        return fields
