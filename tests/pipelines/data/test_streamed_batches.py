"""The shard reader streams whole audio and video instead of decoding them whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader

import vqtok
from vqtok.pipelines.data.batches import MediaBatches, PreparedBatch, identity
from vqtok.pipelines.data.media import AudioSource, MediaConfig, prepare
from vqtok.pipelines.data.tario import ShardWriter
from vqtok.pipelines.jobs.encode import encode_audio

AUDIO = Path(__file__).resolve().parents[2] / "data" / "audio"


def _shard(tmp_path: Path) -> str:
    writer = ShardWriter(tmp_path / "speech-000000.tar")
    for name in ("hello.flac", "weather.flac"):
        writer.write(Path(name).stem, {"flac": (AUDIO / name).read_bytes()})
    writer.commit()
    return str(tmp_path / "speech-000000.tar")


def _batches(shard: str, config: MediaConfig, stream: bool) -> list[PreparedBatch]:
    loader = DataLoader(MediaBatches([shard], config, 16, stream=stream), batch_size=None,
                        num_workers=0, collate_fn=identity)
    return [event for event in loader if isinstance(event, PreparedBatch)]


def test_whole_audio_is_a_source_read_by_the_model_and_codes_as_decoded_whole(tmp_path):
    shard = _shard(tmp_path)
    model = vqtok.create_model("audio-vq-16k", widths=(4, 4, 4, 4, 8), latent_dim=8).eval()
    whole = MediaConfig("audio", sample_rate=16000, channels=1, window_seconds=None)
    batches = _batches(shard, whole, stream=True)
    assert [type(b.pieces) for b in batches] == [AudioSource, AudioSource]  # one per file
    for batch, name in zip(batches, ("hello.flac", "weather.flac"), strict=True):
        decoded, _ = prepare((AUDIO / name).read_bytes(), whole)
        assert batch.samples[0].meta["input_size"] == list(decoded.shape[2:])
        streamed = encode_audio(model, batch.pieces, 2**30)
        assert np.array_equal(streamed, model.encode(decoded).numpy())


def test_audio_cut_into_windows_is_decoded_and_batched(tmp_path):
    windows = MediaConfig("audio", sample_rate=16000, channels=1, window_seconds=0.5)
    batches = _batches(_shard(tmp_path), windows, stream=True)
    assert len(batches) == 1 and batches[0].pieces.shape[1:] == (1, 8000)
    assert len(batches[0].samples) == 2  # both files' windows in one batch
