"""Small real media, tar shards and tiny checkpoints for the pipeline tests.

The fixtures built from these (`image_shards`, `checkpoints`, ...) live in tests/conftest.py.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import av
from PIL import Image

import vqtok

DATA = Path(__file__).parents[1] / "data"
# Narrow versions of the presets: same strides, layout and quantizers, fast on a CPU.
SMALL = {
    "image-vq-f8": {"widths": (8, 8, 8, 8)},
    "image-rvq-f8": {"widths": (8, 8, 8, 8)},
    "audio-vq-16k": {"widths": (4, 4, 8, 8, 8), "blocks_per_stage": 1},
    "video-vq-t4s8": {"widths": (4, 8, 8, 8)},
}


def save_small_model(preset: str, path: Path) -> Path:
    return vqtok.save(vqtok.create_model(preset, **SMALL[preset]), path)


def photo_frames(count: int) -> list[Image.Image]:
    """Real photographic frames (of the astronaut photo) taken from the test video."""
    with av.open(str(DATA / "video" / "zoom.mp4")) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    return frames[:: max(1, len(frames) // count)][:count]


def write_images(folder: Path) -> list[str]:
    """Five photos in mixed formats and sizes, with WebDataset-unfriendly names.

    Returns the names.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = ["a.b.c.png", "a_b_c.jpg", "photo.webp", "photo.png", "sub/deep.name.jpeg"]
    for name, frame in zip(names, photo_frames(len(names)), strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image = frame if "photo" not in name else frame.crop((0, 0, 40, 56))
        image.save(folder / name)
    return names


def tar_members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A plain tar with the given (name, bytes) members, in order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def truncate_in_last_member(path: Path) -> Path:
    """Cut the tar in the middle of its last member's data, as an interrupted copy would."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    path.write_bytes(path.read_bytes()[: last.offset_data + last.size // 2])
    return path
