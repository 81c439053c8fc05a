"""`vqtok encode --compress`: entropy-coded code shards, read back by decode and export-tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import vqtok
from vqtok.cli.app import app
from vqtok.entropy import model_prior, quantize_counts
from vqtok.pipelines import FitPriorConfig, UsageError, pack_codes, read_samples, unpack_codes
from vqtok.pipelines.compression.fit_prior import fit_prior_shards

runner = CliRunner()


def _invoke(*args) -> str:
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result.output


def _encode(checkpoint, shards, out, *flags) -> str:
    return _invoke("encode", checkpoint, shards, out, "--workers", 0, "--no-progress", *flags)


def _fields(folder) -> dict[str, dict[str, bytes]]:
    return {s.key: s.fields for tar in sorted(folder.glob("*.tar")) for s in read_samples(str(tar))}


@pytest.fixture(scope="module")
def coded(image_shards, checkpoints, tmp_path_factory):
    """The image shards encoded plainly, compressed with a fitted prior and with the uniform
    prior."""
    root = tmp_path_factory.mktemp("compressed")
    plain_checkpoint = checkpoints["image-vq-f8"]
    fitted = fit_prior_shards(
        plain_checkpoint, str(image_shards), root / "fitted", FitPriorConfig(workers=0)
    )
    paths = {
        "plain_checkpoint": plain_checkpoint,
        "fitted_checkpoint": fitted.checkpoint,
        "plain": root / "plain",
        "fitted": root / "fitted-codes",
        "uniform": root / "uniform-codes",
    }
    _encode(plain_checkpoint, image_shards, paths["plain"])
    _encode(fitted.checkpoint, image_shards, paths["fitted"], "--compress")
    paths["uniform_output"] = _encode(
        plain_checkpoint, image_shards, paths["uniform"], "--compress"
    )
    return paths


def test_compressed_samples_record_coder_prior_and_shape(coded):
    plain, compressed = _fields(coded["plain"]), _fields(coded["fitted"])
    assert plain.keys() == compressed.keys()
    for key, fields in compressed.items():
        assert "vqc" in fields and "npy" not in fields
        meta = json.loads(fields["json"])
        plain_meta = json.loads(plain[key]["json"])
        assert meta["coder"]["name"] == "ans-static" and len(meta["prior_id"]) == 16
        assert (meta["shape"], meta["dtype"]) == (plain_meta["shape"], plain_meta["dtype"])


def test_decode_of_compressed_shards_gives_the_same_media(coded, tmp_path):
    _invoke(
        "decode",
        coded["plain_checkpoint"],
        coded["plain"],
        tmp_path / "plain",
        "--format",
        "files",
        "--no-progress",
    )
    _invoke(
        "decode",
        coded["fitted_checkpoint"],
        coded["fitted"],
        tmp_path / "fitted",
        "--format",
        "files",
        "--no-progress",
    )
    plain = {p.name: p.read_bytes() for p in (tmp_path / "plain").rglob("*.png")}
    assert len(plain) == 5
    assert plain == {p.name: p.read_bytes() for p in (tmp_path / "fitted").rglob("*.png")}


def test_export_tokens_with_checkpoint_gives_the_same_tokens(coded, tmp_path):
    _invoke("export-tokens", coded["plain"], tmp_path / "plain", "--bos")
    _invoke(
        "export-tokens",
        coded["fitted"],
        tmp_path / "fitted",
        "--bos",
        "--checkpoint",
        coded["fitted_checkpoint"],
    )
    for suffix in (".bin", ".idx", ".json"):
        assert (tmp_path / f"plain{suffix}").read_bytes() == (
            tmp_path / f"fitted{suffix}"
        ).read_bytes()


def test_a_skewed_prior_makes_smaller_shards_than_npy(coded):
    def payload_bytes(name: str, field: str) -> int:
        return sum(len(fields[field]) for fields in _fields(coded[name]).values())

    fitted, uniform, npy = (
        payload_bytes("fitted", "vqc"),
        payload_bytes("uniform", "vqc"),
        payload_bytes("plain", "npy"),
    )
    # Tar members are padded to 512 bytes, so with tiny test images only the fields tell.
    assert fitted < uniform < npy


def test_uniform_prior_is_allowed_with_a_warning(coded):
    assert "warning:" in coded["uniform_output"] and "vqtok fit-prior" in coded["uniform_output"]


def test_export_tokens_without_checkpoint_exits_2_naming_the_flag(coded, tmp_path):
    result = runner.invoke(app, ["export-tokens", str(coded["fitted"]), str(tmp_path / "tok")])
    assert result.exit_code == 2, result.output
    assert "--checkpoint" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())  # no partial token file left behind


@pytest.mark.parametrize("command", ["decode", "export-tokens"])
def test_a_mismatched_prior_exits_2(coded, tmp_path, command):
    # The same model without its fitted prior: codes coded with the fitted one must be refused.
    if command == "decode":
        args = [
            "decode",
            coded["plain_checkpoint"],
            coded["fitted"],
            tmp_path / "media",
            "--no-progress",
        ]
    else:
        args = [
            "export-tokens",
            coded["fitted"],
            tmp_path / "tok",
            "--checkpoint",
            coded["plain_checkpoint"],
        ]
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 2, result.output
    assert "prior" in result.output and "Traceback" not in result.output


def test_compressed_codes_equal_the_plain_ones(coded):
    prior = model_prior(vqtok.load(coded["fitted_checkpoint"]))
    plain = _fields(coded["plain"])
    for key, fields in _fields(coded["fitted"]).items():
        codes, _ = unpack_codes(fields, prior)
        expected, _ = unpack_codes(plain[key])
        assert codes.dtype == expected.dtype
        np.testing.assert_array_equal(codes, expected)


def test_residual_codes_round_trip_through_the_compressed_form():
    rng = np.random.default_rng(0)
    prior = quantize_counts(rng.integers(0, 50, size=(4, 1024)))
    codes = rng.integers(0, 1024, size=(2, 4, 3, 5)).astype(np.uint16)
    fields = pack_codes(codes, {"key": "k", "codebook_size": 1024}, prior)
    restored, meta = unpack_codes(fields, prior)
    assert restored.dtype == np.uint16 and meta["shape"] == [2, 4, 3, 5]
    np.testing.assert_array_equal(restored, codes)
    swapped = prior[[1, 0, 2, 3]]  # the same table with two levels exchanged is another prior
    with pytest.raises(UsageError, match="prior"):
        unpack_codes(fields, swapped)
