"""The error policy: bad samples and truncated tars are skipped and logged, or stop the job."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from helpers.media import photo_frames, truncate_in_last_member, write_tar

import vqtok
from vqtok.pipelines import (
    DecodeConfig,
    EncodeConfig,
    PipelineError,
    UsageError,
    decode_shards,
    encode_shards,
    pack_codes,
    read_samples,
)
from vqtok.pipelines.config import ErrorOptions


def _png(index: int) -> bytes:
    buffer = io.BytesIO()
    photo_frames(4)[index].save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def bad_shards(tmp_path):
    """Shard 0: 2 good images (one labelled), a corrupt one, one without media.

    Shard 1: truncated.
    """
    folder = tmp_path / "in"
    folder.mkdir()
    write_tar(folder / "part-0.tar", [
        ("ok1.png", _png(0)), ("ok1.cls", b"7"), ("broken.png", b"\x89PNG not really"),
        ("textonly.txt", b"hello"), ("ok2.png", _png(1)),
    ])
    truncate_in_last_member(
        write_tar(folder / "part-1.tar", [("ok3.png", _png(2)), ("ok4.png", _png(3))])
    )
    return folder


def _config(**errors) -> EncodeConfig:
    return EncodeConfig(workers=0, progress=False, errors=ErrorOptions(**errors))


def test_skip_logs_every_bad_sample(bad_shards, checkpoints, tmp_path):
    out = tmp_path / "codes"
    summary = encode_shards(
        checkpoints["image-vq-f8"], str(bad_shards), out, _config(on_error="skip")
    )
    assert summary.samples == 3 and summary.skipped == 3
    logged = [json.loads(line) for log in summary.error_logs for line in open(log)]
    assert {(e["shard"], e["key"], e["stage"]) for e in logged} == {
        ("part-0", "broken", "decode"), ("part-0", "textonly", "keys"), ("part-1", "ok4", "tar")}
    written = {s.key: s.fields for tar in sorted(out.glob("*.tar")) for s in read_samples(str(tar))}
    assert list(written) == ["ok1", "ok2", "ok3"]
    assert written["ok1"]["cls"] == b"7"  # labels pass through
    stats = json.loads((out / "part-0.stats.json").read_text())
    assert stats["count"] == 2 and stats["skipped"] == 2


def test_raise_stops_at_the_first_bad_sample(bad_shards, checkpoints, tmp_path):
    with pytest.raises(PipelineError, match="'broken' failed at decode"):
        encode_shards(checkpoints["image-vq-f8"], str(bad_shards), tmp_path / "codes", _config())
    assert not list((tmp_path / "codes").glob("*.partial"))
    assert not list((tmp_path / "codes").glob("*.stats.json"))


def test_max_error_rate_turns_skips_into_failure(bad_shards, checkpoints, tmp_path):
    with pytest.raises(PipelineError, match="3 of 6 samples failed"):
        encode_shards(checkpoints["image-vq-f8"], str(bad_shards), tmp_path / "codes",
                      _config(on_error="skip", max_error_rate=0.25))


def test_existing_output_needs_resume(bad_shards, checkpoints, tmp_path):
    config = _config(on_error="skip")
    encode_shards(checkpoints["image-vq-f8"], str(bad_shards), tmp_path / "codes", config)
    with pytest.raises(UsageError, match="--resume"):
        encode_shards(checkpoints["image-vq-f8"], str(bad_shards), tmp_path / "codes", config)


def test_decode_never_writes_outside_out_dir(checkpoints, tmp_path):
    model = vqtok.load(checkpoints["image-vq-f8"])
    meta = {"model_id": model.model_id, "modality": "image",
            "media": {"input_size": [8, 8], "height": 8, "width": 8}}
    fields = pack_codes(np.zeros((1, 1, 1), dtype=np.uint16), meta)
    shard = write_tar(
        tmp_path / "codes.tar", [(f"up/../../evil.{ext}", data) for ext, data in fields.items()]
    )
    out = tmp_path / "out"
    summary = decode_shards(
        model,
        str(shard),
        out,
        DecodeConfig(output_format="files", progress=False, errors=ErrorOptions(on_error="skip")),
    )
    assert summary.skipped == 1 and summary.samples == 0
    assert not (tmp_path / "evil.png").exists()


def test_model_failure_skips_only_the_failing_samples(image_shards, checkpoints, tmp_path):
    model = vqtok.load(checkpoints["image-vq-f8"])
    encode = model.encode

    def encode_failing_on_narrow_images(x):
        if x.shape[-1] == 40:
            raise RuntimeError("simulated out of memory")
        return encode(x)

    model.encode = encode_failing_on_narrow_images
    summary = encode_shards(model, str(image_shards), tmp_path / "codes", _config(on_error="skip"))
    logged = [json.loads(line) for log in summary.error_logs for line in open(log)]
    assert sorted((e["key"], e["stage"]) for e in logged) == [
        ("photo", "model"),
        ("photo_2", "model"),
    ]
    assert summary.samples == 3


def test_sample_errors_carry_no_object_addresses_so_logs_repeat():
    from vqtok.pipelines.data.media import MediaConfig, prepare
    from vqtok.pipelines.errors import SampleError

    messages = []
    for _ in range(2):
        with pytest.raises(Exception) as raised:
            prepare(b"not an image", MediaConfig("image"))
        messages.append(SampleError("s.tar", "k", "decode", str(raised.value)).message)
    assert (
        messages[0] == messages[1]
        and "0x" not in messages[0]
        and "cannot identify image" in messages[0]
    )
