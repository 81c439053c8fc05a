"""Small real training data and tiny configs shared by the test_train* modules."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vqtok.pipelines import make_shards
from vqtok.pipelines.training import TrainConfig

DATA = Path(__file__).parents[1] / "data"
TINY_IMAGE_MODEL = {"widths": [8, 8, 8, 8], "quantizer_options": {"codebook_size": 64}}


def thumbnails(folder: Path, size: int = 32) -> list[Path]:
    """The test photos scaled down to size x size PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for source in sorted((DATA / "images").glob("*.png")):
        with Image.open(source) as image:
            path = folder / source.name
            image.convert("RGB").resize((size, size), Image.BICUBIC).save(path)
            paths.append(path)
    return paths


def thumbnail_shards(root: Path, size: int = 32, per_shard: int = 2) -> Path:
    thumbnails(root / "src", size)
    make_shards(root / "src", root / "shards", "image", maxcount=per_shard)
    return root / "shards"


def tiny_config(shards: Path, out: Path, **changes) -> TrainConfig:
    """A few-step image run on 32x32 crops that finishes in about a second."""
    settings = dict(model="image-vq-f8", model_options=TINY_IMAGE_MODEL, train=[str(shards)],
                    out=str(out), crop=[32, 32], batch_size=2, shuffle_buffer=3, steps=6,
                    warmup_steps=2, log_every=1, val_every=3, checkpoint_every=3, tensorboard=False)
    settings.update(changes)
    return TrainConfig(**settings)
