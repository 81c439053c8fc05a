"""Shard reading and writing: truncated, disordered, hostile and random tars."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from helpers.hardening import png_bytes, split_events, time_limit
from helpers.media import save_small_model, write_tar
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vqtok.pipelines import EncodeConfig, encode_shards, read_samples
from vqtok.pipelines.config import ErrorOptions
from vqtok.pipelines.data.shards import safe_keys
from vqtok.pipelines.data.tario import Sample, ShardWriter, key_problem
from vqtok.pipelines.errors import SampleError

MEMBERS = [("k1.png", b"1" * 700), ("k1.cls", b"3"), ("k2.png", b"2" * 1500), ("k2.json", b"{}"),
           ("k3.png", b"3" * 300)]
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def image_checkpoint(tmp_path_factory):
    return save_small_model("image-vq-f8", tmp_path_factory.mktemp("model") / "image")


def _tar_with(path: Path, add) -> Path:
    with tarfile.open(path, "w") as tar:
        add(tar)
    return path


def _add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


@pytest.mark.reliability(
    input="tar shard of 3 samples",
    fault="truncated at every 512-byte block and mid-block",
    expected="whole samples before the cut kept byte-exact, then one 'tar' error",
)
def test_truncation_anywhere_keeps_a_prefix_and_reports_the_rest(tmp_path, observed):
    whole = write_tar(tmp_path / "whole.tar", MEMBERS).read_bytes()
    original, _ = split_events(str(tmp_path / "whole.tar"))
    cut = tmp_path / "cut.tar"
    losses = set()
    for size in sorted({*range(0, len(whole), 512), *range(256, len(whole), 512)}):
        cut.write_bytes(whole[:size])
        samples, errors = split_events(str(cut))
        assert [s.fields for s in samples] == [s.fields for s in original[: len(samples)]]
        if len(samples) < len(original):
            assert [e.stage for e in errors] == ["tar"], size
        losses.add(len(original) - len(samples))
    observed(
        f"{len(range(0, len(whole), 512)) * 2} cuts; samples lost per cut: {sorted(losses)}, "
        "each reported"
    )


@pytest.mark.reliability(
    input="shard whose sample files are not adjacent (a.png, b.png, a.cls)",
    fault="WebDataset key order broken",
    expected="first run kept, the stray a.cls counted as a skip",
)
def test_non_adjacent_sample_files_are_counted(image_checkpoint, tmp_path, observed):
    (tmp_path / "in").mkdir()
    shard = write_tar(
        tmp_path / "in" / "s.tar",
        [("a.png", png_bytes(16, 16)), ("b.png", png_bytes(16, 16, 1)), ("a.cls", b"5")],
    )
    summary = encode_shards(
        image_checkpoint,
        str(shard),
        tmp_path / "out",
        EncodeConfig(workers=0, progress=False, errors=ErrorOptions(on_error="skip")),
    )
    logged = [json.loads(line) for line in open(summary.error_logs[0])]
    assert (summary.samples, summary.skipped) == (2, 1)
    assert [(e["key"], e["stage"]) for e in logged] == [("a", "keys")]
    observed(f"written {summary.samples}, skipped {summary.skipped}: {logged[0]['message']}")


@pytest.mark.reliability(
    input="tar members named ../x, /abs/x, a/../../x, .png (no key)",
    fault="path traversal / empty key",
    expected="each refused as a 'keys' error, never yielded",
)
def test_unsafe_member_names_are_refused(tmp_path, observed):
    shard = write_tar(
        tmp_path / "s.tar",
        [
            ("../up.png", b"x"),
            ("/etc/abs.png", b"x"),
            ("a/../../x.png", b"x"),
            (".png", b"x"),
            ("ok.png", b"fine"),
        ],
    )
    samples, errors = split_events(str(shard))
    assert [s.key for s in samples] == ["ok"]
    assert len(errors) == 4 and all(e.stage == "keys" for e in errors)
    observed("; ".join(sorted({e.message.split(": ", 1)[1] for e in errors})))


@pytest.mark.reliability(
    input="tar with a symlink, a hard link and a directory member",
    fault="links pointing outside the shard",
    expected="links refused as 'keys' errors, directories ignored",
)
def test_links_are_refused(tmp_path, observed):
    def add(tar):
        info = tarfile.TarInfo("folder")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        _add_link(tar, "evil.png", "/etc/passwd", tarfile.SYMTYPE)
        _add_link(tar, "hard.png", "/etc/shadow", tarfile.LNKTYPE)
        data = png_bytes(2, 2)
        member = tarfile.TarInfo("ok.png")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))

    samples, errors = split_events(str(_tar_with(tmp_path / "links.tar", add)))
    assert [s.key for s in samples] == ["ok"]
    assert sorted(e.key for e in errors) == ["evil", "hard"]
    observed(errors[0].message)


@pytest.mark.reliability(
    input="member over the size limit; .json metadata over 1 MiB",
    fault="memory bomb in a shard",
    expected="refused unread as a 'keys' error",
)
def test_oversized_members_are_refused_unread(tmp_path, observed):
    shard = write_tar(
        tmp_path / "big.tar",
        [("a.png", b"p" * 5000), ("a.json", b" " * ((1 << 20) + 1)), ("b.png", b"p" * 10)],
    )
    samples, errors = split_events(str(shard), max_member_bytes=4096)
    assert [s.key for s in samples] == ["b"]
    assert [e.key for e in errors] == ["a", "a"]
    observed("; ".join(e.message for e in errors))


@pytest.mark.reliability(
    input="sample keys with '..', '/', absolute prefix",
    fault="writing a shard",
    expected="ShardWriter raises ValueError; safe_keys never makes such keys",
)
@given(
    names=st.lists(
        st.lists(
            st.text(st.sampled_from("ab.\\_- "), min_size=1, max_size=6).filter(
                lambda part: part not in (".", "..")
            ),
            min_size=1,
            max_size=3,
        ).map("/".join),
        min_size=1,
        max_size=8,
    )
)
@FUZZ
def test_writer_refuses_unsafe_keys_and_safe_keys_are_safe(tmp_path, names):
    keys = safe_keys([Path(name) for name in names])
    assert len(set(keys)) == len(keys)
    assert all(not key_problem(k) and "." not in k and "/" not in k for k in keys)
    writer = ShardWriter(tmp_path / "w.tar")
    for bad in ("../x", "/abs", "a/../../b"):
        with pytest.raises(ValueError, match="unsafe"):
            writer.write(bad, {"png": b"x"})
    writer.abort()


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buffer = bytearray(data)
    for position, value in edits:
        buffer[position % len(buffer)] = value
    return bytes(buffer[:cut] if cut is not None else buffer)


@pytest.fixture(scope="module")
def seed_tars(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("seeds")
    plain = write_tar(root / "plain.tar", MEMBERS).read_bytes()
    return {"tar": plain, "tar.gz": gzip.compress(plain, mtime=0)}


@pytest.mark.reliability(
    input="valid tar and tar.gz shards",
    fault="hypothesis: random byte edits and truncation",
    expected="only samples and SampleErrors, within 5 s; never an exception",
)
@given(kind=st.sampled_from(["tar", "tar.gz"]),
       edits=st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=12),
       cut=st.none() | st.integers(0, 5000))
@FUZZ
def test_fuzzed_tars_never_crash_or_hang(seed_tars, tmp_path, kind, edits, cut):
    path = tmp_path / f"fuzz.{kind}"
    path.write_bytes(_mutate(seed_tars[kind], edits, cut))
    with time_limit(5):
        events = list(read_samples(str(path)))
    assert all(isinstance(e, Sample | SampleError) for e in events)


@pytest.mark.parametrize("cut", range(1, 24))
def test_a_tar_gz_cut_inside_its_gzip_header_is_one_tar_error(seed_tars, tmp_path, cut):
    """Found by the fuzzer above: CPython's tarfile raised TypeError for a 3-byte .tar.gz."""
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(seed_tars["tar.gz"][:cut])
    events = list(read_samples(str(path)))
    assert [type(e) for e in events] == [SampleError] and events[0].stage == "tar"


@pytest.mark.reliability(input="random bytes named .tar", fault="hypothesis: not a tar at all",
                         expected="one 'tar' SampleError (or nothing for an empty file)")
@given(data=st.binary(max_size=3000))
@FUZZ
def test_random_bytes_are_one_clear_tar_error(tmp_path, data):
    path = tmp_path / "random.tar"
    path.write_bytes(data)
    with time_limit(5):
        samples, errors = split_events(str(path))
    assert all(e.stage in ("tar", "keys") for e in errors)
    assert len([e for e in errors if e.stage == "tar"]) <= 1
