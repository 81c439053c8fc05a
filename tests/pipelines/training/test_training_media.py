"""What the trainer asks the media decoder for: the model's channels, and a downmix only
when the run asks for one."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.hardening import wav_bytes

import vqtok
from vqtok.pipelines.data.media import prepare
from vqtok.pipelines.training.data import media_for


def _stereo(seconds: float = 0.5, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * 220 * t)
    return wav_bytes(np.stack([left, -left], axis=1).astype(np.float32), rate)


def test_stereo_for_a_mono_model_is_refused_unless_the_run_mixes_down():
    config = vqtok.create_model("audio-vq-16k").config
    with pytest.raises(ValueError, match="--mono"):
        prepare(_stereo(), media_for(config, [4000]))
    pieces, _ = prepare(_stereo(), media_for(config, [4000], mono=True))
    assert pieces.shape[1:] == (1, 4000)
    assert pieces.abs().max() < 1e-6  # the channels cancel: the downmix says so, on request
