"""export_tokens then TokenDataset gives back the codes, in the documented order."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vqtok.pipelines import (
    EncodeConfig,
    TokenDataset,
    encode_shards,
    export_tokens,
    read_samples,
    unpack_codes,
)


@pytest.fixture(scope="module")
def rvq_codes(image_shards, checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("rvq") / "codes"
    encode_shards(
        checkpoints["image-rvq-f8"], str(image_shards), out, EncodeConfig(workers=0, progress=False)
    )
    return out


def _codes(folder):
    return [
        unpack_codes(s.fields)[0]
        for tar in sorted(folder.glob("*.tar"))
        for s in read_samples(str(tar))
    ]


@pytest.mark.parametrize("order", ["interleaved", "level-major"])
def test_tokens_round_trip_with_specials(rvq_codes, tmp_path, order):
    manifest = export_tokens(str(rvq_codes), tmp_path / "tok", bos=True, eos=True, order=order)
    assert (manifest.vocab_size, manifest.bos_id, manifest.eos_id) == (1026, 1024, 1025)
    saved = json.loads((tmp_path / "tok.json").read_text())
    assert saved["order"] == order and saved["flattening"].startswith(("raster", "per piece"))
    dataset = TokenDataset(tmp_path / "tok", seq_len=16)
    codes = _codes(rvq_codes)
    assert dataset.num_samples == len(codes) == manifest.num_samples
    for i, sample_codes in enumerate(codes):
        tokens = dataset.sample(i)
        assert tokens[0] == 1024 and tokens[-1] == 1025
        body = tokens[1:-1].numpy()
        levels = sample_codes.shape[1]
        if order == "interleaved":  # position by position, its Q levels together
            restored = body.reshape(1, *sample_codes.shape[2:], levels).transpose(0, 3, 1, 2)
        else:
            restored = body.reshape(sample_codes.shape)
        np.testing.assert_array_equal(restored, sample_codes)


def test_windows_are_reproducible_slices(rvq_codes, tmp_path):
    export_tokens(str(rvq_codes), tmp_path / "tok")
    flat = np.fromfile(tmp_path / "tok.bin", dtype=np.uint16).astype(np.int64)
    dataset = TokenDataset(tmp_path / "tok", seq_len=32, seed=5)
    assert len(dataset) == flat.size // 32
    starts = set()
    for i in range(len(dataset)):
        window = dataset[i]
        assert window.shape == (32,) and window.dtype == torch.int64
        matches = [
            s for s in range(flat.size - 31) if np.array_equal(flat[s : s + 32], window.numpy())
        ]
        assert matches
        starts.add(matches[0])
        assert torch.equal(window, TokenDataset(tmp_path / "tok", seq_len=32, seed=5)[i])
    assert len(starts) > 1
