"""`vqtok lm sample` as a job: media of each modality, reproducible, and refusals."""

from __future__ import annotations

import io

import pytest
import soundfile
import torch
from helpers.lm import TINY_LM

import vqtok
import vqtok.lm
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.jobs.sample import SampleConfig, sample_media


def save_pair(root, preset: str, layout: tuple[int, ...], **lm_options):
    torch.manual_seed(0)
    model = vqtok.create_model(preset)
    vqtok.save(model, root / "tokenizer")
    model = vqtok.load(root / "tokenizer")
    lm = vqtok.lm.create_lm("lm-tiny", **TINY_LM, codebook_size=model.codebook_size,
                            layout=layout, tokenizer_id=model.model_id,
                            modality=model.config.modality, **lm_options)
    vqtok.lm.save_lm(lm, root / "lm")
    return root / "lm", root / "tokenizer"


def test_audio_samples_have_the_asked_length_and_repeat_with_the_seed(tmp_path):
    lm, tokenizer = save_pair(tmp_path, "audio-vq-16k", (25,))  # half-second windows
    config = SampleConfig(num=2, seconds=1.2, seed=3)
    first = sample_media(lm, tokenizer, tmp_path / "a", config)
    again = sample_media(lm, tokenizer, tmp_path / "b", config)
    assert [p.rsplit("/", 1)[1] for p in first.files] == ["0000.wav", "0001.wav"]
    waves, rate = soundfile.read(io.BytesIO((tmp_path / "a" / "0000.wav").read_bytes()))
    assert rate == 16000 and waves.shape[0] == 19200
    for one, two in zip(first.files, again.files, strict=True):
        assert open(one, "rb").read() == open(two, "rb").read()
    assert (tmp_path / "a" / "sample-summary.json").is_file()


def test_class_conditional_image_samples_are_named_by_class(tmp_path):
    lm, tokenizer = save_pair(tmp_path, "image-vq-f8", (4, 4), num_classes=3)
    summary = sample_media(lm, tokenizer, tmp_path / "out",
                           SampleConfig(num=3, classes=[0, 2], guidance=2.0, top_k=10))
    assert summary.classes == [0, 2, 0]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "class0-0000.png", "class0-0002.png", "class2-0001.png"]


def test_video_samples_are_mp4(tmp_path):
    lm, tokenizer = save_pair(tmp_path, "video-vq-t4s8", (2, 2, 2))
    summary = sample_media(lm, tokenizer, tmp_path / "out", SampleConfig(num=1))
    assert summary.files[0].endswith("0000.mp4")
    assert open(summary.files[0], "rb").read()[4:8] == b"ftyp"


@pytest.mark.parametrize("changes,message", [
    ({"classes": [1]}, "unconditional"),
    ({"guidance": 3.0}, "needs a class-conditional"),
    ({"seconds": 2.0}, "--seconds is for audio"),
])
def test_what_an_lm_cannot_do_is_a_usage_error(tmp_path, changes, message):
    lm, tokenizer = save_pair(tmp_path, "image-vq-f8", (4, 4))
    with pytest.raises(UsageError, match=message):
        sample_media(lm, tokenizer, tmp_path / "out", SampleConfig(num=1, **changes))


def test_an_lm_of_another_tokenizer_is_refused(tmp_path):
    lm, _ = save_pair(tmp_path / "one", "image-vq-f8", (4, 4))
    torch.manual_seed(1)
    vqtok.save(vqtok.create_model("image-vq-f8"), tmp_path / "other")
    with pytest.raises(UsageError, match="pass the tokenizer it was trained on"):
        sample_media(lm, tmp_path / "other", tmp_path / "out")
