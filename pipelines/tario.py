"""Reading and writing WebDataset tar shards, sample by sample.

A WebDataset sample is a run of adjacent tar members sharing a key: `a/b/0001.jpg` and
`a/b/0001.cls` form sample `a/b/0001` with fields `jpg` and `cls` (the key ends at the
first dot of the basename). Reading yields `SampleError`s instead of raising, so the
caller's error policy decides; writing is byte-deterministic (fixed mtime, owner, mode).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds

from vqtok.pipelines.errors import SampleError


@dataclass
class Sample:
    """One sample: its key, the shard it came from and its fields (extension -> bytes)."""

    key: str
    shard: str
    fields: dict[str, bytes] = field(default_factory=dict)


def split_member_name(name: str) -> tuple[str, str]:
    """`dir/0001.flac.json` -> (`dir/0001`, `flac.json`); the extension is '' when absent."""
    head, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{head}/{stem}" if head else stem), ext


def read_samples(url: str, shard: str | None = None) -> Iterator[Sample | SampleError]:
    """Stream the samples of one shard; `url` is a path, `pipe:CMD` or http(s) URL.

    Bad members become `SampleError(stage="keys")`; an unreadable or truncated tar ends the
    stream with one `SampleError(stage="tar")` naming the sample it was in.
    """
    shard = shard or url
    seen: set[str] = set()
    current: Sample | None = None
    repeated = ""  # the key of a repeated run being dropped, reported once
    try:
        with wds.gopen(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = split_member_name(member.name)
                if current is not None and key != current.key:
                    if current.fields:  # a sample whose members were all bad is already reported
                        yield current
                    current = None
                if key == repeated:
                    continue
                if current is None:
                    if key in seen:
                        repeated = key
                        yield SampleError(shard, key, "keys", "key repeats a non-adjacent sample")
                        continue
                    seen.add(key)
                    current = Sample(key, shard)
                problem = _member_problem(ext, current)
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if problem:
                    yield SampleError(shard, key, "keys", f"{member.name}: {problem}")
                else:
                    current.fields[ext] = data
        if current is not None and current.fields:
            yield current
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        where = current.key if current is not None else ""
        yield SampleError(shard, where, "tar", f"unreadable tar: {exc or type(exc).__name__}")


def _member_problem(ext: str, sample: Sample) -> str:
    if not ext:
        return "member has no extension"
    if ext in sample.fields:
        return f"field {ext!r} appears twice"
    return ""


class ShardWriter:
    """Writes a tar shard to `<path>.partial` and renames it to `path` on `commit()`.

    Members get mtime 0, uid/gid 0, no owner names and mode 0644, so the same samples
    always give the same bytes.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.partial = partial_path(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self.partial, "w", format=tarfile.PAX_FORMAT)
        self.count = 0

    def write(self, key: str, fields: dict[str, bytes]) -> None:
        """Add one sample; fields are written in sorted extension order."""
        for ext in sorted(fields):
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(fields[ext])
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(fields[ext]))
        self.count += 1

    def commit(self) -> Path:
        """Finish the tar and move it to its final name."""
        self._tar.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial output."""
        self._tar.close()
        self.partial.unlink(missing_ok=True)


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")
