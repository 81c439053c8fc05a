"""Code files from strangers: fuzzed .vqt containers and headers, bad code arrays, wrong models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.hardening import png_bytes, time_limit, wav_bytes
from helpers.media import save_small_model, write_tar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vqtok
from vqtok.entropy import ContainerError, encode_payload, pack, uniform_prior, unpack
from vqtok.pipelines import (
    DecodeConfig,
    EncodeConfig,
    PipelineError,
    UsageError,
    decode_shards,
    encode_shards,
    export_tokens,
    pack_codes,
    read_samples,
)
from vqtok.pipelines.compression.vqt import compress_bytes, decompress_bytes
from vqtok.pipelines.config import ErrorOptions

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        preset: vqtok.load(save_small_model(preset, root / preset))
        for preset in ("image-vq-f8", "audio-vq-16k")
    }


@pytest.fixture(scope="module")
def vqt_files(models):
    image, _ = compress_bytes(models["image-vq-f8"], png_bytes(24, 16))
    audio, _ = compress_bytes(
        models["audio-vq-16k"], wav_bytes(np.sin(np.arange(3000) / 9.0) * 0.4)
    )
    return {"image-vq-f8": image, "audio-vq-16k": audio}


@pytest.mark.reliability(
    input="valid .vqt files",
    fault="hypothesis: random byte edits, truncation, insertions",
    expected="Container or ContainerError within 2 s; never another exception",
)
@given(preset=st.sampled_from(["image-vq-f8", "audio-vq-16k"]),
       edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=6),
       cut=st.none() | st.integers(0, 400), insert=st.binary(max_size=8))
@FUZZ
def test_fuzzed_vqt_bytes_parse_or_fail_cleanly(vqt_files, preset, edits, cut, insert):
    data = bytearray(vqt_files[preset])
    for position, value in edits:
        data[position % len(data)] = value
    data = bytes(data[:cut]) + insert + bytes(data[cut:]) if cut is not None else bytes(data)
    with time_limit(2):
        try:
            unpack(data)
        except ContainerError:
            pass


def _json_values():
    scalars = (
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=6)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=6,
    )


MEDIA_KEYS = {
    "image-vq-f8": ["height", "width"],
    "audio-vq-16k": ["sample_rate", "length", "model_length", "window"],
}


@pytest.mark.reliability(
    input=".vqt with valid CRCs whose JSON header fields are fuzzed (media sizes, lengths, "
    "rates, codes shape, levels, huge ints)",
    fault="hypothesis: a crafted header",
    expected="media bytes or UsageError within 10 s; no other exception, no huge allocation",
)
@given(preset=st.sampled_from(["image-vq-f8", "audio-vq-16k"]), data=st.data())
@FUZZ
def test_fuzzed_vqt_headers_decompress_or_fail_cleanly(models, vqt_files, preset, data):
    container = unpack(vqt_files[preset])
    header = json.loads(json.dumps(container.header))
    edited = data.draw(
        st.sampled_from(["codes", "levels", *(f"media.{k}" for k in MEDIA_KEYS[preset])])
    )
    big = st.integers(-2, 3) | st.sampled_from([2**31, 10**12, 48000 * 3600])
    value = data.draw(big | st.lists(big, max_size=4) | _json_values())
    if edited.startswith("media."):
        header["media"][edited.split(".", 1)[1]] = value
    else:
        header[edited] = value
    with time_limit(10):
        try:
            decompress_bytes(models[preset], pack(header, container.payload))
        except UsageError:
            pass


@pytest.mark.reliability(
    input="code arrays of float dtype or with values >= K or < 0",
    fault="entropy coding them",
    expected="ValueError naming the problem, nothing written",
)
@pytest.mark.parametrize(
    "codes",
    [np.array([[1.7, 2.2]]), np.array([[0, 1024]]), np.array([[-1, 3]], dtype=np.int32)],
    ids=["float", "at-K", "negative"],
)
def test_bad_code_arrays_are_refused_by_the_coder(codes):
    with pytest.raises(ValueError, match="integer array|must lie in"):
        encode_payload(codes, uniform_prior(1024, 1))


def _code_shard(tmp_path, model, codes: np.ndarray, name="codes", model_id=None):
    meta = {
        "model_id": model_id or model.model_id,
        "modality": "image",
        "codebook_size": model.codebook_size,
        "num_levels": 1,
        "key": "x",
        "media": {"input_size": [8, 8], "height": 8, "width": 8},
    }
    folder = tmp_path / name
    folder.mkdir()
    return write_tar(
        folder / f"{name}.tar",
        [(f"x.{ext}", data) for ext, data in pack_codes(codes, meta).items()],
    )


def _decode(model, shard, tmp_path):
    return decode_shards(model, str(shard), tmp_path / "out",
                         DecodeConfig(progress=False, errors=ErrorOptions(on_error="skip")))


@pytest.mark.reliability(
    input="code shard with codes >= K (uint16 5000 for K=1024)",
    fault="decode",
    expected="counted 'model' skip, no media written",
)
def test_decode_of_codes_at_or_above_k_is_a_counted_skip(models, tmp_path, observed):
    model = models["image-vq-f8"]
    summary = _decode(
        model, _code_shard(tmp_path, model, np.full((1, 1, 1), 5000, dtype=np.uint16)), tmp_path
    )
    assert (summary.samples, summary.skipped) == (0, 1)
    observed(open(summary.error_logs[0]).read().strip()[:160])


@pytest.mark.reliability(input="code shard whose .npy holds float codes (1.9)", fault="decode",
                         expected="refused as a bad sample (not truncated to code 1)")
def test_decode_refuses_float_codes(models, tmp_path):
    model = models["image-vq-f8"]
    summary = _decode(model, _code_shard(tmp_path, model, np.full((1, 1, 1), 1.9)), tmp_path)
    assert summary.skipped == 1


@pytest.mark.reliability(input="code shard with codes >= K", fault="export-tokens with --bos/--eos",
                         expected="refused: such a token would collide with the BOS/EOS ids")
def test_export_refuses_codes_at_or_above_k(models, tmp_path):
    model = models["image-vq-f8"]
    shard = _code_shard(tmp_path, model, np.full((1, 1, 1), model.codebook_size, dtype=np.uint16))
    with pytest.raises(PipelineError, match=r"codes must lie in \[0, 1024\)"):
        export_tokens(str(shard), tmp_path / "tokens", bos=True, eos=True)


@pytest.mark.reliability(
    input="code shard made by another model (model_id differs)",
    fault="decode with this checkpoint",
    expected="UsageError naming both model ids; no output marked done",
)
def test_decode_with_the_wrong_model_is_refused(models, tmp_path, observed):
    model = models["image-vq-f8"]
    shard = _code_shard(
        tmp_path, model, np.zeros((1, 1, 1), dtype=np.uint16), model_id="0123456789abcdef"
    )
    with pytest.raises(UsageError, match="0123456789abcdef") as error:
        _decode(model, shard, tmp_path)
    assert not list((tmp_path / "out").glob("*.stats.json"))
    observed(str(error.value).split(": ", 1)[1])


@pytest.mark.reliability(
    input="two code shards from different models",
    fault="one export-tokens run",
    expected="UsageError; no .bin left behind",
)
def test_export_of_mixed_models_is_refused(models, tmp_path, observed):
    model = models["image-vq-f8"]
    first = _code_shard(tmp_path, model, np.zeros((1, 1, 1), dtype=np.uint16), name="a")
    second = _code_shard(
        tmp_path, model, np.zeros((1, 1, 1), dtype=np.uint16), name="b", model_id="ffffffffffffffff"
    )
    with pytest.raises(UsageError, match="export each model's codes separately") as error:
        export_tokens([str(first), str(second)], tmp_path / "tokens")
    assert not (tmp_path / "tokens.bin").exists()
    observed(str(error.value))


@pytest.mark.reliability(
    input="media shard of a key with '../' in its name",
    fault="encode then decode --format files",
    expected="the sample is a counted skip at read; nothing written outside the output folder",
)
def test_traversal_keys_never_reach_the_outputs(models, tmp_path, observed):
    (tmp_path / "in").mkdir()
    shard = write_tar(
        tmp_path / "in" / "s.tar",
        [("../../escape.png", png_bytes(8, 8)), ("ok.png", png_bytes(8, 8))],
    )
    checkpoint = save_small_model("image-vq-f8", tmp_path / "model")
    summary = encode_shards(
        checkpoint,
        str(shard),
        tmp_path / "codes",
        EncodeConfig(workers=0, progress=False, errors=ErrorOptions(on_error="skip")),
    )
    assert [s.key for s in read_samples(str(tmp_path / "codes" / "s.tar"))] == ["ok"]
    decode_shards(
        checkpoint,
        str(tmp_path / "codes"),
        tmp_path / "media",
        DecodeConfig(output_format="files", progress=False),
    )
    outside = [p for p in tmp_path.rglob("escape*")]
    assert summary.skipped == 1 and not outside
    observed(
        f"written {summary.samples}, skipped {summary.skipped}; no file outside the output folders"
    )


@pytest.mark.reliability(
    input="checkpoint whose config.json is 2 MiB (valid JSON padded with spaces)",
    fault="unbounded metadata in a checkpoint",
    expected="CheckpointError before parsing it",
)
def test_oversized_checkpoint_config_is_refused(tmp_path):
    checkpoint = save_small_model("image-vq-f8", tmp_path / "model")
    config = checkpoint / "config.json"
    config.write_text(config.read_text() + " " * (2 << 20))
    with pytest.raises(vqtok.CheckpointError):
        vqtok.load(checkpoint)
