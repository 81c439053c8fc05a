"""Build the speech clips in this folder (needs espeak-ng; tests only read the results).

    apt-get install -y espeak-ng && python tests/data/audio/build.py
"""

import io
import subprocess
from pathlib import Path

import soundfile
import torch
import torchaudio.functional

HERE = Path(__file__).parent
SENTENCES = {
    "hello": "Hello, this is a short test of the speech tokenizer.",
    "weather": "The weather today is cold and windy.",
}


def speak(text: str, rate: int = 16000) -> torch.Tensor:
    wav = subprocess.run(
        ["espeak-ng", "--stdout", "-s", "170", text], check=True, capture_output=True
    ).stdout
    samples, source_rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    return torchaudio.functional.resample(torch.from_numpy(samples), source_rate, rate)


def main() -> None:
    for name, text in SENTENCES.items():
        speech = speak(text).numpy()
        soundfile.write(HERE / f"{name}.wav", speech, 16000, subtype="PCM_16")
        soundfile.write(HERE / f"{name}.flac", speech, 16000)
        soundfile.write(HERE / f"{name}.ogg", speech, 16000, format="OGG", subtype="VORBIS")


if __name__ == "__main__":
    main()
