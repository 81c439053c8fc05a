"""Tiled and chunked encode/decode equal the whole-input results, for every preset.

fp32 on the CPU is not bit-exact across piece sizes: oneDNN blocks a convolution's sums
differently for other input sizes, which moves results by a few ulps. So equality is
checked against a principled tolerance: tiling may add no more error than fp32 arithmetic
already has, measured per case as the whole fp32 result's distance to an fp64 reference.
Codes must be equal except where the latents differ by that float noise and the quantizer's
decision flips on it (a near-tie); such flips must be rare.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import vqtok
from vqtok.models import PRESETS

FP32_EPS = torch.finfo(torch.float32).eps
# Largest sizes drawn per modality: enough for several pieces with halos cut off.
MAX_SIZE = {"audio": (4000,), "image": (70, 70), "video": (30, 40, 40)}


@functools.cache
def tiny(preset: str) -> vqtok.VQTokenizer:
    """The preset's layer geometry with 4-channel stages, seeded; in eval mode."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        config = PRESETS[preset]
        options = {"codebook_size": 16} if config.quantizer != "fsq" else {}
        return vqtok.create_model(
            preset, widths=(4,) * len(config.widths), latent_dim=4, quantizer_options=options
        ).eval()


@functools.cache
def real(preset: str) -> vqtok.VQTokenizer:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return vqtok.create_model(preset).eval()


def media(model: vqtok.VQTokenizer, size: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(2, model.config.channels, *size, generator=generator) * 2 - 1


def tolerance(whole: torch.Tensor, reference: torch.Tensor) -> float:
    """Four times the fp32 error of the whole pass (and at least a few ulps of its scale)."""
    error = float((whole.double() - reference).abs().max())
    return 4 * max(error, FP32_EPS * float(reference.abs().max()))


def assert_encodes_alike(model: vqtok.VQTokenizer, x: torch.Tensor, piece) -> None:
    with torch.no_grad():
        whole = model.encoder(model._pad(x))
        tiled = model._encode_tiles(x, piece, None, lambda z: z)
        reference = copy.deepcopy(model.encoder).double()(model._pad(x.double()))
    assert tiled.shape == whole.shape
    gap = float((tiled - whole).abs().max())
    assert gap <= tolerance(whole, reference), (gap, tolerance(whole, reference))
    codes, codes_tiled = model.encode(x), model.encode_tiled(x, piece)
    assert codes_tiled.shape == codes.shape
    flipped = codes_tiled != codes
    if model.num_levels > 1:
        flipped = flipped.any(dim=1)
    # A code may differ only where the latent itself moved by float noise (a near-tie).
    moved = (tiled != whole).any(dim=1)
    assert not (flipped & ~moved).any()
    assert flipped.float().mean() <= 0.01


def assert_decodes_alike(model: vqtok.VQTokenizer, codes: torch.Tensor, piece, size) -> None:
    with torch.no_grad():
        whole = model.decode(codes, size)
        tiled = model.decode_tiled(codes, piece, size)
        z = model.quantizer.decode(codes).double()
        reference = copy.deepcopy(model.decoder).double()(z)
    assert tiled.shape == whole.shape == (codes.shape[0], model.config.channels, *size)
    reference = reference[(Ellipsis, *(slice(0, n) for n in whole.shape[2:]))]
    gap = float((tiled - whole).abs().max())
    assert gap <= tolerance(whole, reference), (gap, tolerance(whole, reference))


def sizes_and_pieces(modality: str):
    """(size, piece): an odd-or-even input size and per-axis piece sizes (None: whole axis)."""
    limits = MAX_SIZE[modality]
    size = st.tuples(*(st.integers(1, n) for n in limits))
    piece = st.tuples(*(st.one_of(st.none(), st.integers(1, 4)) for _ in limits))
    return st.tuples(size, piece)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_tiled_encode_and_decode_equal_whole_for_every_preset(preset: str) -> None:
    model = tiny(preset)

    @settings(max_examples=6, deadline=None, derandomize=True)
    @given(sizes_and_pieces(model.config.modality))
    def check(case) -> None:
        size, piece = case
        x = media(model, size)
        assert_encodes_alike(model, x, piece)
        assert_decodes_alike(model, model.encode(x), piece, size)

    check()


@pytest.mark.parametrize(
    ("preset", "size", "piece"),
    [
        ("audio-vq-16k", (9001,), (7,)),
        ("image-vq-f8", (61, 45), (3, 2)),
        ("image-rvq-f8", (37, 50), (2, None)),
        ("image-vq-f16", (70, 33), (2, 1)),
        ("video-vq-t4s8", (14, 19, 26), (2, 1, 2)),
    ],
)
def test_real_presets_tile_like_the_whole_input(preset: str, size, piece) -> None:
    model = real(preset)
    x = media(model, size)
    # The pieces must cut the input, or nothing would be tested.
    assert model.halo_ratio(size, piece) > 1
    assert_encodes_alike(model, x, piece)
    assert_decodes_alike(model, model.encode(x), piece, size)


def test_long_audio_decoded_in_chunks_has_no_seams() -> None:
    model = tiny("audio-vq-16k")
    x = media(model, (16000 * 20 + 123,))[:1]  # 20 s, not a whole number of codes
    codes = model.encode_tiled(x, 50)  # 1 s chunks
    assert torch.equal(codes, model.encode(x)) or (codes != model.encode(x)).float().mean() < 1e-3
    with torch.no_grad():
        whole = model.decode(codes, x.shape[2:])
    slabs = list(model.decode_slabs(codes, 50, x.shape[2:]))
    assert len(slabs) == 21 and all(s.shape[2] <= 50 * 320 for s in slabs)
    chunked = torch.cat(slabs, dim=2)
    assert chunked.shape == whole.shape
    # No seam: around every chunk edge the chunked signal is the whole one, to fp32 noise.
    gap = (chunked - whole).abs()[0, 0]
    assert float(gap.max()) <= 8 * FP32_EPS * float(whole.abs().max())


def test_chunked_video_keeps_the_old_entry_point() -> None:
    model = tiny("video-vq-t4s8")
    x = media(model, (41, 16, 16))
    assert torch.equal(model.encode_chunked(x, 8), model.encode_tiled(x, (2, None, None)))


def test_halo_ratio_is_one_for_whole_pieces_and_falls_with_piece_size() -> None:
    model = tiny("image-vq-f8")
    assert model.halo_ratio((100, 90), (None, None)) == 1.0
    ratios = [model.halo_ratio((1000, 1000), piece) for piece in (4, 16, 64)]
    assert ratios[0] > ratios[1] > ratios[2] > 1.0
    assert model.halo_ratio((1000, 1000), 16, "decode") > 1.0
    with pytest.raises(ValueError, match="part must be"):
        model.halo_ratio((10, 10), 1, "train")


def test_bad_pieces_are_refused() -> None:
    model = tiny("image-vq-f8")
    x = media(model, (20, 20))
    with pytest.raises(ValueError, match="piece needs 2 sizes"):
        model.encode_tiled(x, (1,))
    with pytest.raises(ValueError, match="piece sizes must be >= 1"):
        model.encode_tiled(x, (0, 1))
    with pytest.raises(ValueError, match="samples must be >= 1"):
        model.encode_tiled(x, 1, samples=0)
    assert model.encode_tiled(x[:0], 1).shape == (0, 3, 3)


def test_a_cap_on_time_bounds_the_planned_pieces_and_slabs() -> None:
    """`limit` caps pieces on top of the budget: a streaming reader or writer holds one
    capped piece; the results are still the whole input's."""
    from vqtok.models.memory import plan

    model = tiny("video-vq-t4s8")
    x = media(model, (41, 24, 24))[:1]
    budget = 1 << 40  # everything fits whole: only the cap cuts
    assert plan(model, tuple(x.shape), budget, "encode").whole
    capped = plan(model, tuple(x.shape), budget, "encode", limit=(3, None, None))
    assert capped.piece[0] <= 3
    assert_encodes_alike(model, x, capped.piece)
    codes = model.encode(x)
    slabs = list(model.decode_slabs_within(codes, budget, x.shape[2:], (2, None, None)))
    assert len(slabs) > 1 and all(s.shape[2] <= 2 * 4 for s in slabs)
    streamed = torch.cat(slabs, dim=2)
    assert torch.equal(streamed, model.decode_tiled(codes, (2, None, None), x.shape[2:]))
    assert_decodes_alike(model, codes, (2, None, None), x.shape[2:])  # and so like the whole
