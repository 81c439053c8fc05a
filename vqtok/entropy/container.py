r"""The `.vqt` container: a JSON header and CRC-checked payload chunks, bytes in and bytes out.

Layout (all integers little-endian; see docs/vqt-format.md):

    magic         8 bytes   b"\x89VQT\r\n\x1a\n"
    version       u16       FORMAT_VERSION
    header_size   u32       at most MAX_HEADER_BYTES
    header        JSON object, UTF-8
    header_crc    u32       CRC32 of the header bytes
    chunk_count   u32
    chunk_count x (size u32, data, crc u32 of data)

Nothing follows the last chunk. Reading checks every length against what is left, every
CRC and the version before trusting a byte, and raises ContainerError with a message that
says what is wrong; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\x89VQT\r\n\x1a\n"
FORMAT_VERSION = 2
MAX_HEADER_BYTES = 1 << 20
CHUNK_BYTES = 1 << 20

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class ContainerError(ValueError):
    """The bytes are not a readable .vqt file (wrong magic, truncated, corrupted)."""


class UnsupportedVersionError(ContainerError):
    """The file was written in a format version this vqtok does not read (newer or older)."""


@dataclass(frozen=True)
class Container:
    """A parsed .vqt file: its `header` (JSON object) and `payload` (the joined chunks)."""

    version: int
    header: dict
    payload: bytes


def pack(header: dict, payload: bytes, chunk_bytes: int = CHUNK_BYTES) -> bytes:
    """Serialize `header` and `payload`, split into CRC-checked chunks.

    Args:
        header: A JSON-able dict, written with sorted keys.
        payload: The data, e.g. from `encode_payload`.
        chunk_bytes: The largest chunk.

    Returns:
        The .vqt file's bytes.

    Raises:
        ValueError: The header's JSON exceeds MAX_HEADER_BYTES.
        TypeError: The header is not JSON-able.
    """
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise ValueError(f"header of {len(header_bytes)} bytes exceeds {MAX_HEADER_BYTES}")
    chunks = [payload[i : i + chunk_bytes] for i in range(0, len(payload), chunk_bytes)]
    parts = [MAGIC, _U16.pack(FORMAT_VERSION), _U32.pack(len(header_bytes)), header_bytes,
             _U32.pack(zlib.crc32(header_bytes)), _U32.pack(len(chunks))]
    for chunk in chunks:
        parts += [_U32.pack(len(chunk)), chunk, _U32.pack(zlib.crc32(chunk))]
    return b"".join(parts)


def unpack(data: bytes) -> Container:
    """Parse and verify a .vqt file.

    Args:
        data: The file's bytes.

    Returns:
        The header and the joined payload.

    Raises:
        UnsupportedVersionError: The file's format version is not FORMAT_VERSION.
        ContainerError: The magic, a length, a CRC or the header is wrong, the file is
            truncated, or bytes follow the last chunk.
    """
    reader = _Reader(data)
    if reader.take(len(MAGIC), "magic") != MAGIC:
        raise ContainerError("not a .vqt file (bad magic bytes)")
    version = reader.u16("format version")
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(f"format version {version} is newer than this vqtok reads "
                                      f"({FORMAT_VERSION}); upgrade vqtok to read it")
    if version < FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"format version {version} is older than this vqtok reads "
            f"({FORMAT_VERSION}); decompress it with the vqtok that wrote it "
            f"and compress the media again"
        )
    header_size = reader.u32("header size")
    if header_size > MAX_HEADER_BYTES:
        raise ContainerError(
            f"header size {header_size} exceeds the limit of {MAX_HEADER_BYTES} bytes"
        )
    header = _parse_header(reader.checked(header_size, "header"))
    chunk_count = reader.u32("chunk count")
    chunks = [
        reader.checked(reader.u32(f"chunk {i} size"), f"chunk {i}") for i in range(chunk_count)
    ]
    if reader.left():
        raise ContainerError(f"{reader.left()} unexpected bytes after the last chunk")
    return Container(version, header, b"".join(chunks))


def _parse_header(raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ContainerError(f"header is not valid JSON: {error}") from None
    if not isinstance(header, dict):
        raise ContainerError("header is not a JSON object")
    return header


class _Reader:
    """Bounds-checked sequential reads over `data`.

    Args:
        data: The bytes to read.
    """

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.offset = 0

    def left(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, what: str) -> bytes:
        if size > self.left():
            raise ContainerError(f"file is truncated: {what} needs {size} bytes at offset "
                                 f"{self.offset}, only {self.left()} remain")
        chunk = bytes(self.data[self.offset : self.offset + size])
        self.offset += size
        return chunk

    def u16(self, what: str) -> int:
        return _U16.unpack(self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def checked(self, size: int, what: str) -> bytes:
        """`size` bytes followed by their CRC32, verified.

        Args:
            size: The number of bytes before the CRC32.
            what: What they are, for error messages.

        Returns:
            The `size` bytes.

        Raises:
            ContainerError: The CRC32 does not match.
        """
        data = self.take(size, what)
        if zlib.crc32(data) != self.u32(f"{what} checksum"):
            raise ContainerError(f"{what} is corrupted (CRC32 mismatch)")
        return data
