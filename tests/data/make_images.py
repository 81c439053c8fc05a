"""Regenerate tests/data/images/*.png from scikit-image's bundled sample images.

Needs scikit-image (only this script does; the tests read the PNGs):
    pip install scikit-image && python tests/data/make_images.py
Each image is center-cropped to a square and resized to 64x64 RGB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

NAMES = ("astronaut", "coffee", "chelsea", "camera")
SIZE = 64
OUT = Path(__file__).parent / "images"


def square_thumbnail(pixels: np.ndarray, size: int) -> Image.Image:
    """(H, W) or (H, W, 3) uint8 -> size x size RGB, center-cropped."""
    image = Image.fromarray(pixels).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        square_thumbnail(getattr(skimage.data, name)(), SIZE).save(
            OUT / f"{name}.png", optimize=True
        )
        print(OUT / f"{name}.png")


if __name__ == "__main__":
    main()
