"""`make_shards`: pack media files or an array file of images into WebDataset tar shards.

Keys are made safe from WebDataset's traps: a key ends at the first dot of a basename,
so dots (and path separators) in file names become `_`, and names that collide after that
get a numeric suffix. Optional labels become `.cls` (integers) or `.json` (anything else).
A `shards.json` manifest beside the shards maps every key back to its source file.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vqtok.pipelines.data.arrays import (
    array_samples,
    is_array_file,
    npz_has_labels,
    read_array,
    read_labels_array,
)
from vqtok.pipelines.data.media import EXTENSIONS, Modality
from vqtok.pipelines.data.tario import ShardWriter
from vqtok.pipelines.errors import UsageError

UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class MakeShardsSummary:
    """What `make_shards` wrote: shard paths, samples per shard, files it did not pack."""

    shards: list[str] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    samples: int = 0
    ignored: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The summary as plain JSON-ready data.

        Returns:
            The fields as a dict (the shape of `shards.json` without its `sources`).
        """
        return asdict(self)


def make_shards(
    src: str | Path,
    out_dir: str | Path,
    modality: Modality,
    *,
    maxcount: int = 1000,
    labels: str | Path | None = None,
    prefix: str = "shard",
) -> MakeShardsSummary:
    """Pack `src` into `out_dir/<prefix>-NNNNNN.tar`, at most `maxcount` samples per shard.

    `src` is a folder of `modality` files (recursively, sorted), or an array file of images
    (IDX, .npy, .npz; see `vqtok.pipelines.data.arrays`). For a folder, `labels` is a JSON
    object or a two-column CSV (file, label) keyed by a file's path relative to `src` or
    its name without extension; for an array file, an array of one label per image (IDX
    or .npy; a .npz's own y/labels array is used when `labels` is not given).

    Args:
        src: A folder of media files, or an array file of images.
        out_dir: Folder for the shards and their `shards.json` manifest; made if missing.
        modality: "image", "audio" or "video": which files of a folder are packed.
        maxcount: Most samples per shard, at least 1.
        labels: Optional labels file (JSON or CSV for a folder, an array for an array file).
        prefix: Shard file name prefix.

    Returns:
        The shard paths, samples per shard, total samples and the files left out.

    Raises:
        UsageError: For an unknown modality, a `maxcount` below 1, a missing or unreadable
            `src` or labels file, a folder without `modality` files, an array file for a
            modality other than image, or labels that do not match the images.
    """
    src, out_dir = Path(src), Path(out_dir)
    if modality not in EXTENSIONS:
        raise UsageError(f"modality must be one of {', '.join(EXTENSIONS)}, not {modality!r}")
    if maxcount < 1:
        raise UsageError(f"--maxcount must be at least 1, got {maxcount}")
    if is_array_file(src):
        if modality != "image":
            raise UsageError(f"array files hold images; {src} cannot become {modality} shards")
        return _write_shards(_array_samples(src, labels), out_dir, modality, maxcount, prefix, [])
    if not src.is_dir():
        what = (
            "is neither a folder nor an array file (IDX, .npy, .npz)"
            if src.exists()
            else "not found"
        )
        raise UsageError(f"{src}: {what}")
    files, ignored = _media_files(src, modality)
    if not files:
        raise UsageError(f"no {modality} files ({'/'.join(EXTENSIONS[modality])}) under {src}")
    label_table = _read_labels(Path(labels)) if labels else {}
    samples = _file_samples(src, files, label_table)
    return _write_shards(
        samples, out_dir, modality, maxcount, prefix, [str(f.relative_to(src)) for f in ignored]
    )


Sample = tuple[str, dict[str, bytes], str]  # key, fields, where it came from


def _write_shards(
    samples: Iterator[Sample],
    out_dir: Path,
    modality: str,
    maxcount: int,
    prefix: str,
    ignored: list[str],
) -> MakeShardsSummary:
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = MakeShardsSummary(ignored=ignored)
    sources: dict[str, str] = {}
    writer: ShardWriter | None = None
    for key, fields, source in samples:
        if writer is None or writer.count == maxcount:
            _commit(writer, summary)
            writer = ShardWriter(out_dir / f"{prefix}-{len(summary.shards):06d}.tar")
        writer.write(key, fields)
        sources[key] = source
    _commit(writer, summary)
    summary.samples = sum(summary.counts)
    manifest = {"modality": modality, **summary.to_dict(), "sources": sources}
    (out_dir / "shards.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return summary


def _commit(writer: ShardWriter | None, summary: MakeShardsSummary) -> None:
    if writer is not None:
        summary.shards.append(str(writer.commit()))
        summary.counts.append(writer.count)


def _file_samples(src: Path, files: list[Path], label_table: dict[str, object]) -> Iterator[Sample]:
    for file, key in zip(files, safe_keys([f.relative_to(src) for f in files]), strict=True):
        relative = file.relative_to(src)
        fields = {file.suffix[1:].lower(): file.read_bytes()}
        fields.update(_label_fields(label_table, relative))
        yield key, fields, str(relative)


def _array_samples(src: Path, labels: str | Path | None) -> Iterator[Sample]:
    images = read_array(src)
    if len(images) == 0:
        raise UsageError(f"{src} holds no images")
    if labels is not None:
        label_array = read_labels_array(labels)
    elif src.suffix.lower() == ".npz" and npz_has_labels(src):
        label_array = read_labels_array(src)
    else:
        label_array = None
    for key, fields in array_samples(images, label_array):
        yield key, fields, f"{src.name}[{int(key)}]"


def _media_files(src: Path, modality: Modality) -> tuple[list[Path], list[Path]]:
    files = sorted(p for p in src.rglob("*") if p.is_file())
    wanted = [p for p in files if p.suffix[1:].lower() in EXTENSIONS[modality]]
    return wanted, [p for p in files if p not in set(wanted)]


def safe_keys(paths: list[Path]) -> list[str]:
    """One unique WebDataset-safe key per path: `a/b.c/x.y.jpg` -> `a_b_c_x_y`.

    Args:
        paths: Relative file paths, in the order the keys are wanted.

    Returns:
        One key per path; a key taken already gets a numeric suffix (`_2`, `_3`, ...).
    """
    keys: list[str] = []
    taken: set[str] = set()
    for path in paths:
        base = UNSAFE.sub("_", str(path.with_suffix("")).replace("\\", "/")).strip("_") or "sample"
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base}_{n}"
        taken.add(key)
        keys.append(key)
    return keys


def _read_labels(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise UsageError(f"labels file not found: {path}")
    try:
        if path.suffix.lower() == ".json":
            table = json.loads(path.read_text())
            if not isinstance(table, dict):
                raise ValueError("expected a JSON object mapping files to labels")
            return table
        with path.open(newline="") as handle:
            return {row[0]: _parse_label(row[1]) for row in csv.reader(handle) if len(row) >= 2}
    except (ValueError, IndexError) as exc:
        raise UsageError(f"cannot read labels from {path}: {exc}") from None


def _parse_label(text: str) -> object:
    return int(text) if text.strip().lstrip("-").isdigit() else text


def _label_fields(table: dict[str, object], relative: Path) -> dict[str, bytes]:
    for name in (relative.as_posix(), relative.with_suffix("").as_posix(), relative.stem):
        if name in table:
            label = table[name]
            if isinstance(label, int) and not isinstance(label, bool):
                return {"cls": str(label).encode()}
            return {"json": json.dumps(label, sort_keys=True).encode()}
    return {}
