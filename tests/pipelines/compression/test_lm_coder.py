"""`compress --coder lm`: .vqt files coded with a token LM decode bit-exactly, anywhere.

The encoder and decoder run in separate processes with 1 and 2 threads and different batch
sizes; a missing, wrong or corrupted LM is a clear UsageError.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers.lm import photos, tiny_lm, tiny_tokenizer

import vqtok
import vqtok.lm
from vqtok.entropy import unpack
from vqtok.pipelines.compression.vqt import (
    CompressConfig,
    compress_bytes,
    compress_file,
    decompress_bytes,
    decompress_file,
)
from vqtok.pipelines.errors import UsageError

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tokenizer, an LM of its codes, a second LM and a 64x48 photo (8x6 codes)."""
    root = tmp_path_factory.mktemp("lm-coder")
    tokenizer = tiny_tokenizer(root / "tokenizer")
    vqtok.lm.save_lm(tiny_lm(tokenizer, layout=(8, 8), max_len=20), root / "lm")  # 3 chunks
    vqtok.lm.save_lm(tiny_lm(tokenizer, d_model=64), root / "other-lm")
    photo = photos(root / "photos", 64)[0]
    from PIL import Image

    Image.open(photo).resize((48, 64)).save(root / "photo.png")
    return root


def lm_config(**changes) -> CompressConfig:
    return CompressConfig(coder="lm", **changes)


def test_lm_coded_file_restores_the_same_media_as_the_static_coder(setup, tmp_path):
    lm_rates = compress_file(setup / "tokenizer", setup / "photo.png", tmp_path / "lm.vqt",
                             lm_config(), lm=setup / "lm")
    compress_file(setup / "tokenizer", setup / "photo.png", tmp_path / "static.vqt",
                  CompressConfig(coder="ans-static"))
    header = unpack((tmp_path / "lm.vqt").read_bytes()).header
    assert header["coder"] == "lm" and header["lm"] == vqtok.lm.load_lm(setup / "lm").lm_id
    assert header["codes"] == [1, 8, 6]
    decompress_file(tmp_path / "lm.vqt", tmp_path / "lm.png", setup / "tokenizer",
                    lm=setup / "lm")
    decompress_file(tmp_path / "static.vqt", tmp_path / "static.png", setup / "tokenizer")
    assert (tmp_path / "lm.png").read_bytes() == (tmp_path / "static.png").read_bytes()
    # The payload is what the quantized tables promise, give or take the ANS state.
    assert abs(8 * lm_rates.payload_bytes - lm_rates.coded_bits) <= 64


def test_the_recorded_lm_is_used_when_none_is_given(setup, tmp_path):
    compress_file(setup / "tokenizer", setup / "photo.png", tmp_path / "a.vqt", lm_config(),
                  lm=setup / "lm")
    decompress_file(tmp_path / "a.vqt", tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0


CODE_SCRIPT = """
import sys, numpy as np, torch
import vqtok.lm
from vqtok.entropy.lm_coder import decode_lm, encode_lm
torch.set_num_threads(int(sys.argv[1]))
lm = vqtok.lm.load_lm(sys.argv[3])
batch = int(sys.argv[2])
if sys.argv[4] == "encode":
    codes = np.load(sys.argv[5])
    open(sys.argv[6], "wb").write(encode_lm(lm, codes, batch_size=batch))
else:
    payload = open(sys.argv[5], "rb").read()
    np.save(sys.argv[6], decode_lm(lm, payload, tuple(int(n) for n in sys.argv[7:]), batch))
"""


def run_coder(threads: int, batch: int, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(CODE_SCRIPT), str(threads),
                             str(batch), *args], cwd=ROOT, env=env, capture_output=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr.decode()[-2000:]


@pytest.mark.slow
def test_decoding_is_bit_exact_across_threads_and_batch_sizes(setup, tmp_path):
    """Five pieces, coded in three chunks each, by processes that differ in threads and
    batch size: every payload is identical and every decoder recovers the codes."""
    codes = np.random.default_rng(3).integers(0, 64, (5, 8, 6))
    np.save(tmp_path / "codes.npy", codes)
    lm = str(setup / "lm")
    run_coder(1, 1, lm, "encode", str(tmp_path / "codes.npy"), str(tmp_path / "a.bin"))
    run_coder(2, 4, lm, "encode", str(tmp_path / "codes.npy"), str(tmp_path / "b.bin"))
    assert (tmp_path / "a.bin").read_bytes() == (tmp_path / "b.bin").read_bytes()
    for threads, batch, name in ((2, 3, "c.npy"), (1, 5, "d.npy")):
        run_coder(threads, batch, lm, "decode", str(tmp_path / "a.bin"), str(tmp_path / name),
                  *map(str, codes.shape))
        assert np.array_equal(np.load(tmp_path / name), codes)


def test_thread_count_and_batch_size_do_not_change_the_stream(setup):
    """The quick in-process version of the test above."""
    import torch

    from vqtok.entropy.lm_coder import decode_lm, encode_lm

    lm = vqtok.lm.load_lm(setup / "lm")
    codes = np.random.default_rng(4).integers(0, 64, (3, 8, 6))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        payload = encode_lm(lm, codes, batch_size=1)
        torch.set_num_threads(2)
        assert encode_lm(lm, codes, batch_size=2) == payload
        assert np.array_equal(decode_lm(lm, payload, codes.shape, batch_size=3), codes)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_file_compressed_in_one_process_decompresses_in_another(setup, tmp_path):
    """The CLI's path end to end: 1 thread to compress, 2 threads and batch 3 to decompress."""
    script = textwrap.dedent("""
        import sys, torch
        from vqtok.pipelines.compression.vqt import (
    CompressConfig,
    compress_bytes,
    compress_file,
    decompress_bytes,
    decompress_file,
)
        from vqtok.pipelines.config import RuntimeOptions
        torch.set_num_threads(int(sys.argv[1]))
        if sys.argv[2] == "compress":
            compress_file(sys.argv[3], sys.argv[4], sys.argv[5], CompressConfig(coder="lm"),
                          lm=sys.argv[6])
        else:
            decompress_file(sys.argv[3], sys.argv[4], sys.argv[5], RuntimeOptions(batch_size=3),
                            lm=sys.argv[6])
    """)
    tokenizer, lm = str(setup / "tokenizer"), str(setup / "lm")
    vqt, png = str(tmp_path / "x.vqt"), str(tmp_path / "x.png")
    for threads, args in ((1, ["compress", tokenizer, str(setup / "photo.png"), vqt, lm]),
                          (2, ["decompress", vqt, png, tokenizer, lm])):
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        result = subprocess.run([sys.executable, "-c", script, str(threads), *args], cwd=ROOT,
                                env=env, capture_output=True, timeout=300)
        assert result.returncode == 0, result.stderr.decode()[-2000:]
    decompress_file(vqt, tmp_path / "here.png", tokenizer, lm=lm)
    assert Path(png).read_bytes() == (tmp_path / "here.png").read_bytes()


def test_a_wrong_missing_or_corrupted_lm_fails_clearly(setup, tmp_path):
    vqt = tmp_path / "a.vqt"
    compress_file(setup / "tokenizer", setup / "photo.png", vqt, lm_config(), lm=setup / "lm")
    with pytest.raises(UsageError, match="coded with token LM .* not with this one"):
        decompress_file(vqt, tmp_path / "a.png", setup / "tokenizer", lm=setup / "other-lm")
    moved = tmp_path / "moved-lm"
    shutil.copytree(setup / "lm", moved)
    compress_file(setup / "tokenizer", setup / "photo.png", vqt, lm_config(), lm=moved)
    shutil.rmtree(moved)
    with pytest.raises(UsageError, match="pass --lm"):
        decompress_file(vqt, tmp_path / "a.png", setup / "tokenizer")
    broken = tmp_path / "broken-lm"
    shutil.copytree(setup / "lm", broken)
    weights = bytearray((broken / "model.safetensors").read_bytes())
    weights[-3] ^= 0x55
    (broken / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(UsageError, match="cannot load the LM.*hash"):
        decompress_file(vqt, tmp_path / "a.png", setup / "tokenizer", lm=broken)
    with pytest.raises(UsageError, match="not a vqtok LM checkpoint"):
        decompress_file(vqt, tmp_path / "a.png", setup / "tokenizer", lm=tmp_path)


def test_compress_refuses_an_lm_of_another_tokenizer_or_no_lm(setup, tmp_path):
    stranger = tmp_path / "stranger"
    other = tiny_tokenizer(tmp_path / "other-tokenizer")
    vqtok.lm.save_lm(tiny_lm(other, tokenizer_id="0123456789abcdef"), stranger)
    with pytest.raises(UsageError, match="models the codes of tokenizer 0123456789abcdef"):
        compress_file(setup / "tokenizer", setup / "photo.png", tmp_path / "a.vqt", lm_config(),
                      lm=stranger)
    with pytest.raises(UsageError, match="needs --lm"):
        compress_file(setup / "tokenizer", setup / "photo.png", tmp_path / "a.vqt", lm_config())
    with pytest.raises(UsageError, match="--lm is used by --coder lm or auto only"):
        compress_file(setup / "tokenizer", setup / "photo.png", tmp_path / "a.vqt",
                      CompressConfig(coder="ans-static"), lm=setup / "lm")
    assert not (tmp_path / "a.vqt").exists()


def test_a_corrupted_lm_payload_is_a_usage_error(setup, tmp_path):
    from vqtok.entropy import pack

    vqt = tmp_path / "a.vqt"
    compress_file(setup / "tokenizer", setup / "photo.png", vqt, lm_config(), lm=setup / "lm")
    container = unpack(vqt.read_bytes())
    payload = bytearray(container.payload)
    payload[0] ^= 0xFF
    vqt.write_bytes(pack(container.header, bytes(payload)))  # valid CRCs, wrong stream
    with pytest.raises(UsageError, match="cannot read .vqt"):
        decompress_file(vqt, tmp_path / "a.png", setup / "tokenizer", lm=setup / "lm")


def test_residual_levels_round_trip_interleaved(tmp_path):
    """A 2-level residual tokenizer: the LM codes both levels of each position in turn."""
    import torch

    torch.manual_seed(0)
    rvq = vqtok.create_model("image-rvq-f8", widths=[8, 8, 8, 8], quantizer_options={
        "codebook_size": 64, "num_levels": 2, "codebook_dim": 8})
    vqtok.save(rvq, tmp_path / "rvq")
    rvq = vqtok.load(tmp_path / "rvq")
    vqtok.lm.save_lm(tiny_lm(rvq, num_levels=2, max_len=12), tmp_path / "lm")
    photo = photos(tmp_path / "photos", 32)[0]
    compress_file(tmp_path / "rvq", photo, tmp_path / "a.vqt", lm_config(), lm=tmp_path / "lm")
    compress_file(tmp_path / "rvq", photo, tmp_path / "b.vqt", CompressConfig(coder="ans-static"))
    assert unpack((tmp_path / "a.vqt").read_bytes()).header["codes"] == [1, 2, 4, 4]
    for name in ("a", "b"):
        decompress_file(tmp_path / f"{name}.vqt", tmp_path / f"{name}.png", tmp_path / "rvq",
                        lm=tmp_path / "lm" if name == "a" else None)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    with pytest.raises(UsageError, match="drop --levels"):
        compress_file(tmp_path / "rvq", photo, tmp_path / "c.vqt", lm_config(levels=1),
                      lm=tmp_path / "lm")


def test_auto_with_an_lm_keeps_the_shortest_file_and_it_decodes(setup):
    model = vqtok.load(setup / "tokenizer")
    lm = vqtok.lm.load_lm(setup / "lm")
    data = (setup / "photo.png").read_bytes()
    with_lm, rates = compress_bytes(model, data, CompressConfig(coder="auto"), lm=lm)
    lm_only = compress_bytes(model, data, CompressConfig(coder="lm"), lm=lm)[0]
    plain = compress_bytes(model, data)[0]  # auto without an LM: static or adaptive
    assert with_lm == min(lm_only, plain, key=len) and rates.written_bytes == len(with_lm)
    assert decompress_bytes(model, with_lm, lm=lm) == decompress_bytes(model, plain)
