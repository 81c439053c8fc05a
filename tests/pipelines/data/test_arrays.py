"""Array datasets into shards: IDX files (MNIST family, gzipped or not), .npy and .npz."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vqtok.pipelines import UsageError, make_shards, read_samples
from vqtok.pipelines.data.arrays import as_images, read_array, read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of ``array`` (written independently of the reader under test)."""
    codes = {
        np.dtype("u1"): 0x08,
        np.dtype("i1"): 0x09,
        np.dtype(">i2"): 0x0B,
        np.dtype(">i4"): 0x0C,
        np.dtype(">f4"): 0x0D,
        np.dtype(">f8"): 0x0E,
    }
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, codes[big.dtype], array.ndim]) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    return header + big.tobytes()


def mnist_like(count: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, 28, 28), dtype=np.uint8), rng.integers(0, 10, count).astype(
        np.uint8
    )


def decoded(sample_fields: dict[str, bytes]) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(sample_fields["png"])))


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_idx_round_trips_every_type_and_shape(dtype: str) -> None:
    array = (np.arange(60).reshape(3, 4, 5) - (0 if dtype == "u1" else 30)).astype(dtype)
    parsed = read_idx(idx_bytes(array))
    assert parsed.shape == (3, 4, 5) and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, array)


def test_idx_images_and_labels_become_png_and_cls_shards_gzipped_or_not(tmp_path) -> None:
    images, labels = mnist_like()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    summary = make_shards(
        tmp_path / "train-images-idx3-ubyte.gz",
        tmp_path / "out",
        "image",
        maxcount=3,
        labels=tmp_path / "train-labels-idx1-ubyte",
    )
    assert summary.counts == [3, 3, 1]
    samples = [s for shard in summary.shards for s in read_samples(shard)]
    assert [s.key for s in samples] == [f"{i:06d}" for i in range(7)]  # array order is kept
    for i, sample in enumerate(samples):
        np.testing.assert_array_equal(decoded(sample.fields), images[i])  # lossless
        assert int(sample.fields["cls"]) == labels[i]
    manifest = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert manifest["sources"]["000004"] == "train-images-idx3-ubyte.gz[4]"


def test_npz_with_its_own_labels_and_npy_with_attribute_vectors(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.random((4, 8, 6, 3))  # floats in [0, 1], channels last
    np.savez(tmp_path / "data.npz", x=rgb, y=np.array([1, 0, 1, 2]))
    summary = make_shards(tmp_path / "data.npz", tmp_path / "npz", "image")
    samples = list(read_samples(summary.shards[0]))
    np.testing.assert_array_equal(
        decoded(samples[2].fields), np.rint(rgb[2] * 255).astype(np.uint8)
    )
    assert [int(s.fields["cls"]) for s in samples] == [1, 0, 1, 2]

    np.save(
        tmp_path / "grey.npy", rng.integers(0, 256, (3, 1, 5, 5)).astype(np.uint8)
    )  # channels first
    np.save(tmp_path / "attributes.npy", np.array([[0.5, 1.0], [0.0, 0.25], [1.0, 1.0]]))
    summary = make_shards(
        tmp_path / "grey.npy", tmp_path / "npy", "image", labels=tmp_path / "attributes.npy"
    )
    samples = list(read_samples(summary.shards[0]))
    assert decoded(samples[0].fields).shape == (5, 5)
    assert [json.loads(s.fields["json"]) for s in samples] == [[0.5, 1.0], [0.0, 0.25], [1.0, 1.0]]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda data: data[:-1], "the file holds"),  # truncated values
        (lambda data: data[:6], "truncated IDX header"),
        (lambda data: b"\0\0\x07\x03" + data[4:], "bad magic"),  # unknown type code
        (
            lambda data: data[:4] + struct.pack(">I", 1 << 31) + data[8:],
            "the file holds",
        ),  # huge claimed size
    ],
)
def test_corrupt_idx_files_are_refused_before_allocating(tmp_path, corrupt, message) -> None:
    data = idx_bytes(mnist_like()[0])
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(corrupt(data))
    with pytest.raises(UsageError, match=message):
        read_array(path)


def test_bad_arrays_and_labels_are_refused_with_a_message(tmp_path) -> None:
    with pytest.raises(UsageError, match=r"\[0, 1\]"):
        as_images(np.full((2, 4, 4), 1.5))
    with pytest.raises(UsageError, match=r"\(N, H, W\)"):
        as_images(np.zeros((2, 4, 4, 7)))
    np.save(tmp_path / "images.npy", np.zeros((3, 4, 4), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.zeros(2, dtype=np.int64))
    with pytest.raises(UsageError, match="2 labels for 3 images"):
        make_shards(
            tmp_path / "images.npy", tmp_path / "out", "image", labels=tmp_path / "labels.npy"
        )
    with pytest.raises(UsageError, match="array files hold images"):
        make_shards(tmp_path / "images.npy", tmp_path / "out", "audio")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(UsageError, match="cannot read"):  # never unpickled
        read_array(tmp_path / "objects.npy")


def test_crafted_npz_and_gzip_files_are_refused_before_allocating(tmp_path) -> None:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.zeros((2, 3, 3), dtype=np.uint8))
    small = buffer.getvalue()
    claim = b"(1048576, 1048576, 64), }"  # 64 TiB, written over the header's padding spaces
    start = small.index(b"(2, 3, 3), }")
    crafted = small[:start] + claim + small[start + len(claim):]
    assert len(crafted) == len(small) and crafted.index(b"\n") == small.index(b"\n")
    with zipfile.ZipFile(tmp_path / "crafted.npz", "w") as archive:  # a valid zip, CRC included
        archive.writestr("x.npy", crafted)
    with pytest.raises(UsageError, match="claims shape"):
        read_array(tmp_path / "crafted.npz")
    (tmp_path / "broken-idx3-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(mnist_like()[0]))[:40] + b"\x00" * 60
    )
    with pytest.raises(UsageError, match="cannot read"):
        read_array(tmp_path / "broken-idx3-ubyte.gz")


def test_bool_masks_become_black_and_white_and_non_finite_labels_are_refused(tmp_path) -> None:
    assert as_images(np.array([[[True, False]]])).ravel().tolist() == [255, 0]
    np.save(tmp_path / "images.npy", np.zeros((2, 4, 4), dtype=np.uint8))
    np.save(tmp_path / "labels.npy", np.array([[0.5, np.nan], [1.0, 0.0]]))
    with pytest.raises(UsageError, match="finite"):
        make_shards(
            tmp_path / "images.npy", tmp_path / "out", "image", labels=tmp_path / "labels.npy"
        )


def test_cli_imports_an_idx_file(tmp_path) -> None:
    from vqtok.cli.app import app

    images, labels = mnist_like(4)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    result = CliRunner().invoke(
        app,
        [
            "shards",
            "make",
            str(tmp_path / "t10k-images-idx3-ubyte"),
            str(tmp_path / "out"),
            "--modality",
            "image",
            "--labels",
            str(tmp_path / "t10k-labels-idx1-ubyte.gz"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 4
    (tmp_path / "broken-idx3-ubyte").write_bytes(b"\0\0\x08\x03" + b"\0" * 5)
    refused = CliRunner().invoke(
        app,
        [
            "shards",
            "make",
            str(tmp_path / "broken-idx3-ubyte"),
            str(tmp_path / "o2"),
            "--modality",
            "image",
        ],
    )
    assert (
        refused.exit_code == 2
        and "truncated IDX header" in refused.output
        and "Traceback" not in refused.output
    )
