"""The .vqt container: round trip, and a clear ContainerError for every damaged file."""

from __future__ import annotations

import struct
import subprocess
import sys

import pytest

from vqtok.entropy import FORMAT_VERSION, ContainerError, UnsupportedVersionError, pack, unpack
from vqtok.entropy.container import MAGIC, MAX_HEADER_BYTES

HEADER = {"model_id": "0123456789abcdef", "codes_shape": [1, 4, 4], "media": {"height": 30}}


def test_round_trip_over_several_chunks():
    payload = bytes(range(256)) * 3
    container = unpack(pack(HEADER, payload, chunk_bytes=100))
    assert container.header == HEADER
    assert container.payload == payload
    assert container.version == FORMAT_VERSION


def test_empty_payload_round_trips():
    assert unpack(pack(HEADER, b"")).payload == b""


def test_every_truncation_is_detected():
    data = pack(HEADER, b"payload bytes" * 4, chunk_bytes=16)
    for size in range(len(data)):
        with pytest.raises(ContainerError):
            unpack(data[:size])


def test_every_flipped_byte_is_detected():
    data = pack(HEADER, b"payload bytes" * 4, chunk_bytes=16)
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        with pytest.raises(ContainerError):
            unpack(bytes(damaged))


def test_trailing_bytes_are_refused():
    with pytest.raises(ContainerError, match="after the last chunk"):
        unpack(pack(HEADER, b"abc") + b"\0")


def test_a_newer_version_asks_for_an_upgrade():
    data = bytearray(pack(HEADER, b"abc"))
    struct.pack_into("<H", data, len(MAGIC), FORMAT_VERSION + 1)
    with pytest.raises(UnsupportedVersionError, match="upgrade"):
        unpack(bytes(data))


def test_oversized_header_is_refused_both_ways():
    with pytest.raises(ValueError):
        pack({"blob": "x" * MAX_HEADER_BYTES}, b"")
    data = bytearray(pack(HEADER, b""))
    struct.pack_into("<I", data, len(MAGIC) + 2, MAX_HEADER_BYTES + 1)
    with pytest.raises(ContainerError, match="exceeds"):
        unpack(bytes(data))


def test_header_must_be_a_json_object():
    with pytest.raises(ContainerError, match="JSON object"):
        unpack(pack([1, 2], b""))  # type: ignore[arg-type]


def test_vqtok_and_the_container_import_without_constriction():
    code = ("import sys; sys.modules['constriction'] = None; import vqtok, vqtok.entropy as c; "
            "assert c.unpack(c.pack({'a': 1}, b'xy')).payload == b'xy'")
    subprocess.run([sys.executable, "-c", code], check=True)
