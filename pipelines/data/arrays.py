"""Array datasets as samples: IDX files (the MNIST family, gzipped or not) and NumPy arrays.

`read_array` reads one array file: an IDX file (``train-images-idx3-ubyte[.gz]``), a ``.npy``
(never unpickled) or one array of a ``.npz``. `array_samples` turns images (N, H, W) or
(N, H, W, C) and optional labels (N,) int or (N, M) float into (key, fields) samples: each
image a lossless 8-bit PNG, each integer label a ``.cls``, each label vector a ``.json``
list. The sizes an IDX or .npz header claims are checked against the data it holds before
anything is allocated, so a crafted header cannot ask for terabytes.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vqtok.pipelines.data.media import png_bytes
from vqtok.pipelines.errors import UsageError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"
IMAGE_KEYS = ("x", "images", "data", "arr_0")
LABEL_KEYS = ("y", "labels", "targets", "arr_1")
MAX_ARRAY_BYTES = 1 << 34  # 16 GiB: refuse headers that claim more before reading them
READ_ERRORS = (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error)


def is_array_file(path: Path) -> bool:
    """Whether ``path`` is a file `read_array` understands (by suffix, or by IDX magic)."""
    if not path.is_file():
        return False
    if path.suffix.lower() in (".npy", ".npz", ".idx", ".gz") or "-idx" in path.name:
        return True
    with path.open("rb") as handle:
        return is_idx_magic(handle.read(4))


def is_idx_magic(head: bytes) -> bool:
    """Whether ``head`` starts like an IDX file: 0, 0, a known type code, 1 to 4 dimensions."""
    return len(head) >= 4 and head[:2] == b"\0\0" and head[2] in IDX_TYPES and 1 <= head[3] <= 4


def read_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """The array stored in ``path``: IDX (gzipped or not), .npy, or the ``key`` array of a
    .npz (default: the first of x/images/data/arr_0). UsageError when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"array file not found: {path}")
    try:
        if path.suffix.lower() == ".npy":
            return np.load(path, allow_pickle=False)
        if path.suffix.lower() == ".npz":
            return _npz_member(path, key, IMAGE_KEYS)
        return read_idx(path.read_bytes())
    except READ_ERRORS as exc:
        raise UsageError(f"cannot read {path}: {exc or type(exc).__name__}") from None


def read_labels_array(path: str | Path, key: str | None = None) -> np.ndarray:
    """Labels from an IDX/.npy file, or the labels array of a .npz (y/labels/targets/arr_1)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        try:
            return _npz_member(path, key, LABEL_KEYS)
        except READ_ERRORS as exc:
            raise UsageError(
                f"cannot read labels from {path}: {exc or type(exc).__name__}"
            ) from None
    return read_array(path, key)


def npz_has_labels(path: Path) -> bool:
    """Whether a .npz holds a labels array under one of the usual names."""
    with np.load(path, allow_pickle=False) as archive:
        return any(name in archive.files for name in LABEL_KEYS)


def _npz_member(path: Path, key: str | None, defaults: tuple[str, ...]) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        names = [key] if key else [name for name in defaults if name in archive.files]
        if not names or names[0] not in archive.files:
            wanted = key or "/".join(defaults)
            raise ValueError(
                f"no array named {wanted} (it holds {', '.join(archive.files) or 'nothing'})"
            )
        _check_npz_member_size(archive.zip, names[0] + ".npy")
        return archive[names[0]]


def _check_npz_member_size(archive: zipfile.ZipFile, member: str) -> None:
    """numpy allocates what a member's header claims before reading its data: compare the
    claim with the member's real (uncompressed) size first."""
    size = archive.getinfo(member).file_size
    if size > MAX_ARRAY_BYTES:
        raise ValueError(f"{member} holds {size} bytes, more than {MAX_ARRAY_BYTES}")
    with archive.open(member) as handle:
        major, _ = np.lib.format.read_magic(handle)
        read_header = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(handle)
    if math.prod(shape) * dtype.itemsize > size:
        raise ValueError(f"{member} claims shape {shape} of {dtype}, more than its {size} bytes")


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (LeCun's MNIST format), gzipped or not: a 4-byte magic (0, 0,
    type, number of dimensions), the big-endian u32 sizes, then the values, big-endian."""
    if data[:2] == GZIP_MAGIC:
        data = _gunzip_bounded(data)
    if not is_idx_magic(data):
        raise ValueError("not an IDX file (bad magic number)")
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError("truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - header != expected:
        raise ValueError(
            f"IDX header says {shape} ({expected} bytes of data), "
            f"the file holds {len(data) - header}"
        )
    return (
        np.frombuffer(data, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _gunzip_bounded(data: bytes) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as handle:
        out = handle.read(MAX_ARRAY_BYTES + 1)
    if len(out) > MAX_ARRAY_BYTES:
        raise ValueError(f"decompresses to more than {MAX_ARRAY_BYTES} bytes")
    return out


def as_images(array: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) with C in 1/3/4 (also (N, C, H, W) with C in 1/3) ->
    (N, H, W, C) uint8. Integers must lie in [0, 255]; floats in [0, 1] are scaled by 255."""
    if array.ndim == 3:
        array = array[..., None]
    elif array.ndim == 4 and array.shape[-1] not in (1, 3, 4) and array.shape[1] in (1, 3):
        array = array.transpose(0, 2, 3, 1)
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise UsageError(
            f"images must be (N, H, W) or (N, H, W, C) with C in 1/3/4, got shape {array.shape}"
        )
    if array.dtype.kind == "f":
        low, high = float(np.nanmin(array)), float(np.nanmax(array))
        if np.isnan(array).any() or low < 0 or high > 1:
            raise UsageError(
                f"float images must lie in [0, 1] without NaN (found [{low:g}, {high:g}])"
            )
        return np.rint(array * 255).astype(np.uint8)
    if array.dtype.kind == "b":  # a mask: 0 and 255, not near-black 0 and 1
        return array.astype(np.uint8) * 255
    if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255:
        raise UsageError(f"integer images must lie in [0, 255], got dtype {array.dtype}")
    return array.astype(np.uint8)


def label_field(label: np.ndarray) -> dict[str, bytes]:
    """One sample's label: an integer -> ``.cls``; a vector of numbers -> a ``.json`` list."""
    if label.ndim == 0 and label.dtype.kind in "iub":
        return {"cls": str(int(label)).encode()}
    if label.ndim <= 1 and label.dtype.kind in "iubf" and np.isfinite(label).all():
        return {"json": json.dumps(np.atleast_1d(label).tolist()).encode()}
    raise UsageError(
        f"labels must be integers (N,) or finite number vectors (N, M), got {label.dtype} {label}"
    )


def array_samples(
    images: np.ndarray, labels: np.ndarray | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, fields) per image: ``{"png": ...}`` plus its label field; keys are the zero-padded
    index, so shard order is array order."""
    images = as_images(images)
    if labels is not None and len(labels) != len(images):
        raise UsageError(f"{len(labels)} labels for {len(images)} images")
    width = max(6, len(str(len(images) - 1)))
    for index, image in enumerate(images):
        fields = {"png": png_bytes(image)}
        if labels is not None:
            fields.update(label_field(np.asarray(labels[index])))
        yield f"{index:0{width}d}", fields

