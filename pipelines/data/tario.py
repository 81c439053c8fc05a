"""Reading and writing WebDataset tar shards, sample by sample.

A WebDataset sample is a run of adjacent tar members sharing a key: `a/b/0001.jpg` and
`a/b/0001.cls` form sample `a/b/0001` with fields `jpg` and `cls` (the key ends at the
first dot of the basename). Reading yields `SampleError`s instead of raising, so the
caller's error policy decides; writing is byte-deterministic (fixed mtime, owner, mode).

Shards come from strangers: members that are links or devices, names that are absolute or
climb with `..`, and members larger than a limit (much smaller for `.json` metadata) are
refused as `SampleError`s without reading their data; a writer refuses such keys too.
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

MAX_MEMBER_BYTES = 1 << 32  # a larger member is refused unread: no sample needs 4 GiB in memory
MAX_JSON_BYTES = 1 << 20  # metadata: the same bound as a .vqt header


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


def read_samples(url: str, shard: str | None = None, *, max_member_bytes: int = MAX_MEMBER_BYTES,
                 max_json_bytes: int = MAX_JSON_BYTES) -> Iterator[Sample | SampleError]:
    """Stream the samples of one shard; `url` is a path, `pipe:CMD` or http(s) URL.

    Bad members become `SampleError(stage="keys")`, reported once per key for a bad or
    repeated key; an unreadable or truncated tar ends the stream with one
    `SampleError(stage="tar")` naming the sample it was in.
    """
    shard = shard or url
    seen: set[str] = set()
    current: Sample | None = None
    dropped = ""  # the key of a run of members being dropped, reported once
    try:
        with wds.gopen(url, "rb") as stream, _open_stream(stream) as tar:
            tar.fileobj = reads = _LastRead(tar.fileobj)
            for member in tar:
                tar.members = []  # a stream needs no index; it would grow with every member
                if member.isdir():  # carries no data
                    continue
                key, ext = split_member_name(member.name)
                if current is not None and key != current.key:
                    if current.fields:  # a sample whose members were all bad is already reported
                        yield current
                    current = None
                if key == dropped:
                    continue
                if current is None:
                    refusal = key_problem(key) or (
                        "key repeats a non-adjacent sample" if key in seen else ""
                    )
                    if refusal:
                        dropped = key
                        yield SampleError(shard, key, "keys", f"{member.name}: {refusal}")
                        continue
                    seen.add(key)
                    current = Sample(key, shard)
                limit = max_json_bytes if ext.rpartition(".")[2] == "json" else max_member_bytes
                problem = _member_problem(member, ext, current, limit)
                if problem:
                    yield SampleError(shard, key, "keys", f"{member.name}: {problem}")
                else:
                    current.fields[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
            reads.check_end(tar.offset)
        if current is not None and current.fields:
            yield current
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        where = current.key if current is not None else ""
        yield SampleError(shard, where, "tar", f"unreadable tar: {exc or type(exc).__name__}")


def _open_stream(stream) -> tarfile.TarFile:
    """tarfile.open in stream mode. CPython's stream reader raises TypeError (``ord`` of an
    empty read) on a gzip header cut short: a truncated file like any other."""
    try:
        return tarfile.open(fileobj=stream, mode="r|*")
    except TypeError as exc:
        raise tarfile.ReadError(f"compressed header cut short ({exc})") from None


class _LastRead:
    """Wraps tarfile's stream to keep its last read. tarfile ends a stream quietly at a
    missing, short or garbled header, which is how a shard cut at a member boundary looks;
    only a zero block where the next header would be marks a complete archive."""

    def __init__(self, fileobj) -> None:
        self._fileobj = fileobj
        self.start, self.data = -1, b""

    def read(self, size: int = -1) -> bytes:
        self.start = self._fileobj.tell()
        self.data = self._fileobj.read(size)
        return self.data

    def __getattr__(self, name: str):
        return getattr(self._fileobj, name)

    def check_end(self, offset: int) -> None:
        """Raise tarfile.ReadError unless the stream ended at the end-of-archive block.

        That is, unless the read that ended the stream was the end-of-archive block.
        """
        if self.start < 0:  # tarfile met the end block when it opened the stream
            return
        if (
            self.start != offset
            or len(self.data) != tarfile.BLOCKSIZE
            or self.data.count(0) != tarfile.BLOCKSIZE
        ):
            raise tarfile.ReadError(
                f"no end-of-archive marker at byte {offset}: truncated or corrupt"
            )


def key_problem(key: str) -> str:
    """Why `key` may not name files (absolute, climbing with `..`, empty basename); '' if it may."""
    parts = key.replace("\\", "/").split("/")
    if key.startswith(("/", "\\")) or ".." in parts:
        return "unsafe name (absolute or with '..')"
    if not parts[-1]:
        return "member name has no key before its extension"
    return ""


def _member_problem(member: tarfile.TarInfo, ext: str, sample: Sample, limit: int) -> str:
    if not member.isfile():
        return "links and special files are refused"
    if not ext:
        return "member has no extension"
    if ext in sample.fields:
        return f"field {ext!r} appears twice"
    if member.size > limit:
        return f"{member.size} bytes exceed the limit of {limit} for a .{ext} member"
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
        """Add one sample; fields are written in sorted extension order.

        Raises ValueError for an unsafe key.
        """
        problem = key_problem(key)
        if problem:
            raise ValueError(f"key {key!r}: {problem}")
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
