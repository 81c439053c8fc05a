"""The token LM (vqtok.lm): learning, sampling, the KV cache, checkpoints and presets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import vqtok.lm as lm_api
from vqtok.checkpoint import CheckpointError
from vqtok.entropy.lm_coder import decode_lm, encode_lm, lm_bits, quantized_frequencies
from vqtok.lm.layout import chunk_starts, code_positions
from vqtok.lm.sequences import chunk_sequence, collate, lm_loss


def tiny(**overrides):
    options = {"codebook_size": 16, "layout": (3, 4), "d_model": 32, "num_heads": 2,
               "num_layers": 2, "max_len": 64}
    return lm_api.create_lm("lm-tiny", **{**options, **overrides})


def test_presets_are_registered():
    assert {"lm-tiny", "lm-small", "lm-base"} <= set(lm_api.list_lms())
    with pytest.raises(KeyError, match="lm-tiny"):
        lm_api.create_lm("lm-nope")


def test_positions_follow_raster_order_and_levels():
    positions = code_positions((2, 3), (2, 3), 2, 0, 12)
    assert positions[:4].tolist() == [[1, 1, 1], [1, 1, 2], [1, 2, 1], [1, 2, 2]]
    assert positions[6].tolist() == [2, 1, 1]
    assert chunk_starts(12, 6, 2) == [(0, 4), (4, 4), (8, 4)]


def test_relative_time_counts_time_from_the_chunk():
    # Q = 2 over a (time, 2) grid: token 12 is time step 3, which starts its chunk.
    absolute = code_positions((8, 2), (10, 2), 2, 12, 4)
    relative = code_positions((8, 2), (10, 2), 2, 12, 4, relative_time=True)
    assert absolute[:, 0].tolist() == [4, 4, 4, 4]
    assert relative[:, 0].tolist() == [1, 1, 1, 1]
    assert relative[:, 1:].tolist() == absolute[:, 1:].tolist()  # columns, levels absolute
    late = code_positions((4, 2), (10_000, 2), 2, 16_000, 8, relative_time=True)
    assert late[:, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]  # an hour in: as at the start


def test_output_bias_starts_the_lm_at_the_code_frequencies():
    torch.manual_seed(0)
    model = tiny(num_levels=2, layout=(6,), max_len=13)
    frequencies = torch.tensor([[0.7] + [0.3 / 15] * 15, [1 / 16] * 16])
    codes = torch.stack([torch.multinomial(f, 6 * 40, replacement=True,
                                           generator=torch.Generator().manual_seed(level))
                         for level, f in enumerate(frequencies)], dim=1).reshape(40, 12)
    counts = torch.stack([torch.bincount(codes[:, level::2].reshape(-1), minlength=16)
                          for level in range(2)])
    batch = collate([chunk_sequence(model.config, piece, 0, 12) for piece in codes])
    uniform = float(lm_loss(model, *batch).detach())
    model.init_output_bias(counts)
    start = float(lm_loss(model, *batch).detach())
    entropy = float(-(frequencies * frequencies.log()).sum(dim=1).mean())
    assert uniform > np.log(16) - 0.1  # nats: a fresh LM without the bias is near uniform
    assert abs(start - entropy) < 0.15  # with it, at the two levels' own frequencies
    with pytest.raises(ValueError, match="expected"):
        model.init_output_bias(counts[:1])


def test_configs_written_before_the_new_fields_keep_their_meaning():
    data = tiny().config.to_dict()
    del data["relative_time"], data["output_bias"]
    config = lm_api.LMConfig.from_dict(data)
    assert config.relative_time is False and config.output_bias is False
    assert "output_bias" not in lm_api.TokenLM(config).state_dict()


def test_overfits_a_tiny_token_set():
    torch.manual_seed(0)
    model = tiny(num_classes=4, class_dropout=0.0)  # the class tells the pieces apart
    pieces = torch.randint(0, 16, (4, 12))
    batch = collate([chunk_sequence(model.config, p, 0, 12, label=i)
                     for i, p in enumerate(pieces)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = float(lm_loss(model, *batch).detach())
    for _ in range(150):
        loss = lm_loss(model, *batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 2.5  # about ln 21 at the start
    assert float(loss.detach()) < 0.05  # it has memorized the four sequences


@pytest.mark.parametrize("options", [
    {},
    {"top_k": 4, "temperature": 0.7},
])
def test_fixed_seed_sampling_is_reproducible(options):
    model = tiny().eval()
    first = lm_api.sample(model, 3, generator=torch.Generator().manual_seed(5), **options)
    again = lm_api.sample(model, 3, generator=torch.Generator().manual_seed(5), **options)
    other = lm_api.sample(model, 3, generator=torch.Generator().manual_seed(6), **options)
    assert first.shape == (3, 3, 4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert int(first.max()) < 16


@pytest.mark.parametrize("overrides,options", [
    ({}, {}),
    ({"num_levels": 2, "max_len": 7}, {"top_k": 3}),  # residual levels, several chunks
    ({"num_classes": 3}, {"labels": [0, 2], "guidance": 3.0}),
])
def test_kv_cached_sampling_equals_uncached(overrides, options):
    model = tiny(**overrides).eval()
    cached = lm_api.sample(model, 2, generator=torch.Generator().manual_seed(1), **options)
    plain = lm_api.sample(model, 2, generator=torch.Generator().manual_seed(1), use_cache=False,
                          **options)
    assert torch.equal(cached, plain)


def test_kv_cached_logits_equal_a_full_forward():
    model = tiny().eval()
    tokens = torch.randint(0, 16, (2, 9))
    positions = code_positions((3, 4), (3, 4), 1, 0, 9)
    full = model(tokens, positions)
    cache = lm_api.KVCache()
    steps = [model(tokens[:, i : i + 1], positions[i : i + 1], cache) for i in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_guidance_needs_a_conditional_lm():
    with pytest.raises(ValueError, match="guidance"):
        lm_api.sample(tiny().eval(), 1, guidance=2.0)
    with pytest.raises(ValueError, match="outside"):
        lm_api.sample(tiny(num_classes=2).eval(), 1, labels=[5])


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = tiny(num_classes=2, tokenizer_id="abc").eval()
    lm_api.save_lm(model, tmp_path / "lm")
    loaded = lm_api.load_lm(tmp_path / "lm")
    assert loaded.lm_id == model.lm_id and loaded.config == model.config
    record = json.loads((tmp_path / "lm" / "config.json").read_text())
    assert record["lm_id"] == model.lm_id and record["tokenizer_id"] == "abc"
    weights = tmp_path / "lm" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # flip a weight bit: the content hash no longer matches
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="hash"):
        lm_api.load_lm(tmp_path / "lm")
    with pytest.raises(CheckpointError, match="missing"):
        lm_api.load_lm(tmp_path)


def test_quantized_frequencies_ignore_tiny_float_noise():
    logits = torch.randn(64, 16, dtype=torch.float64) * 4
    noisy = logits + 1e-13 * torch.randn_like(logits)
    table = quantized_frequencies(logits)
    assert np.array_equal(table, quantized_frequencies(noisy))
    assert table.min() >= 1 and (table.max(axis=1) == 2**24).all()


@pytest.mark.parametrize("batch_sizes", [(1, 3), (4, 2)])
def test_lm_coding_round_trips_across_batch_sizes(batch_sizes):
    model = tiny(num_levels=2, max_len=9).eval()
    codes = np.random.default_rng(0).integers(0, 16, (3, 2, 3, 4))
    payload = encode_lm(model, codes, batch_size=batch_sizes[0])
    assert payload == encode_lm(model, codes, batch_size=batch_sizes[1])
    assert np.array_equal(decode_lm(model, payload, codes.shape, batch_size=batch_sizes[1]), codes)
    assert abs(8 * len(payload) - lm_bits(model, codes)) < 64 + 32  # within the ANS overhead


def test_a_payload_cannot_announce_more_codes_than_it_can_hold():
    model = tiny().eval()
    with pytest.raises(ValueError, match="cannot hold"):
        decode_lm(model, b"\0" * 8, (10**9, 3, 4))
