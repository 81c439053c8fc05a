"""make_shards, tar reading and shard placement across ranks and workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers.media import write_images, write_tar
from torch.utils.data import DataLoader

from vqtok.pipelines import (
    MediaBatches,
    MediaConfig,
    Placement,
    SampleError,
    UsageError,
    make_shards,
    read_samples,
)
from vqtok.pipelines.data.batches import PreparedBatch, ShardEnd, identity
from vqtok.pipelines.data.shards import safe_keys
from vqtok.pipelines.data.sources import expand_shards


def test_make_shards_gives_unique_dot_free_adjacent_keys(tmp_path):
    names = write_images(tmp_path / "src")
    (tmp_path / "src" / "notes.txt").write_text("not an image")
    summary = make_shards(tmp_path / "src", tmp_path / "out", "image", maxcount=2)
    assert summary.counts == [2, 2, 1] and summary.samples == len(names)
    assert summary.ignored == ["notes.txt"]
    samples = [s for shard in summary.shards for s in read_samples(shard)]
    keys = [s.key for s in samples]
    assert len(set(keys)) == len(names)
    assert all("." not in key and "/" not in key for key in keys)
    manifest = json.loads((tmp_path / "out" / "shards.json").read_text())
    assert sorted(manifest["sources"].values()) == sorted(names)
    for sample in samples:  # each key holds exactly the bytes of its source file
        source = tmp_path / "src" / manifest["sources"][sample.key]
        assert list(sample.fields.values()) == [source.read_bytes()]


def test_safe_keys_resolve_collisions():
    keys = safe_keys([Path("a.b.png"), Path("a_b.jpg"), Path("x/y.z.wav"), Path("a_b_2.png")])
    assert keys == ["a_b", "a_b_2", "x_y_z", "a_b_2_2"]


def test_labels_become_cls_and_json(tmp_path):
    write_images(tmp_path / "src")
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"photo.png": 3, "a_b_c": {"caption": "an astronaut"}}))
    summary = make_shards(tmp_path / "src", tmp_path / "out", "image", labels=labels)
    fields = {s.key: s.fields for s in read_samples(summary.shards[0])}
    assert fields["photo"]["cls"] == b"3"
    assert json.loads(fields["a_b_c_2"]["json"]) == {"caption": "an astronaut"}
    assert set(fields["photo_2"]) == {"webp"}


def test_make_shards_rejects_bad_input(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        make_shards(tmp_path / "missing", tmp_path / "out", "image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no audio files"):
        make_shards(tmp_path / "empty", tmp_path / "out", "audio")


def test_reader_reports_bad_members_and_truncation(tmp_path):
    tar = write_tar(
        tmp_path / "bad.tar",
        [
            ("k1.png", b"1"),
            ("k1.cls", b"0"),
            ("k2.png", b"2"),
            ("k2.png", b"x"),
            ("k1.jpg", b"again"),
            ("noext", b"?"),
            ("k3.png", b"3" * 5000),
            ("k4.png", b"4" * 5000),
        ],
    )
    events = list(read_samples(str(tar)))
    assert [e.key for e in events if not isinstance(e, SampleError)] == ["k1", "k2", "k3", "k4"]
    errors = [(e.key, e.stage) for e in events if isinstance(e, SampleError)]
    assert errors == [("k2", "keys"), ("k1", "keys"), ("noext", "keys")]
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(tar.read_bytes()[:-6000])
    events = list(read_samples(str(truncated)))
    assert isinstance(events[-1], SampleError) and events[-1].stage == "tar"
    assert "k4" not in [e.key for e in events if not isinstance(e, SampleError)]


def test_expand_brace_pattern_and_pipe(tmp_path):
    for i in range(3):
        write_tar(tmp_path / f"data-{i:03d}.tar", [(f"s{i}.png", b"x")])
    urls = expand_shards(str(tmp_path / "data-{000..002}.tar"))
    assert urls == [str(tmp_path / f"data-{i:03d}.tar") for i in range(3)]
    assert expand_shards(str(tmp_path)) == urls
    assert expand_shards(str(tmp_path / "data-*.tar")) == urls
    with pytest.raises(UsageError, match="no shard matches"):
        expand_shards(str(tmp_path / "other-*.tar"))
    piped = list(read_samples(f"pipe:cat {urls[1]}"))
    assert [s.key for s in piped] == ["s1"]
    with pytest.raises(UsageError, match="not found"):
        expand_shards(str(tmp_path / "data-{003..004}.tar"))


def test_placement_from_env():
    assert Placement.from_env({"RANK": "1", "WORLD_SIZE": "2"}) == Placement(1, 2)
    assert Placement.from_env({"SLURM_PROCID": "3", "SLURM_NTASKS": "4"}) == Placement(3, 4)
    assert Placement.from_env({}) == Placement(0, 1)
    with pytest.raises(UsageError):
        Placement.from_env({"RANK": "2", "WORLD_SIZE": "2"})


def _keys_read(shards: list[str], workers: int) -> list[str]:
    dataset = MediaBatches(shards, MediaConfig("image"), batch_pieces=2)
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=identity)
    keys, ends = [], []
    for event in loader:
        if isinstance(event, PreparedBatch):
            keys += [s.key for s in event.samples]
            assert (
                event.pieces.shape[0] == len(event.samples) and event.pieces.dtype == torch.float32
            )
        elif isinstance(event, ShardEnd):
            ends.append(event.shard)
    assert sorted(ends) == sorted(shards)
    return keys


def test_ranks_and_workers_read_every_sample_once(tmp_path):
    write_images(tmp_path / "src")
    write_images(tmp_path / "src" / "more")
    summary = make_shards(tmp_path / "src", tmp_path / "out", "image", maxcount=2)
    all_keys = [s.key for shard in summary.shards for s in read_samples(shard)]
    read = []
    for rank in range(2):
        mine = Placement(rank, 2).select(summary.shards)
        read += _keys_read(mine, workers=2)
    assert sorted(read) == sorted(all_keys) and len(read) == 10


def test_too_few_shards_is_a_clear_error(tmp_path):
    shard = str(write_tar(tmp_path / "one.tar", [("a.png", b"x")]))
    with pytest.raises(UsageError, match="cannot feed 2 ranks"):
        Placement(0, 2).select([shard])
    loader = DataLoader(MediaBatches([shard], MediaConfig("image")), batch_size=None, num_workers=2,
                        collate_fn=identity)
    with pytest.raises(Exception, match="cannot feed 2 DataLoader workers"):
        list(loader)


def test_progress_prints_plain_lines_off_a_terminal():
    import io

    from vqtok.pipelines.progress import ShardProgress

    stream = io.StringIO()
    with ShardProgress(3, stream=stream, interval=0.0) as progress:
        progress.advance(samples=5, errors=1, shards=1)
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("encode: 1/3 shards, 5 samples") and "1 errors" in lines[0]
