"""Build the short test videos in this folder from scikit-image's public-domain astronaut photo.

    pip install --target /tmp/skimg scikit-image
    PYTHONPATH=/tmp/skimg python tests/data/video/build.py

`pan.mp4`: 24 frames, 64x64, 8 fps, a left-to-right pan; `zoom.mp4`: 17 frames, 96x64
(W x H), a slow zoom into the face. H.264 through PyAV.
"""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from skimage import data

HERE = Path(__file__).parent


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


def write_mp4(path: Path, frames: list[np.ndarray], fps: int = 8) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "28"}
        for pixels in frames:
            container.mux(
                stream.encode(
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                )
            )
        container.mux(stream.encode())


def main() -> None:
    photo = Image.fromarray(data.astronaut())
    write_mp4(HERE / "pan.mp4", frames_pan(photo, 24, (64, 64)))
    write_mp4(HERE / "zoom.mp4", frames_zoom(photo, 17, (96, 64)))


if __name__ == "__main__":
    main()
