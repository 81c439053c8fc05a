"""The media shipped with a source checkout (``demo/data``): the demo's and the benchmarks'.

Kept in the data wing so that every wing above it (bench, demo) finds the same files.
"""

from __future__ import annotations

from pathlib import Path

from vqtok.pipelines.data.media import EXTENSIONS
from vqtok.pipelines.errors import UsageError

DATA_DIR = Path(__file__).resolve().parents[2] / "demo" / "data"
DATA_FOLDERS = {"image": "images", "audio": "audio", "video": "video"}


def builtin_files(modality: str) -> list[Path]:
    """The built-in files of ``modality``, sorted.

    Args:
        modality: "image", "audio" or "video".

    Returns:
        Their paths.

    Raises:
        UsageError: When the checkout has none (an installed wheel ships no media).
    """
    folder = DATA_DIR / DATA_FOLDERS[modality]
    files = sorted(p for p in folder.glob("*") if p.suffix[1:].lower() in EXTENSIONS[modality])
    if not files:
        raise UsageError(f"no built-in {modality} files in {folder}; the demo and benchmarks "
                         "need a source checkout of vqtok (pip install -e .)")
    return files
