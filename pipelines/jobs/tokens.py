"""Flat token files for language models: `export_tokens` writes them, `TokenDataset` reads them.

`<prefix>.bin` holds every sample's tokens back to back (uint16 when the vocabulary fits,
else uint32); `<prefix>.idx` holds `num_samples + 1` little-endian int64 offsets into it
(sample i is `tokens[idx[i]:idx[i+1]]`); `<prefix>.json` is the manifest (vocabulary size,
special token ids, flattening order, model id, keys). Codes are flattened piece by piece
(windows, clips) in raster order, time-major for video; residual levels are either
interleaved per position (`order="interleaved"`) or laid out level after level
(`order="level-major"`). Compressed code shards (`encode --compress`) need the checkpoint
they were encoded with, for its prior.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from vqtok import VQTokenizer
from vqtok.entropy import model_prior
from vqtok.pipelines.data.sources import expand_shards, shard_name
from vqtok.pipelines.data.tario import Sample, read_samples
from vqtok.pipelines.errors import (
    ErrorPolicy,
    OnError,
    PipelineError,
    SampleError,
    UsageError,
    write_error_log,
)
from vqtok.pipelines.jobs.codes import is_compressed, unpack_codes
from vqtok.pipelines.jobs.common import load_model
from vqtok.pipelines.jobs.preflight import check_all, check_code_input, check_output_file

Order = Literal["interleaved", "level-major"]


# What `export_tokens` writes at its prefix (the error log only when samples were skipped).
TOKEN_FILES = (".bin", ".idx", ".json", ".errors.jsonl")


@dataclass
class TokenManifest:
    """What `<prefix>.json` records about an export."""

    model_id: str
    modality: str
    codebook_size: int
    num_levels: int
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    order: str
    flattening: str
    dtype: str
    num_samples: int = 0
    num_tokens: int = 0
    skipped: int = 0
    keys: list[str] = field(default_factory=list)


def flatten_codes(codes: np.ndarray, num_levels: int, order: Order = "interleaved") -> np.ndarray:
    """Flatten codes: (N, [Q,] *latent) -> 1-D tokens.

    Piece by piece, raster (time-major) within a piece.

    Args:
        codes: (N, [Q,] *latent) integer codes; the Q axis only when `num_levels` > 1.
        num_levels: Q, the residual levels.
        order: "interleaved" (the Q codes of a position together) or "level-major"
            (level after level within each piece).

    Returns:
        The 1-D token array, of the codes' dtype.
    """
    if num_levels == 1:
        return codes.reshape(-1)
    if order == "interleaved":
        return np.moveaxis(codes, 1, -1).reshape(-1)
    return codes.reshape(-1)


def export_tokens(code_shards: str | Sequence[str], out_prefix: str | Path, *, bos: bool = False,
                  eos: bool = False, order: Order = "interleaved", on_error: OnError = "raise",
                  checkpoint: VQTokenizer | str | Path | None = None,
                  overwrite: bool = False) -> TokenManifest:
    """Write `<out_prefix>.bin/.idx/.json` from code shards, samples in shard then key order.

    With `bos`/`eos`, ids `codebook_size` and `codebook_size + 1` (or `codebook_size` alone)
    frame each sample. All shards must come from one model.

    Args:
        code_shards: Code shards: a folder, file, brace pattern or URL, or several.
        out_prefix: Path prefix of the `.bin`, `.idx`, `.json` and `.errors.jsonl` files.
        bos: Begin each sample with the bos id.
        eos: End each sample with the eos id.
        order: How residual levels are flattened: "interleaved" or "level-major".
        on_error: "raise" to stop on a bad sample, "skip" to log it and go on.
        checkpoint: A VQTokenizer or checkpoint path giving the prior of compressed
            shards; needed only when there are some.
        overwrite: Replace token files that exist at `out_prefix` (refused otherwise).

    Returns:
        The manifest written to `<out_prefix>.json`: model, vocabulary, ids, counts.

    Raises:
        UsageError: Before anything is written, for a bad `order` or checkpoint, media
            shards or codes of another model, token files that exist (without `overwrite`)
            or cannot be written, or a prefix in use by another export; later, for shards
            of different models or compressed shards without their checkpoint.
        PipelineError: When no code sample is found, or for a bad sample under
            `on_error="raise"`.
    """
    if order not in ("interleaved", "level-major"):
        raise UsageError(f"--order must be 'interleaved' or 'level-major', not {order!r}")
    policy = ErrorPolicy(on_error)
    model = None if checkpoint is None else load_model(checkpoint, "cpu")
    urls = expand_shards(code_shards)
    prefix = Path(out_prefix)
    outputs = [prefix.with_name(prefix.name + ext) for ext in TOKEN_FILES]
    check_all([
        lambda: check_code_input(urls, model.model_id if model else "", "export-tokens"),
        *(lambda path=path: check_output_file(path, "token file") for path in outputs),
        lambda: _check_not_there(outputs, overwrite),
    ])
    return _export(urls, prefix, _TokenWriter(
        None, policy, None if model is None else model_prior(model), bos, eos, order
    ))


def _check_not_there(outputs: list[Path], overwrite: bool) -> None:
    found = [str(path) for path in outputs if path.exists()]
    if found and not overwrite:
        raise UsageError(
            f"{found[0]} already exists; pass --overwrite to replace the token files, or "
            "choose another prefix"
        )


def _export(urls: list[str], prefix: Path, writer: _TokenWriter) -> TokenManifest:
    """Stream the samples of `urls` into the token files at `prefix`.

    The partial token file is also the job's lock: a second export to the same prefix
    finds it locked and stops, and the kernel drops the lock of a killed export.

    Raises:
        UsageError: Another export is writing the same prefix.
    """
    bin_partial = prefix.with_name(prefix.name + ".bin.partial")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    lock = os.open(bin_partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise UsageError(f"another export-tokens is writing {prefix}; wait for it") from None
    try:  # the lock is held until the files are in place
        return _write_tokens(urls, prefix, writer, bin_partial, lock)
    finally:
        os.close(lock)


def _write_tokens(
    urls: list[str], prefix: Path, writer: _TokenWriter, bin_partial: Path, lock: int
) -> TokenManifest:
    try:
        os.ftruncate(lock, 0)
        with os.fdopen(os.dup(lock), "wb") as writer.out:
            for url in urls:
                for item in read_samples(url, shard_name(url)):
                    writer.add(item)
    except BaseException:
        bin_partial.unlink(missing_ok=True)
        raise
    manifest, offsets, errors = writer.manifest, writer.offsets, writer.errors
    if manifest is None:
        bin_partial.unlink()
        raise PipelineError("no code samples found to export")
    manifest.num_samples, manifest.num_tokens, manifest.skipped = (
        len(offsets) - 1,
        offsets[-1],
        len(errors),
    )
    write_error_log(prefix.with_name(prefix.name + ".errors.jsonl"), errors)
    bin_partial.replace(prefix.with_name(prefix.name + ".bin"))
    np.asarray(offsets, dtype="<i8").tofile(prefix.with_name(prefix.name + ".idx"))
    prefix.with_name(prefix.name + ".json").write_text(
        json.dumps(asdict(manifest), indent=2) + "\n"
    )
    return manifest


@dataclass
class _TokenWriter:
    """Appends code samples to the open token file.

    Keeps their offsets, errors and the manifest.
    """

    out: BinaryIO | None  # set once the token file is open
    policy: ErrorPolicy
    prior: np.ndarray | None  # (Q, K) int64, for compressed samples
    bos: bool
    eos: bool
    order: Order
    offsets: list[int] = field(default_factory=lambda: [0])
    errors: list[SampleError] = field(default_factory=list)
    manifest: TokenManifest | None = None  # from the first sample

    def add(self, item: Sample | SampleError) -> None:
        if isinstance(item, SampleError):
            self.policy.handle(item, self.errors)
            return
        if self.prior is None and is_compressed(item.fields):
            raise UsageError(
                f"{item.shard}: sample {item.key!r} holds compressed codes (encode --compress); "
                "pass --checkpoint with the checkpoint they were encoded with"
            )
        try:
            codes, meta = unpack_codes(item.fields, self.prior)
        except (KeyError, ValueError) as exc:
            self.policy.handle(SampleError(item.shard, item.key, "keys", str(exc)), self.errors)
            return
        self.manifest = self.manifest or _manifest(meta, self.bos, self.eos, self.order)
        _check_same_model(self.manifest, meta, item.key)
        tokens = _framed(flatten_codes(codes, self.manifest.num_levels, self.order), self.manifest)
        self.out.write(tokens.astype(self.manifest.dtype).tobytes())
        self.offsets.append(self.offsets[-1] + tokens.size)
        self.manifest.keys.append(meta.get("key", item.key))

def _manifest(meta: dict, bos: bool, eos: bool, order: str) -> TokenManifest:
    size = int(meta["codebook_size"])
    bos_id = size if bos else None
    eos_id = size + int(bos) if eos else None
    vocab = size + int(bos) + int(eos)
    dtype = "uint16" if vocab <= 65536 else "uint32"
    levels = int(meta["num_levels"])
    return TokenManifest(
        meta["model_id"],
        meta["modality"],
        size,
        levels,
        vocab,
        bos_id,
        eos_id,
        order,
        describe_flattening(meta["modality"], levels, order),
        dtype,
    )


def describe_flattening(modality: str, num_levels: int, order: str) -> str:
    """How a sample's codes became a token sequence, in words, for the manifest.

    Args:
        modality: "image", "audio" or "video".
        num_levels: Q, the residual levels.
        order: "interleaved" or "level-major".

    Returns:
        One sentence fragment.
    """
    axes = {"image": "raster (rows, then columns)", "audio": "windows, then time",
            "video": "clips, then time-major (frames, rows, columns)"}[modality]
    if num_levels == 1:
        return axes
    if order == "interleaved":
        return f"{axes}; the {num_levels} residual levels of each position together, coarse first"
    return f"per piece, residual level after level (coarse first), each {axes}"


def _check_same_model(manifest: TokenManifest, meta: dict, key: str) -> None:
    if meta["model_id"] != manifest.model_id:
        raise UsageError(f"sample {key!r} comes from model {meta['model_id']}, the export from "
                         f"{manifest.model_id}; export each model's codes separately")


def _framed(tokens: np.ndarray, manifest: TokenManifest) -> np.ndarray:
    parts = [tokens.astype(np.int64)]
    if manifest.bos_id is not None:
        parts.insert(0, np.array([manifest.bos_id]))
    if manifest.eos_id is not None:
        parts.append(np.array([manifest.eos_id]))
    return np.concatenate(parts)


class TokenDataset(Dataset):
    """Random windows of `seq_len` tokens from an export, for language-model training.

    Item i is a (seq_len,) int64 window starting at a position drawn from `seed` and i, so
    an epoch is reproducible; `len()` is the number of windows that cover the tokens once.
    `sample(i)` returns sample i's tokens whole (with its bos/eos if exported so).

    Args:
        prefix: The export's path prefix, as given to `export_tokens`.
        seq_len: Tokens per window, from 1 to the export's token count.
        seed: Seed of the window starts.

    Raises:
        UsageError: For a `seq_len` outside [1, tokens].
    """

    def __init__(self, prefix: str | Path, seq_len: int, *, seed: int = 0) -> None:
        prefix = Path(prefix)
        self.manifest = TokenManifest(
            **json.loads(prefix.with_name(prefix.name + ".json").read_text())
        )
        self.tokens = np.memmap(
            prefix.with_name(prefix.name + ".bin"), dtype=self.manifest.dtype, mode="r"
        )
        self.offsets = np.fromfile(prefix.with_name(prefix.name + ".idx"), dtype="<i8")
        if seq_len < 1 or seq_len > self.tokens.size:
            raise UsageError(f"seq_len must lie in [1, {self.tokens.size}] tokens, got {seq_len}")
        self.seq_len = seq_len
        self.seed = seed

    def __len__(self) -> int:
        return max(1, self.tokens.size // self.seq_len)

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng((self.seed, index))
        start = int(rng.integers(0, self.tokens.size - self.seq_len + 1))
        return torch.from_numpy(self.tokens[start : start + self.seq_len].astype(np.int64))

    @property
    def num_samples(self) -> int:
        """The number of samples in the export."""
        return len(self.offsets) - 1

    def sample(self, index: int) -> torch.Tensor:
        """Sample `index`'s tokens: (length,) int64.

        Args:
            index: The sample's position in the export.

        Returns:
            Its tokens, with its bos/eos if exported so.
        """
        return torch.from_numpy(
            self.tokens[self.offsets[index] : self.offsets[index + 1]].astype(np.int64)
        )
